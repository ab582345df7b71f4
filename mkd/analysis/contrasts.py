"""Paired contrasts of grid variants: one comparison A - B of two variants (or linear combinations of them)
within a (language_set, resource) slice, with every statistic of `mkd.analysis.stats` on its differences.

Reads a tidy results frame (the input contract is in `mkd.analysis.cell_scores`) and nothing else: no training code is
imported.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from mkd.core.errors import MkdError
from mkd.analysis.stats import bootstrap_ci, crossed_ci, exact_diff, paired_t_seeds, run_contrast, wilcoxon_paired


Variant = Mapping[str, str]
Combo = Sequence[tuple[float, Variant]]  # linear combination of variants, e.g. [(1, teacher_off), (-1, pre_off)]


def variant_label(v: Variant) -> str:
    if set(v) == {"init", "kd"}:
        return f"{v['init']} init, KD {v['kd']}"
    return ", ".join(f"{k}={v[k]}" for k in sorted(v))


def combo_label(combo: Combo) -> str:
    if len(combo) == 1 and combo[0][0] == 1:
        return variant_label(combo[0][1])
    parts = []
    for coef, v in combo:
        sign = "-" if coef < 0 else "+"
        c = abs(coef)
        parts.append(f"{sign} {'' if c == 1 else f'{c:g}*'}[{variant_label(v)}]")
    return " ".join(parts).lstrip("+ ")


def _slice(df: pd.DataFrame, language_set: str, resource: str, split: str | None) -> pd.DataFrame:
    sel = (df["language_set"] == language_set) & (df["resource"] == resource)
    if split is not None and "split" in df.columns:
        sel &= df["split"] == split
    return df[sel]


def _variant_matrix(sl: pd.DataFrame, v: Variant, metric: str) -> pd.DataFrame:
    """locale x seed matrix of `metric` for one variant within a slice (empty if the variant is absent)."""
    sel = np.ones(len(sl), dtype=bool)
    for k, val in v.items():
        sel &= (sl[k] == val).to_numpy()
    sub = sl[sel]
    if sub.duplicated(["locale", "seed"]).any():
        raise MkdError(f"variant {variant_label(v)} has duplicate (locale, seed) rows")
    return sub.pivot(index="locale", columns="seed", values=metric)


def _key(v: Variant) -> tuple:
    return tuple(sorted(v.items()))


def _variant_matrices(sl: pd.DataFrame, combos: Sequence[Combo], metric: str) -> dict[tuple, pd.DataFrame]:
    """Each variant of the combos' locale x seed matrix, pivoted once for every statistic of the comparison."""
    return {_key(v): _variant_matrix(sl, v, metric) for combo in combos for _, v in combo}


def _combo_matrix(mats: dict, combo: Combo, locales: Sequence[str] | None,
                  seeds: Sequence[int]) -> tuple[pd.DataFrame, list[str]]:
    """locale x seed matrix of the combo's score (sum of coef * variant) over `seeds`, and the labels of absent
    variants. Locales: those every variant has (within `locales` if given)."""
    missing = [variant_label(v) for _, v in combo if mats[_key(v)].empty]
    if missing:
        return pd.DataFrame(), missing
    loc = set.intersection(*(set(mats[_key(v)].index) for _, v in combo))
    if locales is not None:
        loc &= set(locales)
    loc = sorted(loc)
    return sum(coef * mats[_key(v)].loc[loc, list(seeds)] for coef, v in combo), []


def _shared_seeds(mats: dict, combos: Sequence[Combo]) -> list[int]:
    """The seeds every variant of the combos has: the descriptive (locale x seed) statistics read these. Variants
    may have more runs than that (grid.extra_seeds); the run-level test reads all of them. No seed in common is
    an error naming each variant's seeds."""
    seeds = {variant_label(v): set(mats[_key(v)].columns) for combo in combos for _, v in combo}
    shared = set.intersection(*seeds.values()) if seeds else set()
    if not shared and all(seeds.values()):
        raise MkdError("the variants of a comparison share no seed: " + "; ".join(
            f"{label} has {', '.join(map(str, sorted(s)))}" for label, s in seeds.items())
            + ". Give every init grid.seeds (and only some of them grid.extra_seeds)")
    return sorted(shared)


def _run_groups(mats: dict, combo_a: Combo, combo_b: Combo, locales: Sequence[str]) -> list:
    """A - B as (net weight, run scores) per variant: each run (seed) one number, its score averaged over
    `locales`; every run of each variant, whatever the others have. A variant in both combos counts once with its
    net weight (claim 3's pretrained init, KD off, cancels out: (T_off - P_off) - (P_on - P_off) = T_off - P_on),
    so no run is counted twice."""
    weights: dict[tuple, float] = {}
    for sign, combo in ((1.0, combo_a), (-1.0, combo_b)):
        for coef, v in combo:
            weights[_key(v)] = weights.get(_key(v), 0.0) + sign * coef
    return [(w, mats[k].loc[list(locales)].mean(axis=0).to_numpy()) for k, w in weights.items() if w != 0]


def _combo_mean(mats: dict, combo: Combo, locales: Sequence[str]) -> float:
    """The combo's score over every run of each variant (its locale-averaged runs, averaged)."""
    return float(sum(coef * mats[_key(v)].loc[list(locales)].to_numpy().mean() for coef, v in combo))


