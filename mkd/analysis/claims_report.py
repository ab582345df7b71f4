"""claims.md: the one-screen summary (claim x slice), the sanity gates, the floor and ceiling, the verdict rule,
every comparison's numbers and which test answers which question."""

from __future__ import annotations

import pandas as pd

from mkd.analysis.claims import family_phrase
from mkd.analysis.specs import CLAIMS
from mkd.analysis.formatting import format_num, format_p, format_pct, is_missing
from mkd.analysis.cell_scores import REFERENCE_LABELS, probe_c, reference_means, summary_frame
from mkd.analysis.stats import min_wilcoxon_p

PRIMARY_DESC = {
    "runs": "Welch's t-test over training runs (each run's score averaged over the locales; unequal variances, "
            "Satterthwaite's df), the unit of replication; the Wilcoxon across locales only checks that the direction "
            "holds across languages",
    "both": "the larger of the Wilcoxon p (across locales) and the paired-t p (across seeds), an "
            "intersection-union test: an effect counts only if it is consistent across languages and larger than "
            "the run-to-run noise of training",
    "wilcoxon": "the Wilcoxon signed-rank test across locales (seed-averaged scores)",
    "t": "the paired t-test across seeds (locale-averaged scores)",
}


def _fmt_row(r) -> str:
    if r.status != "ok":
        return f"- {r.comparison} ({r.locale_subset} locales): skipped, a variant is missing from the data"
    t = ("" if is_missing(r.p_t)
         else f"; paired t over {r.n_seeds} seeds p = {format_p(r.p_t)}, d_z = {format_num(r.cohen_dz)}")
    why = f" ({r.not_testable})" if r.not_testable else ""
    runs = (f"{r.n_runs} runs a variant" if len(set(str(r.runs_per_variant).split("/"))) == 1
            else f"{r.runs_per_variant} runs per variant")
    return (f"- {r.comparison} ({r.locale_subset} locales, n = {r.n_locales}, {runs}): "
            f"Δ = {100 * r.delta:+.2f} pp, 95% CI over runs [{100 * r.ci_lo:+.2f}, {100 * r.ci_hi:+.2f}] (Welch, "
            f"df {format_num(r.df_runs)}), p = {format_p(r.p_runs)}; equivalence within ±{100 * r.equivalence_margin:g} "
            f"pp p = {format_p(r.p_equivalent)}. Descriptive: locales × seeds [{100 * r.crossed_lo:+.2f}, "
            f"{100 * r.crossed_hi:+.2f}], over locales only [{100 * r.loc_ci_lo:+.2f}, {100 * r.loc_ci_hi:+.2f}], "
            f"Wilcoxon p = {format_p(r.p_wilcoxon)}, r_rb = {format_num(r.rank_biserial)}{t}. "
            f"Holm p ({r.primary_test}) = {format_p(r.p_holm)}, equivalence Holm p = {format_p(r.p_equivalent_holm)} "
            f"→ **{r.verdict}**{why}{_undecided(r)}")


def _margin_pp(fam: pd.DataFrame) -> str:
    return f"{100 * float(fam['equivalence_margin'].iloc[0]):g}" if "equivalence_margin" in fam else "?"


def _undecided(r) -> str:
    """For an inconclusive comparison: the smallest effect the design could have detected, and the runs that
    would decide the Δ seen."""
    if not str(r.verdict).startswith("inconclusive") or is_missing(r.mde):
        return ""
    runs = r.runs_to_decide
    decide = (f"{int(runs)} runs a variant would decide Δ {100 * r.delta:+.1f}" if not is_missing(runs)
              else "more than 100 runs a variant would be needed to decide it")
    return f"; detectable with 80 % power: |Δ| ≥ {100 * r.mde:.1f} pp; {decide}"


