"""Distillation losses, looked up by name from a small registry (as TextBrewer does).

Every loss takes a `LossInputs` and returns a scalar tensor. A training objective is data: a weighted sum of
named losses, params' `student.objective.<kd setting>`, e.g. on: {ce: 0.5, logit_mse: 0.5} and off: {ce: 1.0}. An
entry is a weight, or a mapping of the weight and the loss's own options ({weight: 0.5, temperature: 4.0} for
logit_kl), so an option exists only where a loss reads it.

Each loss is one `LossSpec` (its name, function, what it reads, its options), registered by decorating the
function with @register_loss; a name registered twice is refused. What the losses of an objective read is all a
cell provides: teacher logits from the cache, hidden states or attention maps from a teacher run beside the
student, and nothing for an objective that reads neither (no teacher forward, no attention maps).

    total loss = sum over entries of weight x loss(student, batch, teacher outputs, options)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from mkd.core.errors import ConfigError


@dataclass
class LossInputs:
    student_logits: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    temperature: float = 1.0
    # Per student layer, in layer-map order: its hidden states (batch, tokens, width) and the matched teacher
    # layer's; its attention probabilities (batch, heads, tokens, tokens) and the matched teacher layer's.
    student_hidden: Sequence[torch.Tensor] | None = None
    teacher_hidden: Sequence[torch.Tensor] | None = None
    student_attentions: Sequence[torch.Tensor] | None = None
    teacher_attentions: Sequence[torch.Tensor] | None = None
    attention_mask: torch.Tensor | None = None


# What a loss may read beyond the student's logits and the labels; the cell provides exactly the union of these
# over an objective's losses.
READS = ("teacher_logits", "hidden", "attentions")


@dataclass(frozen=True)
class LossSpec:
    """One registered loss: `fn(LossInputs) -> scalar`, what it reads (a subset of READS), and its options'
    defaults (LossInputs fields it reads, set per objective entry, e.g. logit_kl's temperature)."""

    name: str
    fn: Callable[[LossInputs], torch.Tensor]
    reads: frozenset[str] = frozenset()
    options: Mapping[str, float] = field(default_factory=dict)

    @property
    def distils(self) -> bool:
        """Reads something of the teacher: a KD term."""
        return bool(self.reads)


LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, *, reads: Sequence[str] = (), options: Mapping[str, float] | None = None):
    """Register the decorated function as the loss `name`, reading `reads` (of READS), with `options`' defaults."""
    unknown = sorted(set(reads) - set(READS))
    if unknown:
        raise ConfigError(f"loss {name!r} reads {unknown}; a loss may read {', '.join(READS)}")
    bad = sorted(set(options or {}) - {f.name for f in dataclasses.fields(LossInputs)})
    if bad:
        raise ConfigError(f"loss {name!r}: option {bad[0]!r} is not a LossInputs field")

    def deco(fn):
        if name in LOSSES:
            raise ConfigError(f"loss {name!r} is registered twice ({LOSSES[name].fn.__module__}.{LOSSES[name].fn.__name__} "
                              f"and {fn.__module__}.{fn.__name__}); give the new one another name")
        LOSSES[name] = LossSpec(name, fn, frozenset(reads), dict(options or {}))
        return fn

    return deco


def reads_of(names) -> frozenset[str]:
    """What the losses `names` read together."""
    return frozenset().union(*(LOSSES[n].reads for n in names))


@register_loss("ce")
def cross_entropy(x: LossInputs) -> torch.Tensor:
    """Labels only: KD off."""
    return F.cross_entropy(x.student_logits, x.labels)


@register_loss("logit_mse", reads=["teacher_logits"])
def logit_mse(x: LossInputs) -> torch.Tensor:
    """MSE between student and teacher logits: the paper's choice (as a later paper by the authors reports)."""
    return F.mse_loss(x.student_logits, x.teacher_logits)


