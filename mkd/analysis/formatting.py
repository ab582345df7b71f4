"""How numbers print in the LaTeX tables and claims.md: percentages, p-values and statistics, "--" where a
number is missing (None or NaN: not computed)."""

from __future__ import annotations

import math


def is_missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def format_pct(x: float, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage."""
    return "--" if is_missing(x) else f"{100 * x:.{digits}f}"


def format_p(p) -> str:
    if is_missing(p):
        return "--"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def format_num(x, digits: int = 2) -> str:
    if is_missing(x):
        return "--"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def mean_sd(values) -> str:
    """'mean ± sd' of runs (sample sd), the mean alone for one run, '' for none: how tables show a variant."""
    v = [float(x) for x in values]
    if not v:
        return ""
    mean = sum(v) / len(v)
    if len(v) == 1:
        return f"{mean:.1f}"
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1))
    return f"{mean:.1f} ± {sd:.1f}"
