"""Distillation losses, looked up by name from a small registry (as TextBrewer does).

Every loss takes a `LossInputs` and returns a scalar tensor. A training objective is data: a weighted sum of
named losses, params' `student.objective.<kd setting>`, e.g. on: {ce: 0.5, logit_mse: 0.5} and off: {ce: 1.0}. An
entry is a weight, or a mapping of the weight and the loss's own options ({weight: 0.5, temperature: 4.0} for
logit_kl), so an option exists only where a loss reads it. Each registered loss declares what it needs
(teacher logits, teacher hidden states) and the cell provides exactly that. Adding a loss is one function
decorated with @register_loss.

    total loss = sum over entries of weight x loss(student, batch, teacher outputs, options)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
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
    # For hidden_mse: per student layer, its hidden states and the matched teacher layer's (layer map order).
    student_hidden: Sequence[torch.Tensor] | None = None
    teacher_hidden: Sequence[torch.Tensor] | None = None
    attention_mask: torch.Tensor | None = None


LOSSES: dict[str, Callable[[LossInputs], torch.Tensor]] = {}
NEEDS_TEACHER_LOGITS: set[str] = set()
NEEDS_HIDDEN: set[str] = set()
LOSS_OPTIONS: dict[str, dict[str, float]] = {}  # name -> its options' defaults (LossInputs fields it reads)


def register_loss(name: str, *, teacher_logits: bool = False, hidden: bool = False, options: dict | None = None):
    def deco(fn):
        LOSSES[name] = fn
        LOSS_OPTIONS[name] = dict(options or {})
        if teacher_logits:
            NEEDS_TEACHER_LOGITS.add(name)
        if hidden:
            NEEDS_HIDDEN.add(name)
        return fn

    return deco


@register_loss("ce")
def cross_entropy(x: LossInputs) -> torch.Tensor:
    """Labels only: KD off."""
    return F.cross_entropy(x.student_logits, x.labels)


@register_loss("logit_mse", teacher_logits=True)
def logit_mse(x: LossInputs) -> torch.Tensor:
    """MSE between student and teacher logits: the paper's choice (as a later paper by the authors reports)."""
    return F.mse_loss(x.student_logits, x.teacher_logits)


@register_loss("logit_kl", teacher_logits=True, options={"temperature": 2.0})
def logit_kl(x: LossInputs) -> torch.Tensor:
    """Hinton et al.: KL(teacher || student) at temperature T, scaled by T^2 to keep gradient size."""
    t = x.temperature
    log_p_student = F.log_softmax(x.student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(x.teacher_logits / t, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * t * t


@register_loss("hidden_mse", hidden=True)
def hidden_mse(x: LossInputs) -> torch.Tensor:
    """MSE of layer-matched hidden states (student layer i vs teacher layer map[i]), padding masked out."""
    mask = x.attention_mask.unsqueeze(-1).to(x.student_hidden[0].dtype)
    total = 0.0
    for s, t in zip(x.student_hidden, x.teacher_hidden):
        total = total + (((s - t) ** 2) * mask).sum() / (mask.sum() * s.shape[-1])
    return total / len(x.student_hidden)


@register_loss("hidden_cos", hidden=True)
def hidden_cos(x: LossInputs) -> torch.Tensor:
    """DistilBERT's cosine loss: 1 - cos(student, teacher) of layer-matched hidden states, per token, padding
    masked out, averaged over tokens and mapped layers (0 when aligned, 2 when opposed; scale-free, unlike MSE)."""
    mask = x.attention_mask.to(x.student_hidden[0].dtype)
    total = 0.0
    for s, t in zip(x.student_hidden, x.teacher_hidden):
        total = total + ((1 - F.cosine_similarity(s, t, dim=-1)) * mask).sum() / mask.sum()
    return total / len(x.student_hidden)


@dataclass(frozen=True)
class Objective:
    """Named loss weights (zero weights dropped) and each loss's options, its defaults filled in."""

    weights: dict[str, float]
    options: dict[str, dict[str, float]]

    @property
    def needs_teacher_logits(self) -> bool:
        return bool(NEEDS_TEACHER_LOGITS & self.weights.keys())

    @property
    def needs_teacher_hidden(self) -> bool:
        return bool(NEEDS_HIDDEN & self.weights.keys())


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
        unknown = sorted(set(entry) - set(LOSS_OPTIONS[name]))
        if unknown:
            takes = ", ".join(LOSS_OPTIONS[name]) or "only a weight"
            raise ConfigError(f"{where}.{name}: {name} has no option {unknown[0]!r} (it takes {takes})")
        for key, value in {"weight": weight, **entry}.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{where}.{name}.{key} must be a finite number >= 0, got {value!r}")
        if "temperature" in entry and entry["temperature"] <= 0:
            raise ConfigError(f"{where}.{name}.temperature must be > 0, got {entry['temperature']}")
        if weight > 0:
            weights[name] = float(weight)
            options[name] = {**LOSS_OPTIONS[name], **{k: float(v) for k, v in entry.items()}}
    if not weights:
        raise ConfigError(f"{where}: every weight is 0; nothing would be trained")
    return Objective(weights, {k: v for k, v in options.items() if v})


def objective_for(student: Mapping, kd: str) -> Objective:
    """The objective a cell of KD setting `kd` trains on, `student.objective.<kd>`: the one place a `student`
    section becomes a cell's objective (pipeline, benchmark and validation call it). KD on needs a distillation
    term (else it would train exactly as KD off); KD off must have none (else it would distil)."""
    where = f"student.objective.{kd}"
    objective = parse_objective(student["objective"][kd], where)
    distils = sorted(set(objective.weights) - {"ce"})
    if kd == "on" and not distils:
        raise ConfigError(f"{where} has no distillation term, so KD on would train exactly as KD off; add "
                          f"one of {', '.join(sorted(set(LOSSES) - {'ce'}))}, e.g. {{ce: 0.5, logit_mse: 0.5}}")
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
        value = LOSSES[name](dataclasses.replace(x, **own) if own else x)
        parts[name] = float(value.detach())
        total = total + w * value
    return total, parts

