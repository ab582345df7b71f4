"""What a profile's training costs, before any of it starts: FLOPs from the models' shape and the step budgets.

`forward_flops` counts an encoder's matmuls (checked against torch's FlopCounterMode, tests/test_scaling.py); a
training step is 3 forwards. `training_flops` applies it to the teacher(s) and every grid cell at TOKENS_PER_ROW;
evaluations and the stages around them are left out, and `CPU_FLOPS_PER_CORE` is calibrated on a whole run that
includes them (benchmark/gpu_projection.py counts those too, from measured token lengths). `mkd validate` uses
it to warn before a run that a CPU cannot finish (the paper profile: ~890 hours on 2 cores). No torch import:
validation stays fast.
"""

from __future__ import annotations

from mkd.models.sources import base_shape

# Tokens per MASSIVE row in a length-grouped training batch (special tokens and padding included) under XLM-R's
# sentencepiece vocabulary: 12.3 on all 52 locales' 598,728 training rows (the full-size dry run,
# benchmark/paper_scale.md); 344 per 32-row step on the cpu8 locales (benchmark/RESULTS.md).
TOKENS_PER_ROW = 12.3
# What 1 CPU core delivers, calibrated on a whole run: the cpu profile's estimate below (7.6e14 FLOPs) over its
# measured 134 min on 2 cores (Intel Xeon, 2026-12-06: upstream, evaluations and both workers included).
CPU_FLOPS_PER_CORE = 47e9
WARN_CPU_HOURS = 24.0       # above this, a machine without a GPU gets a warning from `mkd validate`


def forward_flops(rows: float, padded_width: float, layers: int, hidden: int, intermediate: int | None = None,
                  labels: int = 60, head: bool = True) -> float:
    """Matmul FLOPs of an encoder's forward pass over `rows` rows padded to `padded_width` tokens: per token and
    layer 2 (4 h^2 + 2 h f) for the projections and the MLP (f = 4 h unless given) and 4 w h for attention's scores
    and mix; per row the classification head on the first token, 2 (h^2 + h C). Lookups, norms, softmax: none."""
    f = 4 * hidden if intermediate is None else intermediate
    per_token = layers * (2 * (4 * hidden * hidden + 2 * hidden * f) + 4 * padded_width * hidden)
    return rows * (padded_width * per_token + (2 * (hidden * hidden + hidden * labels) if head else 0))


def formula_training_flops(non_embedding_params: int, tokens: int) -> float:
    """The usual estimate of a training step's FLOPs: 6 x N x tokens (2 forward + 4 backward per weight and
    token), N the non-embedding parameters; attention's sequence-length-squared terms are left out."""
    return 6.0 * non_embedding_params * tokens


def training_flops(params: dict) -> dict:
    """{"teacher", "students", "total"} training FLOPs of the profile (see the module docstring), the grid's "cells",
    and the shape it assumed ("layers", "hidden", "shape_known")."""
    from mkd.pipeline.grid import grid_cells, needed_teachers

    layers, hidden, known = base_shape(params["base"]["model"])
    t, s = params["teacher"], params["student"]
    cells = len(grid_cells(params))
    teacher = len(needed_teachers(params)) * t["max_steps"] * 3 * forward_flops(
        t["batch_size"], TOKENS_PER_ROW, layers, hidden)
    students = cells * s["max_steps"] * 3 * forward_flops(s["batch_size"], TOKENS_PER_ROW, s["layers"], hidden)
    return {"teacher": teacher, "students": students, "total": teacher + students, "cells": cells,
            "layers": layers, "hidden": hidden, "shape_known": known}


def cpu_hours(params: dict, cores: int) -> float:
    """About how many hours the profile takes on `cores` CPU cores, at the rate the cpu profile's run measured."""
    return training_flops(params)["total"] / (CPU_FLOPS_PER_CORE * max(cores, 1)) / 3600


def gpu_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def no_gpu_warning(params: dict, cores: int) -> str | None:
    """The warning for a profile that needs a GPU started where torch sees none; None when it is cheap enough
    for the CPU (torch is imported only then: the cpu and smoke profiles never pay it)."""
    hours = cpu_hours(params, cores)
    if hours < WARN_CPU_HOURS or gpu_visible():
        return None
    f = training_flops(params)
    shape = f"{f['layers']} layers, hidden {f['hidden']}" + ("" if f["shape_known"] else " (assumed)")
    return (f"warning: profile {params['profile']} trains ~{f['total']:.1e} FLOPs ({shape}; teachers "
            f"{f['teacher']:.1e}, {f['cells']} cells {f['students']:.1e}): about {hours:,.0f} hours on this machine's {cores} CPU cores, and no "
            "CUDA GPU is visible to torch. Run it on GPUs (docs/scaling-out.md), or try `--profile cpu` first")
