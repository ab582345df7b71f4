"""How often the analysis calls a verdict when there is no effect, and how often its interval covers the truth.

    python -m benchmark.verdict_calibration [--n-sim 2000]

Null grids shaped like the cpu grid (52 locales x 3 seeds), with the difference between two variants made of
a locale effect, a seed (training run) effect and noise. Prints, per scenario, the coverage of the interval the
tables print (`stats.crossed_ci`), of a locale-only interval (what a bootstrap over locales sees), and the rate
of "reproduced"/"contradicted" verdicts of the verdict rule (max of Wilcoxon and t p, crossed CI, direction
agreement). tests/test_verdicts.py asserts on the same functions.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import stats as sps

from mkd.analysis.claims import verdict
from mkd.analysis.stats import crossed_ci, exact_diff, paired_t_seeds, wilcoxon_paired

SCENARIOS = {  # sd of the locale effect, the seed effect and the noise, in accuracy units
    "seed-dominated": (0.002, 0.02, 0.005),
    "locale-dominated": (0.02, 0.001, 0.005),
    "no structure": (0.0, 0.0, 0.01),
}


def _null_difference(rng, sd_locale, sd_seed, sd_error, n_locales=52, n_seeds=3):
    return (rng.normal(0, sd_locale, (n_locales, 1)) + rng.normal(0, sd_seed, (1, n_seeds))
            + rng.normal(0, sd_error, (n_locales, n_seeds)))


def coverage(scenario: str, n_sim: int = 1000, seed: int = 0) -> dict:
    """Share of null simulations whose 95 % interval contains 0: crossed (locale x seed) and locale-only."""
    rng = np.random.default_rng(seed)
    crossed = locale_only = 0
    for _ in range(n_sim):
        d = _null_difference(rng, *SCENARIOS[scenario])
        ci = crossed_ci(d)
        crossed += ci.lo <= 0 <= ci.hi
        m = d.mean(axis=1)  # a t interval over seed-averaged locale differences: fast stand-in for the bootstrap
        locale_only += abs(m.mean()) <= sps.t.ppf(0.975, len(m) - 1) * m.std(ddof=1) / math.sqrt(len(m))
    return {"crossed": crossed / n_sim, "locale_only": locale_only / n_sim}


def type_one_error(scenario: str, n_sim: int = 1000, seed: int = 0) -> float:
    """Share of null comparisons that the verdict rule calls reproduced or contradicted (alpha 0.05, no Holm)."""
    rng = np.random.default_rng(seed)
    sd_locale, sd_seed, sd_error = SCENARIOS[scenario]
    hits = 0
    for _ in range(n_sim):
        # two variants, each with its own seed (run) effects; the locale effect is shared by design, so it cancels
        a = _null_difference(rng, 0.0, sd_seed, sd_error)
        b = _null_difference(rng, 0.0, sd_seed, sd_error)
        loc = rng.normal(0, sd_locale, (52, 1))
        a, b = 0.5 + a + loc, 0.5 + b
        d = exact_diff(a, b)
        w = wilcoxon_paired(d.mean(axis=1), np.zeros(d.shape[0]))
        t = paired_t_seeds(a.mean(axis=0), b.mean(axis=0))
        ci = crossed_ci(d)
        v = verdict(ci.mean, ci.lo, ci.hi, max(w.pvalue, t.pvalue), 0.05, [w.rank_biserial, t.statistic])
        hits += v in ("reproduced", "contradicted")
    return hits / n_sim


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-sim", type=int, default=2000)
    args = ap.parse_args(argv)
    se = math.sqrt(0.05 * 0.95 / args.n_sim)
    print(f"{args.n_sim} null simulations per scenario, 52 locales x 3 seeds; Monte Carlo SE at 5 %: {se:.3f}")
    print("| scenario | crossed CI coverage | locale-only CI coverage | verdict rate under the null |")
    print("|---|---:|---:|---:|")
    for name in SCENARIOS:
        c = coverage(name, args.n_sim)
        print(f"| {name} | {c['crossed']:.3f} | {c['locale_only']:.3f} | {type_one_error(name, args.n_sim):.3f} |")


if __name__ == "__main__":
    main()
