"""The LaTeX tables (booktabs, via tabulate): the main table (init x KD per slice, with the floor and ceiling),
the per-locale tables and the significance table of every comparison."""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from mkd.axes import KD_SETTINGS, initializations
from mkd.analysis.claims import family_phrase
from mkd.analysis.formatting import format_num, format_p, format_pct
from mkd.analysis.cell_scores import (
    REFERENCE_COLUMNS, REFERENCE_LABELS, probe_c, variant_order, reference_means, slices_of, variant_labels,
)

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in text written outside tabulate (which escapes its own cells)."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def _latex_table(rows: list[list[str]], headers: list[str], colalign: Sequence[str] | None = None) -> str:
    from tabulate import tabulate

    # tabulate's latex_booktabs escapes & % $ # _ { } ~ ^ \ in every cell and header.
    return tabulate(rows, headers=headers, tablefmt="latex_booktabs", disable_numparse=True,
                    colalign=colalign) + "\n"


def main_table(summary: pd.DataFrame, metric: str, refs: pd.DataFrame | None = None) -> str:
    cols = slices_of(summary)
    headers = ["Init", "KD"] + [f"{ls} {res}" for ls, res in cols]
    rows = []
    for init in initializations():
        for kd in KD_SETTINGS:
            row = [init, kd]
            for ls, res in cols:
                r = summary[(summary.language_set == ls) & (summary.resource == res) & (summary.init == init)
                            & (summary.kd == kd)]
                if r.empty:
                    row.append("--")
                    continue
                r = r.iloc[0]
                row.append(format_pct(r["mean"]) + ("" if math.isnan(r["std"]) else " ± " + format_pct(r["std"])))
            rows.append(row)
    ref = reference_means(refs, metric)
    chosen = probe_c(refs)
    for name, label in REFERENCE_LABELS.items():
        if name == "chance" and metric != "accuracy":
            continue
        row = [label, ""]
        for ls, res in cols:
            r = ref[(ref.language_set == ls) & (ref.resource == res) & (ref.reference == name)]
            row.append("--" if r.empty else format_pct(float(r["mean"].iloc[0])))
        if any(c != "--" for c in row[2:]):
            rows.append(row)
        if name == "probe" and chosen:
            rows.append(["probe C (chosen on dev)", ""] + [chosen.get(c, "--") for c in cols])
    head = (f"% {metric} (%), mean ± std over seeds of the locale-averaged score; columns: language set and "
            "resource level. Reference rows: the frozen probe fitted on the column's training rows (floor; its L2 "
            "penalty C chosen on the training locales' dev rows), the teacher distilled into the column (ceiling), "
            "chance\n")
    return head + _latex_table(rows, headers, ["left", "left"] + ["right"] * len(cols))


def per_locale_tables(df: pd.DataFrame, metric: str, refs: pd.DataFrame | None = None) -> tuple[str, int]:
    """One tabular per (language_set, resource): locale x variant, seed-averaged, in %, plus an average row;
    the frozen probe and the teacher as the first columns (floor and ceiling)."""
    parts, n_rows = [], 0
    for ls, res in slices_of(df):
        sub = df[(df.language_set == ls) & (df.resource == res)]
        piv = sub.assign(variant=variant_labels(sub)) \
            .groupby(["locale", "variant"])[metric].mean().unstack("variant")
        piv = piv[[v for v in variant_order() if v in piv.columns]]
        if refs is not None and not refs.empty and metric in refs.columns:
            r = refs[(refs.language_set == ls) & (refs.resource == res) & refs.reference.isin(list(REFERENCE_COLUMNS))]
            ref_piv = r.pivot_table(index="locale", columns="reference", values=metric, aggfunc="mean")
            ref_piv = ref_piv.rename(columns=REFERENCE_COLUMNS)
            piv = ref_piv.reindex(piv.index).join(piv)
        rows = [[loc] + [format_pct(x) for x in piv.loc[loc]] for loc in piv.index]
        rows.append(["Average"] + [format_pct(x) for x in piv.mean(axis=0)])
        n_rows += len(rows)
        parts.append(f"% language set {ls}, {res} resource: {metric} (%), averaged over seeds\n"
                     f"\\noindent\\textbf{{Language set {latex_escape(ls)}, {latex_escape(res)} resource}}\\par\n"
                     + _latex_table(rows, ["Locale"] + list(piv.columns), ["left"] + ["right"] * piv.shape[1])
                     + "\\par\\medskip\n")
    return "".join(parts), n_rows


def significance_table(fam: pd.DataFrame) -> str:
    headers = ["Claim", "Set", "Res.", "Locales", "Comparison", "Delta (pp)", "95% CI (pp)", "p (runs)", "p Holm",
               "p equiv. Holm", "MDE (pp)", "r_rb", "Verdict"]
    rows = []
    for r in fam.itertuples():
        if r.status != "ok":
            rows.append([str(r.claim), r.language_set, r.resource, r.locale_subset, r.comparison] + ["--"] * 7
                        + ["skipped"])
            continue
        rows.append([
            str(r.claim), r.language_set, r.resource, r.locale_subset, r.comparison,
            format_num(100 * r.delta), f"[{format_num(100 * r.ci_lo)}, {format_num(100 * r.ci_hi)}]", format_p(r.p_runs),
            format_p(r.p_holm), format_p(r.p_equivalent_holm), format_num(100 * r.mde), format_num(r.rank_biserial),
            r.verdict,
        ])
    primary = fam["primary_test"].iloc[0]
    margin = 100 * float(fam["equivalence_margin"].iloc[0])
    head = (f"% Delta = a - b in percentage points; CI and p: Welch's t over training runs; Holm over "
            f"{family_phrase(fam)} on the {primary} p-values; p equiv.: two one-sided tests of |Delta| < {margin:g} pp, "
            "Holm-corrected; MDE: the effect detectable with 80 % power at this many runs; r_rb: rank-biserial across "
            "locales (the direction check)\n")
    return head + _latex_table(rows, headers, ["left"] * 5 + ["right"] * 7 + ["left"])