def contrast(
    df: pd.DataFrame,
    combo_a: Combo,
    combo_b: Combo,
    language_set: str,
    resource: str,
    metric: str = "accuracy",
    split: str | None = "test",
    locales: Sequence[str] | None = None,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Compare two linear combinations of variants (A - B) within one (language_set, resource) slice.

    `compare` is the special case of one variant each. The init-vs-KD test is
    A = teacher_off - pretrained_off (init effect), B = pretrained_on - pretrained_off (KD effect).
    The evidence is over training runs, the unit of replication: each run's score averaged over the locales,
    Welch's test of the contrast with Satterthwaite's df (`stats.run_contrast`: unpaired, as runs that share a
    seed id share no training randomness that matters; unequal variances per variant), giving Δ, `p_runs` and
    the interval `ci_lo..ci_hi`. Descriptive, never evidence (52 locales of the same few runs are not 52
    replicates): the per-(locale, seed) differences D = A - B give `crossed_*` (`crossed_ci`), `loc_ci_*` (a
    bootstrap over locales of the seed-averaged D), the Wilcoxon across locales (its rank-biserial is the
    consistency check a verdict's direction must agree with) and the paired t across seeds. Those read the seeds
    every variant shares; Δ, the means and the run-level test read every run (grid.extra_seeds may give some inits
    more runs than others).
    """
    sl = _slice(df, language_set, resource, split)
    mats = _variant_matrices(sl, (combo_a, combo_b), metric)
    shared = _shared_seeds(mats, (combo_a, combo_b))
    a_mat, miss_a = _combo_matrix(mats, combo_a, locales, shared)
    b_mat, miss_b = _combo_matrix(mats, combo_b, locales, shared)
    out: dict = {
        "language_set": language_set,
        "resource": resource,
        "metric": metric,
        "split": split,
        "a": combo_label(combo_a),
        "b": combo_label(combo_b),
    }
    missing = miss_a + miss_b
    if missing:
        raise MkdError(
            f"comparison {out['a']} vs {out['b']} in language set {language_set!r}, {resource} resource: "
            f"no rows for {', '.join(sorted(set(missing)))}"
        )
    loc = sorted(set(a_mat.index) & set(b_mat.index))
    if not loc:
        raise MkdError(f"comparison {out['a']} vs {out['b']}: no locales in common")
    seeds = shared
    a_mat, b_mat = a_mat.loc[loc, seeds], b_mat.loc[loc, seeds]
    diff = exact_diff(a_mat.to_numpy(), b_mat.to_numpy())
    per_locale = exact_diff(a_mat.mean(axis=1).to_numpy(), b_mat.mean(axis=1).to_numpy())
    per_seed_a, per_seed_b = a_mat.mean(axis=0).to_numpy(), b_mat.mean(axis=0).to_numpy()
    ci = crossed_ci(diff, confidence)
    runs = run_contrast(_run_groups(mats, combo_a, combo_b, loc), confidence)
    loc_lo, loc_hi = bootstrap_ci(per_locale, n_resamples=n_resamples, confidence=confidence, seed=seed)
    w = wilcoxon_paired(per_locale, np.zeros_like(per_locale))
    t = paired_t_seeds(per_seed_a, per_seed_b)
    flags = []
    if t is not None and math.isinf(t.statistic):
        flags.append("no seed-to-seed variation in the difference (collapsed or identical models)")
    out.update(
        {
            "mean_a": _combo_mean(mats, combo_a, loc),
            "mean_b": _combo_mean(mats, combo_b, loc),
            "delta": float(runs.delta),
            "ci_lo": runs.ci_lo,
            "ci_hi": runs.ci_hi,
            "se_runs": runs.se,
            "df_runs": runs.df,
            "p_runs": runs.pvalue,
            "n_runs": min(runs.n_runs),
            "runs_per_variant": "/".join(map(str, runs.n_runs)),   # e.g. "6/3": teacher init's 6 runs, random's 3
            "crossed_lo": ci.lo,
            "crossed_hi": ci.hi,
            "loc_ci_lo": loc_lo,
            "loc_ci_hi": loc_hi,
            "confidence": confidence,
            "wilcoxon_stat": w.statistic,
            "p_wilcoxon": w.pvalue,
            "rank_biserial": w.rank_biserial,
            "t_stat": None if t is None else t.statistic,
            "p_t": None if t is None else t.pvalue,
            "cohen_dz": None if t is None else t.cohen_dz,
            "t_ci_lo": None if t is None else t.ci_lo,
            "t_ci_hi": None if t is None else t.ci_hi,
            "n_locales": len(loc),
            "n_seeds": len(seeds),
            "seeds": seeds,
            "locales": loc,
            "degenerate": "; ".join(flags),
        }
    )
    return out


def compare(df: pd.DataFrame, a: Variant, b: Variant, language_set: str, resource: str, **options) -> dict:
    """One comparison a - b of two variants (dicts of init/kd values) within a (language_set, resource) slice:
    `contrast` of one variant each, with the same options (metric, split, locales, n_resamples, confidence,
    seed) and the same result."""
    return contrast(df, [(1.0, a)], [(1.0, b)], language_set, resource, **options)
