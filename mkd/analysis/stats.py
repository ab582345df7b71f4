"""Statistical tests on arrays of paired scores: Wilcoxon signed-rank, paired t, Holm, the bootstrap and the
locale x seed interval.

Nothing here knows about the grid or the claims (`mkd.analysis.contrasts` applies these tests to variants of the grid,
`mkd.analysis.claims` turns them into verdicts). scipy does the numerical work; hand code only fills what scipy lacks
(rank-biserial correlation, Cohen's d_z, Holm-Bonferroni, the crossed interval, degenerate-input handling).

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
from typing import Iterable, NamedTuple, Sequence

import numpy as np
from scipy import stats as sps

from mkd.core.errors import ConfigError, MkdError


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


class RunContrast(NamedTuple):
    """A linear contrast of variant means whose replicates are training runs (each run one number: its score
    averaged over the evaluation locales), tested with Welch's unequal-variance t and Satterthwaite's df."""
    delta: float
    se: float
    df: float
    pvalue: float       # two-sided, H0: contrast = 0
    ci_lo: float
    ci_hi: float
    n_runs: tuple[int, ...]


def welch_se_df(terms: Iterable[tuple[float, float, int]]) -> tuple[float, float]:
    """Standard error and Welch-Satterthwaite df of Σ w_v mean_v from (weight, run variance, run count) per
    variant; (nan, nan) if a variant has fewer than 2 runs, df nan if the variance is 0."""
    var = dof_terms = 0.0
    for w, run_var, n in terms:
        if n < 2:
            return math.nan, math.nan
        term = w * w * run_var / n
        var += term
        dof_terms += term * term / (n - 1)
    return math.sqrt(var), (var * var / dof_terms if var > 0 else math.nan)


def run_contrast(groups: Sequence[tuple[float, Sequence[float]]], confidence: float = 0.95) -> RunContrast:
    """Σ w_v mean(runs_v) over the (weight, run scores) of each variant, unpaired: variants may have unequal run
    counts and unequal run variances (Welch-Satterthwaite). A variant with one run has no variance estimate:
    the contrast then has none either (se and p NaN)."""
    runs = [(w, _as_1d(r, "runs")) for w, r in groups]
    if any(x.size == 0 for _, x in runs):
        raise MkdError("a variant of the contrast has no runs")
    ns = tuple(x.size for _, x in runs)
    delta = sum(w * float(x.mean()) for w, x in runs)
    se, df = welch_se_df((w, float(x.var(ddof=1)) if x.size > 1 else math.nan, x.size) for w, x in runs)
    if not math.isfinite(se):
        return RunContrast(delta, math.nan, math.nan, math.nan, math.nan, math.nan, ns)
    if se == 0:
        p = 1.0 if delta == 0 else math.nan  # no run-to-run variation: no evidence either way
        return RunContrast(delta, 0.0, math.nan, p, delta, delta, ns)
    t = delta / se
    p = float(2 * sps.t.sf(abs(t), df))
    q = float(sps.t.ppf(0.5 + confidence / 2, df))
    return RunContrast(delta, se, df, p, delta - q * se, delta + q * se, ns)


def equivalence_p(c: RunContrast, margin: float) -> float:
    """Two one-sided tests (TOST) of |contrast| < margin: the larger of the two one-sided p-values; below alpha,
    the contrast is equivalent to 0 within ±margin."""
    if not (math.isfinite(c.se) and c.se > 0 and math.isfinite(c.df)):
        return math.nan
    p_lower = float(sps.t.sf((c.delta + margin) / c.se, c.df))   # H0: contrast <= -margin
    p_upper = float(sps.t.cdf((c.delta - margin) / c.se, c.df))  # H0: contrast >= +margin
    return max(p_lower, p_upper)


def minimum_detectable_effect(se: float, df: float, alpha: float, power: float = 0.8) -> float:
    """The smallest |contrast| a two-sided t test at `alpha` detects with `power`, for standard error `se`."""
    if not (math.isfinite(se) and math.isfinite(df) and df > 0):
        return math.nan
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * se)


def runs_to_decide(c: RunContrast, alpha: float, power: float = 0.8, margin: float | None = None,
                   most: int = 100) -> int | None:
    """How many runs per variant would decide the observed contrast: detect it (|Δ| >= the minimum detectable
    effect) or, where |Δ| < margin, show it equivalent to 0 within ±margin, with `power`, at the run-to-run
    variance seen now (the standard error shrinks as sqrt(n_now / n), Welch's df grows with n). None: more than
    `most`, or nothing to extrapolate from."""
    n_now = min(c.n_runs)
    if not (math.isfinite(c.se) and c.se > 0 and math.isfinite(c.df) and n_now >= 2):
        return None
    for n in range(2, most + 1):
        scale = math.sqrt(n_now / n)
        df = c.df * (n - 1) / (n_now - 1)
        se = c.se * scale
        detect = abs(c.delta) >= minimum_detectable_effect(se, df, alpha, power)
        equivalent = margin is not None and abs(c.delta) + (sps.t.ppf(1 - alpha, df) + sps.t.ppf(power, df)) * se <= margin
        if detect or equivalent:
            return n
    return None


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


def min_wilcoxon_p(n: int) -> float:
    """Smallest two-sided p scipy's Wilcoxon signed-rank test gives with n non-zero pairs (all of one sign):
    2 / 2**n while scipy uses the exact distribution (n <= 50), the normal approximation's value above."""
    if n <= 0:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sps.wilcoxon(np.arange(1.0, n + 1)).pvalue)