def _summary_lines(fam: pd.DataFrame, verdicts: dict, by_init: dict | None = None) -> list[str]:
    """One screen: claim x slice -> verdict and the effect with its interval (the comparison with the smallest
    effect in the claimed direction, since a claim holds in a slice only if all its comparisons do); a claim
    in `by_init` (claim_verdicts_by_init) also gets one row per init."""
    slices = list(dict.fromkeys(f"{ls}/{res}" for ls, res in zip(fam.language_set, fam.resource)))
    by_init = by_init or {}

    def row_of(label, sub, verdict_of):
        row = [label]
        for sl in slices:
            ls, res = sl.split("/")
            g = sub[(sub.language_set == ls) & (sub.resource == res) & (sub.status == "ok")]
            if g.empty:
                row.append("—")
                continue
            weakest = g.loc[g["delta"].idxmin()]
            # the MDE of the weakest comparison still undecided (the one shown, when it is): what the design
            # could have detected where the cell's answer is open
            undecided = g[g["verdict"].str.startswith("inconclusive") & g["mde"].notna()]
            mde = (f"<br>MDE {100 * undecided.loc[undecided['delta'].idxmin(), 'mde']:.1f}"
                   if str(verdict_of[sl]).startswith("inconclusive") and not undecided.empty else "")
            row.append(f"**{verdict_of[sl]}**<br>Δ {100 * weakest.delta:+.1f} "
                       f"[{100 * weakest.ci_lo:+.1f}, {100 * weakest.ci_hi:+.1f}]{mde}")
        return row

    rows = []
    for claim in sorted(fam["claim"].unique()):
        key = str(int(claim))
        rows.append(row_of(key, fam[fam.claim == claim], verdicts[key]))
        for init, per_slice in by_init.get(key, {}).items():
            rows.append(row_of(f"{key}, {init} init", fam[(fam.claim == claim) & (fam["init"] == init)], per_slice))
    head = "| claim | " + " | ".join(slices) + " |"
    return [head, "|" + "---|" * (len(slices) + 1)] + ["| " + " | ".join(r) + " |" for r in rows]


def _gate_lines(gates) -> list[str]:
    if gates is None:
        return []
    lines = ["## Is this regime meaningful? (sanity gates, checked before any verdict)", "",
             "| gate | for | outcome | numbers |", "|---|---|---|---|"]
    lines += [f"| {g} | {scope} | {'pass' if ok == 'pass' else '**FAIL**'} | {detail} |"
              for g, scope, ok, detail in gates.summary_rows()]
    failed = [c for c in gates.checks if not c.passed]
    lines += ["", ("Every gate passed." if not failed else
                   f"{len(failed)} gate check(s) failed: every comparison resting on them is reported as "
                   "**not testable at this scale** (with its numbers) and stays out of the Holm family."), ""]
    return lines


def _reference_lines_md(refs: pd.DataFrame | None, metric: str) -> list[str]:
    ref = reference_means(refs, metric)
    if ref.empty:
        return []
    lines = ["## Floor and ceiling", "", f"Locale-averaged {metric} (%) of what every student is read against:", "",
             "| slice | frozen probe (floor) | teacher (ceiling) | chance |", "|---|---:|---:|---:|"]
    chosen = probe_c(refs)
    for (ls, res), g in ref.groupby(["language_set", "resource"], sort=False):
        val = {r.reference: format_pct(r.mean) for r in g.itertuples()}
        probe = val.get("probe", "—") + (f" (C = {chosen[ls, res]})" if (ls, res) in chosen else "")
        lines.append(f"| {ls}/{res} | {probe} | {val.get('teacher', '—')} | {val.get('chance', '—')} |")
    return lines + (["", "The probe's L2 penalty C is chosen per slice on the dev rows of its training locales "
                     "(the rows the students' model selection reads), from `probe.c_grid`; where seeds draw their own "
                     "rows, one probe per draw, averaged, their Cs joined by /."] if chosen else []) + [""]


def _mean_sd(values) -> str:
    values = pd.Series(values, dtype=float)
    return format_pct(values.mean()) + ("" if len(values) < 2 else f" ± {format_pct(values.std(ddof=1))}")