@register_loss("logit_kl", reads=["teacher_logits"], options={"temperature": 2.0})
def logit_kl(x: LossInputs) -> torch.Tensor:
    """Hinton et al.: KL(teacher || student) at temperature T, scaled by T^2 to keep gradient size."""
    t = x.temperature
    log_p_student = F.log_softmax(x.student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(x.teacher_logits / t, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * t * t


@register_loss("hidden_mse", reads=["hidden"])
def hidden_mse(x: LossInputs) -> torch.Tensor:
    """MSE of layer-matched hidden states (student layer i vs teacher layer map[i]), padding masked out."""
    mask = x.attention_mask.unsqueeze(-1).to(x.student_hidden[0].dtype)
    total = 0.0
    for s, t in zip(x.student_hidden, x.teacher_hidden):
        total = total + (((s - t) ** 2) * mask).sum() / (mask.sum() * s.shape[-1])
    return total / len(x.student_hidden)


@register_loss("hidden_cos", reads=["hidden"])
def hidden_cos(x: LossInputs) -> torch.Tensor:
    """DistilBERT's cosine loss: 1 - cos(student, teacher) of layer-matched hidden states, per token, padding
    masked out, averaged over tokens and mapped layers (0 when aligned, 2 when opposed; scale-free, unlike MSE)."""
    mask = x.attention_mask.to(x.student_hidden[0].dtype)
    total = 0.0
    for s, t in zip(x.student_hidden, x.teacher_hidden):
        total = total + ((1 - F.cosine_similarity(s, t, dim=-1)) * mask).sum() / mask.sum()
    return total / len(x.student_hidden)


def _attention_pairs(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(batch, 1, tokens, tokens): 1 where query and key are both real tokens."""
    m = mask.to(like.dtype)
    return (m[:, None, :, None] * m[:, None, None, :])


@register_loss("attention_mse", reads=["attentions"])
def attention_mse(x: LossInputs) -> torch.Tensor:
    """TinyBERT's attention transfer: MSE of layer-matched attention maps (student layer i vs teacher layer map[i],
    head by head), over (query, key) pairs of real tokens, averaged over heads and mapped layers. On the attention
    probabilities, which Hugging Face models return (TinyBERT's code compares the scores before the softmax)."""
    pairs = _attention_pairs(x.attention_mask, x.student_attentions[0])
    total = 0.0
    for s, t in zip(x.student_attentions, x.teacher_attentions):
        total = total + (((s - t) ** 2) * pairs).sum() / (pairs.sum() * s.shape[1])
    return total / len(x.student_attentions)


@register_loss("attention_kl", reads=["attentions"])
def attention_kl(x: LossInputs) -> torch.Tensor:
    """MiniLM's self-attention distribution transfer on the last layer: KL(teacher || student) of each head's
    attention distribution over keys, averaged over heads and real query tokens (MiniLM's value-relation term is
    not included). Padding keys hold probability 0 in both, so they add nothing."""
    s, t = x.student_attentions[-1], x.teacher_attentions[-1]
    eps = torch.finfo(s.dtype).tiny  # log(0) of a padding key, whose probability 0 multiplies it away
    kl = (t * (torch.log(t + eps) - torch.log(s + eps))).sum(-1)  # (batch, heads, queries)
    queries = x.attention_mask.to(s.dtype)[:, None, :]
    return (kl * queries).sum() / (queries.sum() * s.shape[1])


@dataclass(frozen=True)
class Objective:
    """Named loss weights (zero weights dropped) and each loss's options, its defaults filled in."""

    weights: dict[str, float]
    options: dict[str, dict[str, float]]

    @property
    def reads(self) -> frozenset[str]:
        """What its losses read (of READS): what a cell provides."""
        return reads_of(self.weights)


def parse_objective(spec: Mapping, where: str = "student.objective") -> Objective:
    """An objective from its params form; every fault is a ConfigError naming the entry and the fix."""
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(f"{where} must map loss names to weights, e.g. {{ce: 0.5, logit_mse: 0.5}}, got {spec!r}")
    weights, options = {}, {}
    for name, entry in spec.items():
        if name not in LOSSES:
            close = difflib.get_close_matches(str(name), list(LOSSES), n=1)
            raise ConfigError(f"{where}: unknown loss {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                              + f" (registered: {', '.join(sorted(LOSSES))})")
        entry = dict(entry) if isinstance(entry, Mapping) else {"weight": entry}
        weight = entry.pop("weight", None)
        unknown = sorted(set(entry) - set(LOSSES[name].options))
        if unknown:
            takes = ", ".join(LOSSES[name].options) or "only a weight"
            raise ConfigError(f"{where}.{name}: {name} has no option {unknown[0]!r} (it takes {takes})")
        for key, value in {"weight": weight, **entry}.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{where}.{name}.{key} must be a finite number >= 0, got {value!r}")
        if "temperature" in entry and entry["temperature"] <= 0:
            raise ConfigError(f"{where}.{name}.temperature must be > 0, got {entry['temperature']}")
        if weight > 0:
            weights[name] = float(weight)
            options[name] = {**LOSSES[name].options, **{k: float(v) for k, v in entry.items()}}
    if not weights:
        raise ConfigError(f"{where}: every weight is 0; nothing would be trained")
    return Objective(weights, {k: v for k, v in options.items() if v})


def objective_for(student: Mapping, kd: str) -> Objective:
    """The objective a cell of KD setting `kd` trains on, `student.objective.<kd>`: the one place a `student`
    section becomes a cell's objective (pipeline, benchmark and validation call it). KD on needs a distillation
    term (else it would train exactly as KD off); KD off must have none (else it would distil)."""
    where = f"student.objective.{kd}"
    objective = parse_objective(student["objective"][kd], where)
    distils = sorted(n for n in objective.weights if LOSSES[n].distils)
    if kd == "on" and not distils:
        raise ConfigError(f"{where} has no distillation term, so KD on would train exactly as KD off; add "
                          f"one of {', '.join(sorted(n for n, spec in LOSSES.items() if spec.distils))}, e.g. {{ce: 0.5, logit_mse: 0.5}}")
    if kd == "off" and distils:
        raise ConfigError(f"{where} has the distillation term(s) {', '.join(distils)}, so KD off would distil; "
                          "KD off trains on the labels alone: {ce: 1.0}")
    return objective


def validate_objective(weights: Mapping[str, float]) -> dict[str, float]:
    if not weights:
        raise ConfigError("the loss objective is empty; give at least one loss, e.g. {ce: 1.0}")
    unknown = [n for n in weights if n not in LOSSES]
    if unknown:
        raise ConfigError(f"unknown loss {unknown[0]!r}; registered losses: {', '.join(sorted(LOSSES))}")
    bad = {n: w for n, w in weights.items() if not isinstance(w, (int, float)) or w < 0}
    if bad:
        raise ConfigError(f"loss weights must be non-negative numbers, got {bad}")
    if sum(weights.values()) <= 0:
        raise ConfigError(f"loss weights {dict(weights)} sum to zero; nothing would be trained")
    return {n: float(w) for n, w in weights.items() if w > 0}


def combined_loss(weights: Mapping[str, float], x: LossInputs,
                  options: Mapping[str, Mapping[str, float]] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of named losses, each seeing its own options; also returns each part's value for logging."""
    total = 0.0
    parts = {}
    for name, w in weights.items():
        own = (options or {}).get(name)
        value = LOSSES[name].fn(dataclasses.replace(x, **own) if own else x)
        parts[name] = float(value.detach())
        total = total + w * value
    return total, parts

