"""Distillation losses, looked up by name from a small registry (as TextBrewer does).

Every loss takes a `LossInputs` and returns a scalar tensor. A training objective is a weighted sum of
named losses, e.g. {"ce": 0.5, "logit_mse": 0.5}; KD off is {"ce": 1.0}. Adding a loss is one function
decorated with @register_loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from mkd.errors import ConfigError


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


def register_loss(name: str, *, teacher_logits: bool = False, hidden: bool = False):
    def deco(fn):
        LOSSES[name] = fn
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


@register_loss("logit_kl", teacher_logits=True)
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


def combined_loss(weights: Mapping[str, float], x: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of named losses; also returns each part's value for logging."""
    total = 0.0
    parts = {}
    for name, w in weights.items():
        value = LOSSES[name](x)
        parts[name] = float(value.detach())
        total = total + w * value
    return total, parts