def variant_lines(df: pd.DataFrame, training: pd.DataFrame | None, refs: pd.DataFrame | None,
                  train_locales: dict, metric: str) -> list[str]:
    """"Every variant": per slice and variant its runs, the best-on-dev step (median, range) and the score (mean ±
    sd over runs) on every locale and on the training locales, with the slice's floor, ceiling and chance on the
    same locales."""
    runs_all = df.groupby(["language_set", "resource", "init", "kd", "seed"])[metric].mean()
    lines = ["## Every variant", "",
             f"{metric.capitalize()} (%), mean ± sd over each variant's training runs (a run's score averaged over "
             "the locales): on every evaluated locale and on the training locales. Best step: where on the budget "
             "the best-on-dev weights each run keeps were reached (median, range over runs). Beside each slice its "
             "frozen probe (floor), the teacher (ceiling) and chance, on the same locales.", "",
             "| slice | variant | runs | best step, median (range) | all locales % | training locales % |",
             "|---|---|---:|---|---:|---:|"]
    chosen = probe_c(refs)
    for (ls, res), sl in df.groupby(["language_set", "resource"], sort=False):
        trained = list(train_locales.get(ls, []))
        runs_train = sl[sl.locale.isin(trained)].groupby(["init", "kd", "seed"])[metric].mean()
        for v in summary_frame(sl, metric).itertuples():
            steps = ""
            if training is not None:
                t = training[(training.language_set == ls) & (training.resource == res) & (training.init == v.init)
                             & (training.kd == v.kd)]["best_step"]
                if not t.empty:
                    steps = f"{int(t.median())} ({int(t.min())}-{int(t.max())})"
            train_txt = _mean_sd(runs_train.loc[(v.init, v.kd)]) if trained and (v.init, v.kd) in runs_train.index else "—"
            lines.append(f"| {ls}/{res} | {v.variant} | {v.n_seeds} | {steps} | "
                         f"{_mean_sd(runs_all.loc[(ls, res, v.init, v.kd)])} | {train_txt} |")
        if refs is not None and not refs.empty:
            r = refs[(refs.language_set == ls) & (refs.resource == res)]
            for ref, g in r.groupby("reference", sort=False):
                label = REFERENCE_LABELS.get(ref, ref) + (f", C = {chosen[ls, res]}" if ref == "probe" and (ls, res) in chosen else "")
                on_train = g[g.locale.isin(trained)]
                lines.append(f"| {ls}/{res} | {label} | | | {format_pct(g.groupby('locale')[metric].mean().mean())} | "
                             f"{format_pct(on_train.groupby('locale')[metric].mean().mean()) if not on_train.empty else '—'} |")
    return lines + [""]


