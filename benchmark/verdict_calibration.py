"""How often the analysis calls a verdict it should not, and which effects the cpu design can detect.

    python -m benchmark.verdict_calibration [--n-sim 2000] [--cells results/cpu/cells.csv]

1. The interval of the older rule (`stats.crossed_ci`) and a locale-only interval under null grids shaped like the
   cpu grid (52 locales x 3 seeds, a locale effect, a seed effect and noise), and that rule's verdict rate there.
2. The verdict rule over training runs (Welch's t over runs, two one-sided tests for "no effect"): the rate of
   "reproduced"/"contradicted" when the true effect is 0, and of "no effect" when the true |effect| is exactly
   the equivalence margin; both must stay at or under 5 %.
3. Power against seeds for the cpu design: each comparison of claims 2 and 3 with the run-to-run spread of its
   variants in a committed cells.csv; the effect detectable with 80 % power at Holm's first-step level, by
   seeds, under the rule over runs (analytic, checked by simulation) and under the older rule (simulated:
   the larger of the Wilcoxon and paired-t p over 52 locales x seeds).
tests/test_verdicts.py asserts on the same functions.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import stats as sps

from mkd.analysis.claims import verdict
from mkd.analysis.specs import Verdict
from mkd.analysis.stats import (crossed_ci, equivalence_p, exact_diff, minimum_detectable_effect, paired_t_seeds,
                                run_contrast, welch_se_df, wilcoxon_paired)

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


def run_rule_rates(true_delta: float, n_runs: int = 3, sd_a: float = 0.006, sd_b: float = 0.03,
                   margin: float = 0.02, n_sim: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Share of each verdict of the rule over runs for one comparison (no Holm) whose true effect is `true_delta`,
    with runs of a and b spread `sd_a`, `sd_b` (the cpu grid's teacher vs pretrained init: 0.4-0.6 vs 2.8-3.9 pp)."""
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for _ in range(n_sim):
        a, b = rng.normal(true_delta, sd_a, n_runs), rng.normal(0.0, sd_b, n_runs)
        c = run_contrast([(1.0, a), (-1.0, b)])
        v = verdict(c.delta, c.ci_lo, c.ci_hi, c.pvalue, alpha, (), equivalence_p(c, margin))
        counts[v.value] = counts.get(v.value, 0) + 1
    return {k: n / n_sim for k, n in counts.items()}


CLAIM_COMPARISONS = {  # (claim, Holm family size in the cpu grid): its comparisons' variants, with weights
    (2, 8): [[(1.0, ("teacher", kd)), (-1.0, ("pretrained", kd))] for kd in ("off", "on")],
    (3, 4): [[(1.0, ("teacher", "off")), (-1.0, ("pretrained", "on"))]],
}


def run_spreads(cells_csv: str, metric: str = "accuracy", split: str = "test") -> dict:
    """{(language set, resource, init, kd): (run-to-run sd of the run means, the locale x seed residual sd, the
    run means)} from a cells.csv: each run's score averaged over all its locales."""
    import pandas as pd

    df = pd.read_csv(cells_csv)
    df = df[df.split == split]
    out = {}
    for key, g in df.groupby(["language_set", "resource", "init", "kd"]):
        m = g.pivot(index="locale", columns="seed", values=metric).to_numpy()
        runs = m.mean(axis=0)
        resid = m - m.mean(axis=1, keepdims=True) - m.mean(axis=0, keepdims=True) + m.mean()
        out[key] = (float(runs.std(ddof=1)), float(resid.std(ddof=1)), runs)
    return out


def cpu_design_mde(spreads: dict, seeds=(3, 4, 5, 6, 8), alpha: float = 0.05, power: float = 0.8) -> dict:
    """{claim: {seeds: (median, max) over the claim's comparisons of the minimum detectable effect, pp}} for the
    rule over runs, at Holm's first-step level alpha / family size."""
    out = {}
    for (claim, m), combos in CLAIM_COMPARISONS.items():
        out[claim] = {}
        for n in seeds:
            mdes = []
            for (ls, res) in sorted({k[:2] for k in spreads}):
                for combo in combos:
                    se, df = welch_se_df((w, spreads[(ls, res, init, kd)][0] ** 2, n) for w, (init, kd) in combo)
                    mdes.append(100 * minimum_detectable_effect(se, df, alpha / m, power))
            out[claim][n] = (float(np.median(mdes)), float(np.max(mdes)))
    return out


