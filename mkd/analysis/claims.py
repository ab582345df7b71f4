"""The paper's claims: their text, the comparisons each rests on (`family_specs`), the whole Holm-corrected
family (`comparison_family`), the verdict rule, and what the family says per claim and slice.

Reads a tidy results frame (the input contract is in `mkd.analysis.cell_scores`); the comparisons themselves are
`mkd.analysis.contrasts.contrast`, the tests `mkd.analysis.stats`.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from mkd.axes import HOLM_FAMILIES, PRIMARY_TESTS, RESOURCES, initializations
from mkd.analysis.specs import Verdict, family_specs
from mkd.analysis.contrasts import combo_label, contrast
from mkd.core.errors import ConfigError, MkdError
from mkd.analysis.stats import (RunContrast, equivalence_p, holm, min_wilcoxon_p, minimum_detectable_effect,
                                runs_to_decide)


def _direction(x) -> int:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return 0
    return int(np.sign(x))


def verdict(delta: float, ci_lo: float, ci_hi: float, p_adj: float, alpha: float = 0.05,
            directions: Sequence[float] = (), p_equivalent: float | None = None) -> Verdict:
    """Claimed direction is delta > 0.

    reproduced: delta > 0, Holm-adjusted p < alpha and the CI entirely above 0;
    contradicted: delta < 0, Holm-adjusted p < alpha and the CI entirely below 0;
    inconclusive (tests disagree): significant, but a check the rule consults (`directions`: the Wilcoxon
    rank-biserial across locales; the t statistic under the older rules) points the other way from delta: e.g.
    +2 pp on average carried by a few locales while most locales lose;
    no effect: not significant, and the Holm-adjusted p of the two one-sided equivalence tests (`p_equivalent`)
    below alpha: the effect lies within the declared margin of 0;
    inconclusive: anything else.
    """
    if p_adj is None or not math.isfinite(p_adj):
        return Verdict.INCONCLUSIVE
    sign = _direction(delta)
    significant = p_adj < alpha and ((sign > 0 and ci_lo > 0) or (sign < 0 and ci_hi < 0))
    if not significant:
        if p_equivalent is not None and math.isfinite(p_equivalent) and p_equivalent < alpha:
            return Verdict.NO_EFFECT
        return Verdict.INCONCLUSIVE
    if any(_direction(x) != sign for x in directions):
        return Verdict.TESTS_DISAGREE
    return Verdict.REPRODUCED if sign > 0 else Verdict.CONTRADICTED


def decide_family(family: list[dict], alpha: float = 0.05) -> None:
    """Verdicts of one Holm family of run contrasts (dicts with delta, ci_lo, ci_hi, p, p_equivalent, se, df), in
    place: p_holm, p_equivalent_holm (NaN where a contrast has no test), verdict, and mde, the smallest effect the
    runs could have detected (80 % power at Holm's first step). The studies beside the grid decide this way."""
    for key in ("p", "p_equivalent"):
        ps = np.array([c[key] for c in family], dtype=float)
        adj = np.full(len(ps), np.nan)
        ok = np.isfinite(ps)
        adj[ok] = holm(ps[ok])
        for c, v in zip(family, adj):
            c[f"{key}_holm"] = float(v)
    for c in family:
        c["verdict"] = str(verdict(c["delta"], c["ci_lo"], c["ci_hi"], c["p_holm"], alpha,
                                   p_equivalent=c["p_equivalent_holm"]))
        c["mde"] = minimum_detectable_effect(c["se"], c["df"], alpha / len(family))


def slice_verdict(verdicts: Iterable[str]) -> Verdict:
    """Verdict of a claim within a slice from its comparisons' verdicts.

    reproduced if every comparison is reproduced; no effect if every comparison shows no effect; contradicted if
    at least one is contradicted and none is reproduced; not testable at this scale if any comparison is;
    inconclusive (tests disagree) if a comparison's tests disagree and none is reproduced; otherwise
    inconclusive (including mixed evidence, e.g. one comparison reproduced and one with no effect).
    """
    vs = [Verdict(v) for v in verdicts if v != Verdict.SKIPPED]
    if not vs:
        return Verdict.SKIPPED
    if Verdict.NOT_TESTABLE in vs:
        return Verdict.NOT_TESTABLE
    for every in (Verdict.REPRODUCED, Verdict.NO_EFFECT):
        if all(v == every for v in vs):
            return every
    if Verdict.REPRODUCED not in vs:
        for some in (Verdict.CONTRADICTED, Verdict.TESTS_DISAGREE):
            if some in vs:
                return some
    return Verdict.INCONCLUSIVE


# primary_test (one of mkd.axes.PRIMARY_TESTS) picks which p-value enters Holm and the verdict. "runs" (the
# default): Welch's test over training runs, the unit of replication; the Wilcoxon across locales only checks
# that the effect's direction holds across languages. The older rules, kept to compare with: "both", p =
# max(p_wilcoxon, p_t) (the t paired by seed id over the 3 seeds: 2 df, while runs sharing a seed id correlate at
# r ~ 0); "wilcoxon" alone treats 52 locales of the same few runs as independent replicates, so a lucky seed
# shifts all locales at once and reads as a "consistent" effect; "t" the paired t alone.
def comparison_family(
    df: pd.DataFrame,
    metric: str = "accuracy",
    split: str | None = "test",
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    alpha: float = 0.05,
    primary_test: str = "runs",
    train_locales: Mapping[str, Sequence[str]] | None = None,
    holm_family: str = "claim",
    blockers=None,
    equivalence_margin: float = 0.02,
    power: float = 0.8,
) -> pd.DataFrame:
    """Run the whole family of comparisons, Holm-correct it (per claim, or over all), and return a tidy frame.

    One row per comparison: claim, language_set, resource, locale_subset, comparison, a, b, delta, ci_lo, ci_hi,
    p_runs, p_wilcoxon, rank_biserial, p_t, cohen_dz, n_locales, n_seeds, p_primary, p_holm, p_equivalent,
    p_equivalent_holm, mde, runs_to_decide, verdict, ...
    `primary_test` picks which p-value enters Holm and the verdict: "runs" (default; Welch over training runs),
    or the older "both" (max of Wilcoxon and paired t), "wilcoxon" (across locales only), "t" (across seeds only).
    `equivalence_margin` (a score difference, 0.02 = 2 points) is the ±δ of "no effect": two one-sided Welch tests
    over runs, Holm-corrected in the same families. A comparison that is neither decided nor equivalent is
    inconclusive, and carries its minimum detectable effect (`mde`: power `power` at Holm's first-step level
    alpha / family size) and how many runs per variant would decide its observed Δ (`runs_to_decide`).
    `holm_family` is the family Holm corrects over: "claim" (default; each claim's comparisons across every
    language set and resource level: each claim is one question of the paper) or "all" (every comparison).
    A comparison whose variants are absent from the data is skipped (status "skipped").
    `blockers(language_set, resource, variants)` (see mkd.analysis.gates) returns the reasons a comparison is not testable
    at this scale (a failed sanity gate, a degenerate model); such a comparison is reported with its numbers and
    the reasons, verdict "not testable at this scale", and stays out of the Holm family.
    """
    if primary_test not in PRIMARY_TESTS:
        raise ConfigError(f"primary_test must be one of {PRIMARY_TESTS}, got {primary_test!r}")
    if holm_family not in HOLM_FAMILIES:
        raise ConfigError(f"holm_family must be one of {HOLM_FAMILIES}, got {holm_family!r}")
    data = df if split is None or "split" not in df.columns else df[df["split"] == split]
    data = data[data["init"].isin(initializations())]  # e.g. the teacher model's own rows are no student variant
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
        label = spec.get("label") or f"{combo_label(spec['combo_a'])} vs {combo_label(spec['combo_b'])}"
        row = {"claim": spec["claim"], "language_set": spec["language_set"], "resource": spec["resource"],
               "locale_subset": spec["locale_subset"], "comparison": label, "init": spec.get("init", "")}
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
    out["p_primary"] = {"runs": pd.to_numeric(out["p_runs"], errors="coerce"), "wilcoxon": p_w, "t": p_t,
                        "both": np.fmax(p_w, p_t).where(p_t.notna())}[primary_test]
    out["p_equivalent"] = [
        equivalence_p(_run_contrast_of(r), equivalence_margin) if r.status == "ok" else np.nan
        for r in out.itertuples()]
    if "not_testable" not in out.columns:
        out["not_testable"] = ""
    out["not_testable"] = out["not_testable"].fillna("")
    untestable = out["not_testable"] != ""
    out.loc[untestable, ["p_primary", "p_equivalent"]] = np.nan  # not evidence: outside the Holm family
    out["holm_family"] = holm_family
    families = out["claim"] if holm_family == "claim" else pd.Series(0, index=out.index)
    out["p_holm"] = np.nan
    out["p_equivalent_holm"] = np.nan
    out["family_size"] = 0
    for _, idx in out.groupby(families).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p_primary"].to_numpy())
        out.loc[idx, "p_equivalent_holm"] = holm(out.loc[idx, "p_equivalent"].to_numpy())
        out.loc[idx, "family_size"] = int(out.loc[idx, "p_primary"].notna().sum())
    rests_on = {"runs": ("rank_biserial",), "both": ("rank_biserial", "t_stat"), "wilcoxon": ("rank_biserial",),
                "t": ("t_stat",)}[primary_test]
    level = alpha / out["family_size"].clip(lower=1)  # Holm's first step: what a comparison must beat at worst
    out["mde"] = [minimum_detectable_effect(r.se_runs, r.df_runs, a, power) if r.status == "ok" else np.nan
                  for r, a in zip(out.itertuples(), level)]
    out["runs_to_decide"] = [runs_to_decide(_run_contrast_of(r), a, power, equivalence_margin) if r.status == "ok"
                             else None for r, a in zip(out.itertuples(), level)]

    def one(r) -> Verdict:
        if r.status != "ok":
            return Verdict.SKIPPED
        if r.not_testable:
            return Verdict.NOT_TESTABLE
        equivalent = r.p_equivalent_holm if primary_test == "runs" else None
        return verdict(r.delta, r.ci_lo, r.ci_hi, r.p_holm, alpha, [getattr(r, k) for k in rests_on], equivalent)

    out["verdict"] = [one(r).value for r in out.itertuples()]
    out["alpha"] = alpha
    out["equivalence_margin"] = equivalence_margin
    out["power"] = power
    return out


def _run_contrast_of(r) -> RunContrast:
    """The run-level contrast of a family row (its delta, standard error, df and run count)."""
    n = int(r.n_runs) if isinstance(r.n_runs, (int, float)) and math.isfinite(r.n_runs) else 0
    return RunContrast(r.delta, r.se_runs, r.df_runs, r.p_runs, r.ci_lo, r.ci_hi, (n,))


def _verdict_per_slice(rows: pd.DataFrame) -> dict:
    """{"language_set/resource": slice_verdict of `rows`' comparisons in that slice}."""
    return {f"{ls}/{res}": slice_verdict(g["verdict"]).value
            for (ls, res), g in rows.groupby(["language_set", "resource"], sort=False)}


def claim_verdicts(fam: pd.DataFrame) -> dict:
    """{claim: {"language_set/resource": verdict of the claim in that slice}}."""
    return {str(int(claim)): _verdict_per_slice(fam[fam.claim == claim]) for claim in sorted(fam["claim"].unique())}


# Claim 4 asks "does KD help?" once per init; its slice verdict needs every init's answer, so one init that
# cannot be tested (say, random init at chance) makes the whole slice "not testable". Per init, the other answers
# stay readable: the same comparisons, the same Holm family, only grouped by init.
PER_INIT_CLAIMS = (4,)


def claim_verdicts_by_init(fam: pd.DataFrame) -> dict:
    """{claim: {init: {"language_set/resource": verdict}}} for the claims in PER_INIT_CLAIMS."""
    out: dict = {}
    for claim in PER_INIT_CLAIMS:
        sub = fam[(fam.claim == claim) & (fam["init"] != "")]
        if sub.empty:
            continue
        out[str(claim)] = {init: _verdict_per_slice(by_init) for init, by_init in sub.groupby("init", sort=False)}
    return out


def family_sizes(fam: pd.DataFrame) -> dict:
    """{claim: comparisons Holm corrects over}, or {"all": n} when the family is every comparison."""
    if fam["holm_family"].iloc[0] == "all":
        return {"all": int(fam["family_size"].iloc[0])}
    return {str(int(c)): int(g["family_size"].iloc[0]) for c, g in fam.groupby("claim")}


def family_phrase(fam: pd.DataFrame) -> str:
    """What Holm corrects over, in words, for the tables and claims.md."""
    sizes = family_sizes(fam)
    if "all" in sizes:
        return f"the whole family of {sizes['all']} comparisons (all claims, language sets and resource levels)"
    return ("each claim's comparisons across all language sets and resource levels (family sizes: "
            + ", ".join(f"claim {c}: {m}" for c, m in sizes.items()) + ")")


def scale_warnings(fam: pd.DataFrame, alpha: float) -> list[str]:
    """What the scale of the grid rules out before any effect is looked at: a Wilcoxon floor that Holm lifts
    above alpha, too few seeds for the t-test, comparisons skipped for a missing variant."""
    out = []
    ok = fam[fam.status == "ok"]
    if ok.empty:
        return out
    m = int(fam["family_size"].max())
    if fam["primary_test"].iloc[0] in ("wilcoxon", "both"):
        n = int(ok["n_locales"].max())
        floor = min_wilcoxon_p(n)
        if m * floor >= alpha:
            out.append(
                f"With at most {n} locales the smallest possible Wilcoxon p is {floor:.4g}; Holm over {m} "
                f"comparisons multiplies the smallest by {m}, giving ≥ {m * floor:.3g} ≥ {alpha}: no comparison can be "
                "reproduced or contradicted at this scale, whatever the effect. Evaluate on more locales (all 52 of "
                "MASSIVE)."
            )
    nseeds = int(ok["n_seeds"].min())
    if nseeds < 2:
        out.append(f"Only {nseeds} run(s) of a variant in some comparisons: run-to-run variance, and so every test "
                   "over runs, is not defined there.")
    skipped = fam[fam.status != "ok"]
    if not skipped.empty:
        out.append(f"{len(skipped)} comparison(s) skipped because a variant is missing from the data.")
    return out