def claims_markdown(fam: pd.DataFrame, verdicts: dict, profile: str, scale_note: str, metric: str, split: str,
                    alpha: float, n_resamples: int, warnings_: list[str], gates=None, refs=None,
                    by_init: dict | None = None, curve_lines: list[str] | None = None,
                    variant_table: list[str] | None = None) -> str:
    primary = fam["primary_test"].iloc[0]
    scale = f"{profile} profile" + (f": {scale_note}" if scale_note else "")
    n_loc = int(fam.loc[fam.status == "ok", "n_locales"].max()) if (fam.status == "ok").any() else 0
    lines = [
        "# Claims check: Wibowo, Solorio & Aji (2024), \"The Privileged Students\"",
        "",
        f"**Scale:** {scale}. Results of this profile only; numbers are not comparable with the paper's "
        "absolute accuracies, only the direction and significance of the effects are checked.",
        "",
        f"Metric: {metric} on the {split} split of MASSIVE intent classification. Δ is in percentage points (pp).",
        "",
        "## Summary",
        "",
        "Verdict per claim and slice (language set / resource); Δ [95% CI over training runs] of the claim's weakest "
        "comparison, and for an inconclusive one the minimum detectable effect (MDE, pp: 80 % power at this many "
        "runs). Claim 4 also per init: the same comparisons and Holm family, so an init that cannot be tested does "
        "not hide the others' answers.",
        "",
    ]
    lines += _summary_lines(fam, verdicts, by_init) + [""]
    lines += ["Claims: " + " ".join(f"({c}) {CLAIMS[c]}" for c in sorted(CLAIMS)), ""]
    lines += _gate_lines(gates) + _reference_lines_md(refs, metric) + (variant_table or []) + (curve_lines or [])
    lines += [
        "## Verdict rule",
        "",
        f"Every claim states a direction (a > b). A comparison is **reproduced** if its mean difference Δ = a − b "
        f"is > 0, its Holm-corrected p-value is < {alpha}, its 95% CI lies entirely above 0, and the consistency "
        "checks point the same way (the rank-biserial r_rb across locales; under the older rules also the t "
        f"statistic); **contradicted** likewise with Δ < 0; **inconclusive (tests disagree)** if significant but a "
        "check points the other way (e.g. a large gain on a few locales, a loss on most); **no effect** if not "
        f"significant and the two one-sided tests of |Δ| < {_margin_pp(fam)} pp (`analysis.equivalence_margin`, "
        "declared before the run), Holm-corrected in the same family, give p < "
        f"{alpha}; **inconclusive** otherwise, with the smallest effect the design could have detected and the runs "
        "a variant that would decide the Δ seen; **not testable at this scale** if it rests on a failed sanity gate "
        f"or on a degenerate model. The p-value entering Holm is {PRIMARY_DESC[primary]}; "
        f"Holm runs over {family_phrase(fam)}. "
        "A claim is reproduced in a slice (language set × resource level) if all its comparisons there are "
        "reproduced, shows no effect if all show none, is contradicted if at least one is contradicted and none "
        "reproduced, not testable if any is, inconclusive otherwise.",
        "",
    ]
    if warnings_:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings_] + [""]
    for claim in sorted(fam["claim"].unique()):
        claim = int(claim)
        lines += [f"## Claim {claim}", "", CLAIMS[claim], ""]
        sub = fam[fam.claim == claim]
        for (ls, res), g in sub.groupby(["language_set", "resource"], sort=False):
            v = verdicts[str(claim)][f"{ls}/{res}"]
            lines.append(f"### Language set `{ls}`, {res} resource: **{v}**")
            lines.append("")
            lines += [_fmt_row(r) for r in g.itertuples()]
            lines.append("")
    lines += [
        "## Which test answers which question",
        "",
        "- **Welch's t-test over training runs** (the evidence; the interval in the summary and the tables): each "
        "run (a seed of a variant) is one number, its score averaged over the comparison's locales, and the "
        "comparison is a contrast of variant means with unequal run variances and Satterthwaite's degrees of "
        "freedom. The run is the unit of replication: 52 locales of the same few runs are not 52 replicates, and "
        "runs that share a seed id share no training randomness that matters (their run effects correlate at "
        "r ≈ 0 in the cpu results), so the test is unpaired. A comparison whose terms share a variant counts it "
        "once, with its net weight (claim 3 is teacher init, KD off − pretrained init, KD on).",
        "- **Two one-sided tests** (TOST) over the same runs against ±`analysis.equivalence_margin`: the larger "
        "one-sided p below alpha, after Holm, says the effect lies within the margin: **no effect** is a result.",
        "- **Minimum detectable effect** of an inconclusive comparison: (t(1 − α/2m) + t(0.8)) × SE over runs, at "
        "Holm's first-step level α/m for a family of m; and the runs per variant at which the Δ seen (or its "
        "equivalence, where |Δ| is inside the margin) would be decided at the run-to-run variance seen.",
        "- Descriptive, never evidence: the **interval over locales and seeds** (a two-way random-effects model of "
        "the per-(locale, seed) differences, Satterthwaite df), the **bootstrap over locales** (scipy.stats."
        f"bootstrap, BCa, {n_resamples} resamples), the **Wilcoxon signed-rank test across locales** (seed-averaged "
        "differences, exact ties kept) whose rank-biserial r_rb is the check that the direction holds across "
        "languages, rather than being carried by a few (with n locales its smallest p is 2/2^n up to n = 50; "
        f"n = {n_loc}: {min_wilcoxon_p(n_loc):.2e}), and the **paired t across seeds** with Cohen's d_z. Under "
        "`analysis.primary_test: both` (the older rule) a verdict rested on the larger of the Wilcoxon and paired-t "
        "p-values; with 3 seeds that t has 2 degrees of freedom.",
        "- **Holm-Bonferroni** within each claim (`analysis.holm_family: claim`; `all` corrects over every "
        "comparison at once): controls the chance of any false 'reproduced' or "
        "'contradicted' verdict among the testable comparisons of a claim at the stated level.",
        "- **Claim 3** tests, per locale and seed, (teacher init − pretrained init, both KD off) − (pretrained init "
        "with KD − without KD): does copying the teacher's weights buy more than distillation does?",
        "- **Claim 5** repeats the teacher-init comparisons of claims 1–2 in the low-resource setting on "
        "non-English locales only, and on locales outside the language set's training locales where those are "
        "known (the `en` language set is trained on en-US only).",
        "- Almost stochastic order (ASO) over seeds is not computed: with few seeds its estimate is mostly noise.",
        "",
    ]
    return "\n".join(lines)
