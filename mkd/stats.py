"""Statistics for the analysis: paired tests, bootstrap CIs, Holm correction and the family of comparisons.

Everything here reads a tidy results frame (see `mkd.report` for the input contract) and nothing else:
no training code is imported. scipy does the numerical work; hand code only fills what scipy lacks
(rank-biserial correlation, Cohen's d_z, Holm-Bonferroni, degenerate-input handling).

Two kinds of replication are kept apart on purpose:

* across **locales** (on seed-averaged scores): Wilcoxon signed-rank + bootstrap CI of the mean difference.
  Answers "is the advantage consistent across the languages evaluated?"
* across **seeds** (on locale-averaged scores): paired t-test + Cohen's d_z.
  Answers "is the advantage of the average larger than training noise?"

Almost stochastic order (ASO) over seeds is not implemented: with the 3 seeds of the grid its violation-ratio
estimate is dominated by noise, and a faithful implementation (quantile-function integral + bootstrap) is not
cheap to verify. The paired t-test over seeds plays its role.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from mkd.axes import INITIALIZATIONS as INITS, KD_SETTINGS as KDS, RESOURCES  # the one registry of each axis
from mkd.errors import ConfigError, MkdError

ENGLISH_LOCALES = frozenset({"en-US"})
# Language sets whose training locales are known without being told: trained on English only.
DEFAULT_TRAIN_LOCALES: dict[str, tuple[str, ...]] = {"en": ("en-US",)}
# Which p-value enters Holm and the verdict. "both": intersection-union test, p = max(p_wilcoxon, p_t): a
# comparison counts only if it is consistent across locales AND larger than seed noise. Wilcoxon alone on
# seed-averaged scores treats locales as independent replicates although every locale of a run shares that
# run's training randomness, so a lucky seed shifts all locales at once and reads as a "consistent" effect.
PRIMARY_TESTS = ("both", "wilcoxon", "t")
HOLM_FAMILIES = ("claim", "all")


# --------------------------------------------------------------------------------------------------
# Elementary tests
# --------------------------------------------------------------------------------------------------


class WilcoxonResult(NamedTuple):
    statistic: float
    pvalue: float
    rank_biserial: float  # matched-pairs rank-biserial correlation, in [-1, 1]; > 0 means a > b
    n: int  # number of pairs (including zero differences)


class PairedTResult(NamedTuple):
    statistic: float
    pvalue: float
    cohen_dz: float  # mean(d) / sd(d, ddof=1)
    n: int  # number of seeds
    ci_lo: float  # 95% t confidence interval of the mean difference across seeds
    ci_hi: float


def _as_1d(x: Iterable[float], name: str) -> np.ndarray:
    arr = np.asarray(list(x) if not isinstance(x, np.ndarray) else x, dtype=float).ravel()
    if np.isnan(arr).any():
        raise MkdError(f"{name} contains NaN; drop or fill missing scores before testing")
    return arr


# Scores are fractions of at most a few thousand rows, averaged over a few seeds: any real difference is far
# above 1e-9. Rounding there turns float round-off (0.1 + 0.2 - 0.3 != 0) back into the exact ties and zeros
# that the rank tests must see as ties and zeros.
DIFF_DECIMALS = 9


def exact_diff(a, b) -> np.ndarray:
    """a - b with float round-off removed (see DIFF_DECIMALS)."""
    return np.round(np.asarray(a, dtype=float) - np.asarray(b, dtype=float), DIFF_DECIMALS) + 0.0


def _paired(a, b) -> np.ndarray:
    a = _as_1d(a, "a")
    b = _as_1d(b, "b")
    if a.shape != b.shape:
        raise MkdError(f"paired test needs equal lengths, got {a.size} and {b.size}")
    return exact_diff(a, b)


def bootstrap_ci(
    diffs: Iterable[float],
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "BCa",
) -> tuple[float, float]:
    """Bootstrap CI of the mean of `diffs` (scipy.stats.bootstrap, BCa by default).

    Fewer than 2 values, or no spread at all, gives (mean, mean): there is nothing to resample.
    If BCa is undefined (e.g. a jackknife without spread) it falls back to the percentile method.
    """
    d = _as_1d(diffs, "diffs")
    if d.size == 0:
        raise MkdError("bootstrap_ci needs at least one value")
    mean = float(d.mean())
    if d.size < 2 or np.ptp(d) == 0:
        return (mean, mean)
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    for m in (method, "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sps.bootstrap(
                (d,),
                np.mean,
                n_resamples=int(n_resamples),
                confidence_level=confidence,
                method=m,
                rng=np.random.default_rng(seed),
                vectorized=True,
            )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return (lo, hi)
    return (mean, mean)  # pragma: no cover - percentile is always finite for finite data


def rank_biserial(diffs: Iterable[float]) -> float:
    """Matched-pairs rank-biserial correlation r = (T+ - T-) / (T+ + T-), zero differences dropped.

    Ranks are of |d| over the non-zero differences (average ranks for ties), as in Wilcoxon's 'wilcox'
    zero method, so r matches the statistic scipy tests. All differences zero gives 0.
    """
    d = _as_1d(diffs, "diffs")
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    ranks = sps.rankdata(np.abs(d))
    t_plus = float(ranks[d > 0].sum())
    t_minus = float(ranks[d < 0].sum())
    return (t_plus - t_minus) / (t_plus + t_minus)


def wilcoxon_paired(a: Iterable[float], b: Iterable[float]) -> WilcoxonResult:
    """Two-sided Wilcoxon signed-rank test of a vs b (paired, e.g. across locales), scipy defaults.

    All differences zero (or no pairs) gives statistic 0, p = 1.0, r = 0: no evidence of any difference.
    """
    d = _paired(a, b)
    n = int(d.size)
    if n == 0 or not np.any(d != 0):
        return WilcoxonResult(0.0, 1.0, 0.0, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sample size too small for normal approximation" etc.
        res = sps.wilcoxon(d)
    return WilcoxonResult(float(res.statistic), float(res.pvalue), rank_biserial(d), n)


def paired_t_seeds(a: Iterable[float], b: Iterable[float]) -> PairedTResult | None:
    """Paired t-test (scipy.stats.ttest_rel, two-sided) of a vs b across seeds, plus Cohen's d_z.

    None when fewer than 2 pairs. Identical differences: all zero -> t = 0, p = 1, d_z = 0; a constant
    non-zero shift -> t = d_z = +/-inf and p = NaN: no seed noise at all happens with collapsed models (every
    seed predicts the same constant), and is no evidence; `contrast` flags it as degenerate.
    """
    d = _paired(a, b)
    n = int(d.size)
    if n < 2:
        return None
    sd = float(d.std(ddof=1))
    mean = float(d.mean())
    if sd == 0:
        if mean == 0:
            return PairedTResult(0.0, 1.0, 0.0, n, 0.0, 0.0)
        return PairedTResult(math.copysign(math.inf, mean), math.nan, math.copysign(math.inf, mean), n, mean, mean)
    res = sps.ttest_1samp(d, 0.0)
    ci = res.confidence_interval(0.95)
    return PairedTResult(float(res.statistic), float(res.pvalue), mean / sd, n, float(ci.low), float(ci.high))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order; monotone and capped at 1.

    adj_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j)) over the ascending order (1-based j).
    NaN entries stay NaN and do not count towards m.
    """
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if not ok.any():
        return out
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise MkdError("p-values must lie in [0, 1]")
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(p[ok], kind="mergesort")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


