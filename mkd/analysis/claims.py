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

from mkd.axes import HOLM_FAMILIES, KD_SETTINGS as KDS, PRIMARY_TESTS, RESOURCES, initializations
from mkd.analysis.contrasts import combo_label, contrast
from mkd.core.errors import ConfigError, MkdError
from mkd.analysis.stats import holm, min_wilcoxon_p

ENGLISH_LOCALES = frozenset({"en-US"})
# Language sets whose training locales are known without being told: trained on English only.
DEFAULT_TRAIN_LOCALES: dict[str, tuple[str, ...]] = {"en": ("en-US",)}

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

VERDICTS = ("reproduced", "contradicted", "inconclusive", "inconclusive (tests disagree)", "not testable at this scale",
            "skipped")


def _direction(x) -> int:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return 0
    return int(np.sign(x))


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
        for init in initializations():  # `init`: claim 4 is also reported per init (claim_verdicts_by_init)
            specs.append({**base, "claim": 4, "init": init, "combo_a": [(1.0, _v(init, "on"))],
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


# primary_test (one of mkd.axes.PRIMARY_TESTS) picks which p-value enters Holm and the verdict. "both":
# intersection-union test, p = max(p_wilcoxon, p_t): a comparison counts only if it is consistent across locales
# AND larger than seed noise. Wilcoxon alone on seed-averaged scores treats locales as independent replicates
# although every locale of a run shares that run's training randomness, so a lucky seed shifts all locales at
# once and reads as a "consistent" effect.
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


def _verdict_per_slice(rows: pd.DataFrame) -> dict:
    """{"language_set/resource": slice_verdict of `rows`' comparisons in that slice}."""
    return {f"{ls}/{res}": slice_verdict(g["verdict"]) for (ls, res), g in rows.groupby(["language_set", "resource"], sort=False)}


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
        out.append(f"Only {nseeds} shared seed(s) in some comparisons: the paired t-test across seeds is not defined "
                   "there.")
    skipped = fam[fam.status != "ok"]
    if not skipped.empty:
        out.append(f"{len(skipped)} comparison(s) skipped because a variant is missing from the data.")
    return out