def old_rule_power(effect: float, n_seeds: int, sd_run: tuple[float, float], sd_resid: tuple[float, float],
                   m: int, n_sim: int = 400, seed: int = 0, alpha: float = 0.05, n_locales: int = 52) -> float:
    """Power of the older rule (p = max of Wilcoxon across locales and paired t across seeds, at Holm's first step
    alpha / m, CI and directions as coded) for one comparison with this true effect, run spreads and locale x seed
    residuals."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_sim):
        a = effect + rng.normal(0, sd_run[0], (1, n_seeds)) + rng.normal(0, sd_resid[0], (n_locales, n_seeds))
        b = rng.normal(0, sd_run[1], (1, n_seeds)) + rng.normal(0, sd_resid[1], (n_locales, n_seeds))
        d = exact_diff(a, b)
        w = wilcoxon_paired(d.mean(axis=1), np.zeros(n_locales))
        t = paired_t_seeds(a.mean(axis=0), b.mean(axis=0))
        ci = crossed_ci(d)
        p = max(w.pvalue, t.pvalue) * m
        hits += verdict(ci.mean, ci.lo, ci.hi, p, alpha, [w.rank_biserial, t.statistic]) == Verdict.REPRODUCED
    return hits / n_sim


def old_rule_mde(n_seeds: int, sd_run, sd_resid, m: int, n_sim: int = 400, power: float = 0.8) -> float:
    """The effect (pp) the older rule detects with `power`, by bisection on old_rule_power."""
    lo, hi = 0.0, 0.6
    for _ in range(9):
        mid = (lo + hi) / 2
        if old_rule_power(mid, n_seeds, sd_run, sd_resid, m, n_sim) >= power:
            hi = mid
        else:
            lo = mid
    return 100 * hi


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-sim", type=int, default=2000)
    ap.add_argument("--cells", default="results/cpu/cells.csv", help="the cells.csv whose run spreads the power "
                                                                      "curves use")
    ap.add_argument("--old-rule-sims", type=int, default=300, help="simulations per bisection step (older rule)")
    args = ap.parse_args(argv)
    se = math.sqrt(0.05 * 0.95 / args.n_sim)
    print(f"## 1. The older rule under null grids\n\n{args.n_sim} null simulations per scenario, 52 locales x 3 "
          f"seeds; Monte Carlo SE at 5 %: {se:.3f}\n")
    print("| scenario | crossed CI coverage | locale-only CI coverage | verdict rate under the null |")
    print("|---|---:|---:|---:|")
    for name in SCENARIOS:
        c = coverage(name, args.n_sim)
        print(f"| {name} | {c['crossed']:.3f} | {c['locale_only']:.3f} | {type_one_error(name, args.n_sim):.3f} |")
    print("\n## 2. The rule over runs: false verdicts (one comparison, alpha 0.05, margin 2 pp)\n")
    print("| runs a variant | true Δ | reproduced or contradicted | no effect | inconclusive |")
    print("|---:|---:|---:|---:|---:|")
    for n in (3, 5, 6, 8):
        for delta in (0.0, 0.02, -0.02):
            r = run_rule_rates(delta, n, n_sim=args.n_sim)
            decided = r.get("reproduced", 0) + r.get("contradicted", 0)
            print(f"| {n} | {100 * delta:+.0f} pp | {decided:.3f} | {r.get('no effect', 0):.3f} | "
                  f"{r.get('inconclusive', 0):.3f} |")
    spreads = run_spreads(args.cells)
    mde = cpu_design_mde(spreads)
    print(f"\n## 3. Effect detectable with 80 % power, by seeds ({args.cells}; pp, median / largest over the "
          "claim's comparisons)\n")
    seeds = sorted(next(iter(mde.values())))
    print("| rule | claim | " + " | ".join(f"{n} seeds" for n in seeds) + " |")
    print("|---|---|" + "---:|" * len(seeds))
    for claim, by_n in mde.items():
        print(f"| over runs (analytic) | {claim} | " + " | ".join(f"{a:.1f} / {b:.1f}" for a, b in by_n.values()) + " |")
    for (claim, m), combos in CLAIM_COMPARISONS.items():
        cells = []
        for n in seeds:
            worst = []
            for (ls, res) in sorted({k[:2] for k in spreads}):
                for combo in combos:
                    (_, va), (_, vb) = combo
                    sa, sb = spreads[(ls, res, *va)], spreads[(ls, res, *vb)]
                    worst.append(old_rule_mde(n, (sa[0], sb[0]), (sa[1], sb[1]), m, args.old_rule_sims))
            cells.append(f"{np.median(worst):.1f} / {np.max(worst):.1f}")
        print(f"| older rule (simulated) | {claim} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