class CrossedCI(NamedTuple):
    mean: float
    lo: float
    hi: float
    se: float
    df: float  # Satterthwaite degrees of freedom


def crossed_ci(diffs: np.ndarray, confidence: float = 0.95) -> CrossedCI:
    """CI of the mean of a locale x seed matrix of paired differences, with locale AND seed variation.

    Model: d[l, s] = mu + a_l + b_s + e_ls (locales and seeds crossed random effects; a seed is one training
    run, shared by every locale it is evaluated on). From the two-way ANOVA mean squares,
        Var(mean) = sigma_a^2 / L + sigma_b^2 / S + sigma_e^2 / (L S) = (MS_l + MS_s - MS_e) / (L S),
    floored at max(MS_l, MS_s) / (L S) so a seed or locale mean square sampled low cannot shrink it below what
    either factor alone shows; t quantile with Satterthwaite's degrees of freedom. When seed noise dominates,
    the degrees of freedom fall towards S - 1 (wide interval with 3 seeds); when locales dominate, towards L - 1.
    A bootstrap over locales alone ignores the seed term; one over 3 seeds cannot reach 95 % coverage.
    """
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 2 or d.size == 0:
        raise MkdError("crossed_ci needs a non-empty locale x seed matrix")
    n_loc, n_seed = d.shape
    mean = float(d.mean())
    if n_loc < 2 and n_seed < 2:
        return CrossedCI(mean, mean, mean, 0.0, math.nan)
    row, col = d.mean(axis=1), d.mean(axis=0)
    ms_l = n_seed * float(((row - mean) ** 2).sum()) / (n_loc - 1) if n_loc > 1 else 0.0
    ms_s = n_loc * float(((col - mean) ** 2).sum()) / (n_seed - 1) if n_seed > 1 else 0.0
    resid = d - row[:, None] - col[None, :] + mean
    df_e = (n_loc - 1) * (n_seed - 1)
    ms_e = float((resid ** 2).sum()) / df_e if df_e > 0 else 0.0
    terms = [(ms_l, n_loc - 1, 1.0), (ms_s, n_seed - 1, 1.0), (ms_e, df_e, -1.0)]
    combo = ms_l + ms_s - ms_e
    if combo < max(ms_l, ms_s):
        combo = max(ms_l, ms_s)
        terms = [(ms_l, n_loc - 1, 1.0)] if ms_l >= ms_s else [(ms_s, n_seed - 1, 1.0)]
    if combo <= 0:
        return CrossedCI(mean, mean, mean, 0.0, math.nan)
    df = combo ** 2 / sum((c * ms) ** 2 / k for ms, k, c in terms if k > 0 and ms > 0)
    se = math.sqrt(combo / (n_loc * n_seed))
    q = float(sps.t.ppf(0.5 + confidence / 2, df))
    return CrossedCI(mean, mean - q * se, mean + q * se, se, df)


# --------------------------------------------------------------------------------------------------
# Comparisons on the tidy results frame
# --------------------------------------------------------------------------------------------------

Variant = Mapping[str, str]
Combo = Sequence[tuple[float, Variant]]  # linear combination of variants, e.g. [(1, teacher_off), (-1, pre_off)]


def variant_label(v: Variant) -> str:
    if set(v) == {"init", "kd"}:
        return f"{v['init']} init, KD {v['kd']}"
    return ", ".join(f"{k}={v[k]}" for k in sorted(v))


def _combo_label(combo: Combo) -> str:
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


def _combo_matrix(sl: pd.DataFrame, combo: Combo, metric: str, locales: Sequence[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """locale x seed matrix of the combo's score (sum of coef * variant), and the labels of absent variants.

    Every variant of a combo must have exactly the same seeds: averaging each variant over its own seeds while
    the seed-level test pairs only the shared ones lets one extra (failed) seed flip a result. Unequal seed sets
    are an error naming the variants and the seeds each lacks. Locales: those every variant has (within
    `locales` if given).
    """
    mats, missing = [], []
    for _, v in combo:
        m = _variant_matrix(sl, v, metric)
        if m.empty:
            missing.append(variant_label(v))
        mats.append(m)
    if missing:
        return pd.DataFrame(), missing
    _check_same_seeds([(variant_label(v), m) for (_, v), m in zip(combo, mats)])
    loc = set(mats[0].index)
    for m in mats[1:]:
        loc &= set(m.index)
    if locales is not None:
        loc &= set(locales)
    loc = sorted(loc)
    seeds = sorted(mats[0].columns)
    return sum(coef * m.loc[loc, seeds] for (coef, _), m in zip(combo, mats)), []


def _check_same_seeds(labelled: Sequence[tuple[str, pd.DataFrame]]) -> None:
    all_seeds = set().union(*(set(m.columns) for _, m in labelled))
    lacking = [(label, sorted(all_seeds - set(m.columns))) for label, m in labelled if set(m.columns) != all_seeds]
    if lacking:
        raise MkdError(
            "a comparison needs the same seeds in every variant, but "
            + "; ".join(f"{label} lacks seed(s) {', '.join(map(str, seeds))}" for label, seeds in lacking)
            + ". Run the missing cells (or drop the extra seeds from the grid) so every variant has the same seeds."
        )


def _direction(x) -> int:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return 0
    return int(np.sign(x))


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
    The per-(locale, seed) differences D = A - B (seeds paired by id) give every statistic: Δ = mean(D); the
    interval `ci_lo..ci_hi` is `crossed_ci` (locale and seed variation); `loc_ci_*` a bootstrap over locales of
    the seed-averaged D (locale variation only); Wilcoxon across locales on seed-averaged D; paired t across
    seeds on locale-averaged D.
    """
    sl = _slice(df, language_set, resource, split)
    a_mat, miss_a = _combo_matrix(sl, combo_a, metric, locales)
    b_mat, miss_b = _combo_matrix(sl, combo_b, metric, locales)
    out: dict = {
        "language_set": language_set,
        "resource": resource,
        "metric": metric,
        "split": split,
        "a": _combo_label(combo_a),
        "b": _combo_label(combo_b),
    }
    missing = miss_a + miss_b
    if missing:
        raise MkdError(
            f"comparison {out['a']} vs {out['b']} in language set {language_set!r}, {resource} resource: "
            f"no rows for {', '.join(sorted(set(missing)))}"
        )
    _check_same_seeds([(out["a"], a_mat), (out["b"], b_mat)])
    loc = sorted(set(a_mat.index) & set(b_mat.index))
    if not loc:
        raise MkdError(f"comparison {out['a']} vs {out['b']}: no locales in common")
    seeds = sorted(a_mat.columns)
    a_mat, b_mat = a_mat.loc[loc, seeds], b_mat.loc[loc, seeds]
    diff = exact_diff(a_mat.to_numpy(), b_mat.to_numpy())
    per_locale = exact_diff(a_mat.mean(axis=1).to_numpy(), b_mat.mean(axis=1).to_numpy())
    per_seed_a, per_seed_b = a_mat.mean(axis=0).to_numpy(), b_mat.mean(axis=0).to_numpy()
    ci = crossed_ci(diff, confidence)
    loc_lo, loc_hi = bootstrap_ci(per_locale, n_resamples=n_resamples, confidence=confidence, seed=seed)
    w = wilcoxon_paired(per_locale, np.zeros_like(per_locale))
    t = paired_t_seeds(per_seed_a, per_seed_b)
    flags = []
    if t is not None and math.isinf(t.statistic):
        flags.append("no seed-to-seed variation in the difference (collapsed or identical models)")
    out.update(
        {
            "mean_a": float(a_mat.to_numpy().mean()),
            "mean_b": float(b_mat.to_numpy().mean()),
            "delta": float(ci.mean),
            "ci_lo": ci.lo,
            "ci_hi": ci.hi,
            "ci_df": ci.df,
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


def compare(
    df: pd.DataFrame,
    a: Variant,
    b: Variant,
    language_set: str,
    resource: str,
    metric: str = "accuracy",
    split: str | None = "test",
    locales: Sequence[str] | None = None,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """One comparison a - b of two variants (dicts of init/kd values) within a (language_set, resource) slice.

    Returns: mean_a, mean_b (locale means of seed-averaged scores), delta (a - b), ci_lo/ci_hi (bootstrap over
    locales), wilcoxon_stat/p_wilcoxon/rank_biserial (across locales, seed-averaged), t_stat/p_t/cohen_dz
    (across seeds, locale-averaged; None with < 2 shared seeds), n_locales, n_seeds.
    """
    return contrast(
        df, [(1.0, a)], [(1.0, b)], language_set, resource, metric=metric, split=split, locales=locales,
        n_resamples=n_resamples, confidence=confidence, seed=seed,
    )


VERDICTS = ("reproduced", "contradicted", "inconclusive", "inconclusive (tests disagree)", "not testable at this scale",
            "skipped")


def verdict(delta: float, ci_lo: float, ci_hi: float, p_adj: float, alpha: float = 0.05,
            directions: Sequence[float] = ()) -> str:
    """Claimed direction is delta > 0.

    reproduced: delta > 0, Holm-adjusted p < alpha and the CI entirely above 0;
    contradicted: delta < 0, Holm-adjusted p < alpha and the CI entirely below 0;
    inconclusive (tests disagree): significant, but a test the rule rests on (`directions`: the Wilcoxon
    rank-biserial, the t statistic) points the other way from delta: e.g. +2 pp on average carried by a few
    locales while most locales lose;
    inconclusive: anything else.
    """
    if p_adj is None or not math.isfinite(p_adj):
        return "inconclusive"
    sign = _direction(delta)
    significant = p_adj < alpha and ((sign > 0 and ci_lo > 0) or (sign < 0 and ci_hi < 0))
    if not significant:
        return "inconclusive"
    if any(_direction(x) != sign for x in directions):
        return "inconclusive (tests disagree)"
    return "reproduced" if sign > 0 else "contradicted"


CLAIMS = {
    1: "Initializing the student from the fine-tuned teacher's weights beats random initialization.",
    2: "Initializing the student from the fine-tuned teacher's weights beats initializing it from the "
    "pretrained (not fine-tuned) student model.",
    3: "The effect of teacher-weight initialization exceeds the effect of knowledge distillation itself "
    "(init effect = teacher init - pretrained init, both without KD; KD effect = pretrained init with KD - "
    "without KD).",
    4: "Knowledge distillation helps: KD on beats KD off within each initialization.",
    5: "In the low-resource setting, teacher-weight initialization keeps multilingual ability: its advantage "
    "holds on non-English locales, and on locales the student was never trained on.",
}


def _v(init: str, kd: str) -> dict:
    return {"init": init, "kd": kd}


def family_specs(
    slices: Sequence[tuple[str, str]],
    locales_by_set: Mapping[str, Sequence[str]],
    train_locales: Mapping[str, Sequence[str]] | None = None,
) -> list[dict]:
    """The comparisons the paper's claims rest on, per (language_set, resource) slice."""
    train_locales = {**DEFAULT_TRAIN_LOCALES, **(train_locales or {})}
    specs = []
    for ls, res in slices:
        base = {"language_set": ls, "resource": res, "locale_subset": "all", "locales": None}
        for kd in KDS:
            specs.append({**base, "claim": 1, "combo_a": [(1.0, _v("teacher", kd))],
                          "combo_b": [(1.0, _v("random", kd))]})
        for kd in KDS:
            specs.append({**base, "claim": 2, "combo_a": [(1.0, _v("teacher", kd))],
                          "combo_b": [(1.0, _v("pretrained", kd))]})
        specs.append({
            **base, "claim": 3, "label": "init effect vs KD effect",
            "combo_a": [(1.0, _v("teacher", "off")), (-1.0, _v("pretrained", "off"))],
            "combo_b": [(1.0, _v("pretrained", "on")), (-1.0, _v("pretrained", "off"))],
        })
        for init in INITS:
            specs.append({**base, "claim": 4, "combo_a": [(1.0, _v(init, "on"))],
                          "combo_b": [(1.0, _v(init, "off"))]})
        if res != "low":
            continue
        all_loc = list(locales_by_set.get(ls, []))
        subsets: list[tuple[str, list[str]]] = []
        non_en = [l for l in all_loc if l not in ENGLISH_LOCALES]
        seen = train_locales.get(ls)
        unseen = [l for l in all_loc if l not in set(seen)] if seen is not None else None
        if unseen is not None and set(unseen) == set(non_en):
            subsets.append(("non-English = unseen in training", non_en))
        else:
            subsets.append(("non-English", non_en))
            if unseen:
                subsets.append(("unseen in training", unseen))
        for name, locs in subsets:
            if not locs:
                continue
            for other in ("random", "pretrained"):
                for kd in KDS:
                    specs.append({**base, "claim": 5, "locale_subset": name, "locales": locs,
                                  "combo_a": [(1.0, _v("teacher", kd))], "combo_b": [(1.0, _v(other, kd))]})
    return specs


def comparison_family(
    df: pd.DataFrame,
    metric: str = "accuracy",
    split: str | None = "test",
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    alpha: float = 0.05,
    primary_test: str = "both",
    train_locales: Mapping[str, Sequence[str]] | None = None,
    holm_family: str = "claim",
    blockers=None,
) -> pd.DataFrame:
    """Run the whole family of comparisons, Holm-correct it (per claim, or over all), and return a tidy frame.

    One row per comparison: claim, language_set, resource, locale_subset, comparison, a, b, delta, ci_lo, ci_hi,
    p_wilcoxon, rank_biserial, p_t, cohen_dz, n_locales, n_seeds, p_primary, p_holm, verdict, ...
    `primary_test` picks which p-value enters Holm and the verdict: "both" (default; max of the two, an
    intersection-union test), "wilcoxon" (across locales only) or "t" (across seeds only).
    `holm_family` is the family Holm corrects over: "claim" (default; each claim's comparisons across every
    language set and resource level: each claim is one question of the paper) or "all" (every comparison).
    A comparison whose variants are absent from the data is skipped (status "skipped").
    `blockers(language_set, resource, variants)` (see mkd.gates) returns the reasons a comparison is not testable
    at this scale (a failed sanity gate, a degenerate model); such a comparison is reported with its numbers and
    the reasons, verdict "not testable at this scale", and stays out of the Holm family.
    """
    if primary_test not in PRIMARY_TESTS:
        raise ConfigError(f"primary_test must be one of {PRIMARY_TESTS}, got {primary_test!r}")
    if holm_family not in HOLM_FAMILIES:
        raise ConfigError(f"holm_family must be one of {HOLM_FAMILIES}, got {holm_family!r}")
    data = df if split is None or "split" not in df.columns else df[df["split"] == split]
    data = data[data["init"].isin(INITS)]  # e.g. the teacher model's own rows are no student variant
    slices = sorted({(ls, r) for ls, r in zip(data["language_set"], data["resource"])},
                    key=lambda s: (s[0], RESOURCES.index(s[1]) if s[1] in RESOURCES else 9))
    locales_by_set = {ls: sorted(g["locale"].unique()) for ls, g in data.groupby("language_set")}
    rows = []
    for spec in family_specs(slices, locales_by_set, train_locales):
        present = all(
            ((data["language_set"] == spec["language_set"]) & (data["resource"] == spec["resource"])
             & (data["init"] == v["init"]) & (data["kd"] == v["kd"])).any()
            for _, v in list(spec["combo_a"]) + list(spec["combo_b"])
        )
        label = spec.get("label") or f"{_combo_label(spec['combo_a'])} vs {_combo_label(spec['combo_b'])}"
        row = {"claim": spec["claim"], "language_set": spec["language_set"], "resource": spec["resource"],
               "locale_subset": spec["locale_subset"], "comparison": label}
        if not present:
            row["status"] = "skipped: variant missing"
            rows.append(row)
            continue
        res = contrast(data, spec["combo_a"], spec["combo_b"], spec["language_set"], spec["resource"],
                       metric=metric, split=None, locales=spec["locales"], n_resamples=n_resamples,
                       confidence=confidence, seed=seed)
        res.pop("language_set"), res.pop("resource")
        row.update(res)
        variants = [v for _, v in list(spec["combo_a"]) + list(spec["combo_b"])]
        reasons = list(blockers(spec["language_set"], spec["resource"], variants)) if blockers else []
        if res["degenerate"]:
            reasons.append(res["degenerate"])
        row["not_testable"] = "; ".join(dict.fromkeys(reasons))
        row["status"] = "ok"
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        raise MkdError("no comparison could be made: the data holds none of the variants the claims need")
    if "delta" not in out.columns:
        raise MkdError("every comparison was skipped: the data holds none of the variant pairs the claims need")
    out["primary_test"] = primary_test
    p_w = pd.to_numeric(out["p_wilcoxon"], errors="coerce")
    p_t = pd.to_numeric(out["p_t"], errors="coerce")
    # max() of a missing t p-value stays missing: "both" cannot hold without a seed-level test.
    out["p_primary"] = {"wilcoxon": p_w, "t": p_t, "both": np.fmax(p_w, p_t).where(p_t.notna())}[primary_test]
    if "not_testable" not in out.columns:
        out["not_testable"] = ""
    out["not_testable"] = out["not_testable"].fillna("")
    out.loc[out["not_testable"] != "", "p_primary"] = np.nan  # not evidence: outside the Holm family
    out["holm_family"] = holm_family
    families = out["claim"] if holm_family == "claim" else pd.Series(0, index=out.index)
    out["p_holm"] = np.nan
    out["family_size"] = 0
    for _, idx in out.groupby(families).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p_primary"].to_numpy())
        out.loc[idx, "family_size"] = int(out.loc[idx, "p_primary"].notna().sum())
    rests_on = {"both": ("rank_biserial", "t_stat"), "wilcoxon": ("rank_biserial",), "t": ("t_stat",)}[primary_test]

    def one(r) -> str:
        if r.status != "ok":
            return "skipped"
        if r.not_testable:
            return "not testable at this scale"
        return verdict(r.delta, r.ci_lo, r.ci_hi, r.p_holm, alpha, [getattr(r, k) for k in rests_on])

    out["verdict"] = [one(r) for r in out.itertuples()]
    out["alpha"] = alpha
    return out


def min_wilcoxon_p(n: int) -> float:
    """Smallest two-sided p scipy's Wilcoxon signed-rank test gives with n non-zero pairs (all of one sign):
    2 / 2**n while scipy uses the exact distribution (n <= 50), the normal approximation's value above."""
    if n <= 0:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sps.wilcoxon(np.arange(1.0, n + 1)).pvalue)


def slice_verdict(verdicts: Iterable[str]) -> str:
    """Verdict of a claim within a slice from its comparisons' verdicts.

    reproduced if every comparison is reproduced; contradicted if at least one is contradicted and none is
    reproduced; not testable at this scale if any comparison is; inconclusive (tests disagree) if a comparison's
    tests disagree and none is reproduced; otherwise inconclusive (including mixed evidence).
    """
    vs = [v for v in verdicts if v != "skipped"]
    if not vs:
        return "skipped"
    if any(v == "not testable at this scale" for v in vs):
        return "not testable at this scale"
    if all(v == "reproduced" for v in vs):
        return "reproduced"
    if any(v == "contradicted" for v in vs) and not any(v == "reproduced" for v in vs):
        return "contradicted"
    if any(v == "inconclusive (tests disagree)" for v in vs) and not any(v == "reproduced" for v in vs):
        return "inconclusive (tests disagree)"
    return "inconclusive"
