"""Analysis report: tables, figures, claims check and machine-readable numbers from the grid's `cells.csv`.

Input contract (long format, one row per trained cell x seed x split x locale):
    profile, cell, language_set, resource, init, kd, seed, split, locale, accuracy, macro_f1
resource in {low, high}; init in {random, pretrained, teacher} (other init values, e.g. the teacher model
itself as "teacher_model", are ignored); kd in {off, on}; scores in [0, 1]. No average rows: averages are
computed here. Only results are read: no training code is imported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from mkd import stats as S
from mkd.atomic import atomic_path, write_json, write_text
from mkd.axes import METRICS
from mkd.errors import ConfigError, DataError

REQUIRED_COLUMNS = (
    "profile", "cell", "language_set", "resource", "init", "kd", "seed", "split", "locale", "accuracy", "macro_f1",
)
RUN_KEY = ["language_set", "resource", "init", "kd", "seed"]
ROW_KEY = ["profile", "language_set", "resource", "init", "kd", "seed", "split", "locale"]
# Every init x KD setting of the registry gets a label: a new init can never lose its rows here.
SHORT = {(i, k): i + ("+KD" if k == "on" else "") for i in S.INITS for k in S.KDS}
VARIANT_ORDER = [SHORT[(i, k)] for i in S.INITS for k in S.KDS]
PRIMARY_DESC = {
    "both": "the larger of the Wilcoxon p (across locales) and the paired-t p (across seeds), an "
            "intersection-union test: an effect counts only if it is consistent across languages and larger than "
            "the run-to-run noise of training",
    "wilcoxon": "the Wilcoxon signed-rank test across locales (seed-averaged scores)",
    "t": "the paired t-test across seeds (locale-averaged scores)",
}
OUTPUT_FILES = (
    "main_table.tex", "per_locale_table.tex", "significance_table.tex",
    "fig_heatmap.pdf", "fig_heatmap.png", "fig_variants.pdf", "fig_variants.png",
    "fig_resource.pdf", "fig_resource.png", "claims.md", "stats.json", "summary.csv",
)

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in text written outside tabulate (which escapes its own cells)."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


# --------------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------------


def load_cells(cells_csv: Path, profile: str | None = None, metric: str = "accuracy",
               split: str = "test") -> pd.DataFrame:
    """Read and validate `cells.csv`; return the rows of the three student inits on `split`.

    Raises DataError naming the problem for: a missing or empty file, missing columns, several profiles (or one
    other than `profile`), unknown resource/kd values, non-numeric or out-of-range scores, duplicate rows, and a
    run whose locales differ from the other runs of its language set.
    """
    cells_csv = Path(cells_csv)
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {METRICS}, got {metric!r}")
    if not cells_csv.is_file():
        raise DataError(f"results file not found: {cells_csv}; run the grid first")
    try:
        df = pd.read_csv(cells_csv, dtype={"profile": str, "cell": str, "language_set": str, "resource": str,
                                           "init": str, "kd": str, "split": str, "locale": str})
    except pd.errors.EmptyDataError:
        raise DataError(f"{cells_csv} is empty (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{cells_csv} is not a readable CSV: {e}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{cells_csv} lacks column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")
    if df.empty:
        raise DataError(f"{cells_csv} has a header but no rows")
    profiles = sorted(df["profile"].dropna().astype(str).unique())
    if len(profiles) != 1:
        raise DataError(
            f"{cells_csv} holds {len(profiles)} profiles ({', '.join(profiles) or 'none'}); results of different "
            "profiles must never be mixed: analyse one profile's cells.csv at a time"
        )
    if profile is not None and profiles[0] != profile:
        raise DataError(f"{cells_csv} holds profile {profiles[0]!r}, but the analysis was asked for {profile!r}")
    key_cols = ["language_set", "resource", "init", "kd", "split", "locale", "seed"]
    nulls = [c for c in key_cols if df[c].isna().any()]
    if nulls:
        raise DataError(f"{cells_csv} has empty values in column(s) {', '.join(nulls)}")
    df = df[df["init"].isin(S.INITS)].copy()  # the teacher model's own rows etc. are not student variants
    if df.empty:
        raise DataError(f"{cells_csv} has no student rows (init in {', '.join(S.INITS)})")
    for col, allowed in (("resource", S.RESOURCES), ("kd", S.KDS)):
        bad = sorted(set(df[col]) - set(allowed))
        if bad:
            raise DataError(f"{cells_csv}: column {col} has value(s) {', '.join(map(repr, bad))}; allowed: "
                            f"{', '.join(allowed)}")
    seeds = pd.to_numeric(df["seed"], errors="coerce")
    if seeds.isna().any() or (seeds != seeds.round()).any():
        raise DataError(f"{cells_csv}: column seed must hold integers")
    df["seed"] = seeds.astype(int)
    for m in METRICS:
        vals = pd.to_numeric(df[m], errors="coerce")
        if m == metric and vals.isna().any():
            bad = df.loc[vals.isna(), "cell"].astype(str).unique()[:3]
            raise DataError(f"{cells_csv}: column {m} has missing or non-numeric values (cell(s) {', '.join(bad)})")
        if ((vals < 0) | (vals > 1)).any():
            bad = df.loc[(vals < 0) | (vals > 1), "cell"].astype(str).unique()[:3]
            raise DataError(f"{cells_csv}: column {m} must lie in [0, 1] (a fraction, not a percentage); "
                            f"offending cell(s): {', '.join(bad)}")
        df[m] = vals
    dup = df.duplicated(ROW_KEY, keep=False)
    if dup.any():
        ex = df.loc[dup, ROW_KEY].drop_duplicates().head(3)
        desc = "; ".join(", ".join(f"{k}={r[k]}" for k in ROW_KEY[1:]) for _, r in ex.iterrows())
        raise DataError(f"{cells_csv} has {int(dup.sum())} duplicate rows for the same run, split and locale "
                        f"(e.g. {desc}); each run must be reported once")
    splits = sorted(df["split"].unique())
    df = df[df["split"] == split]
    if df.empty:
        raise DataError(f"{cells_csv} has no rows for split {split!r}; splits present: {', '.join(splits)}")
    for ls, g in df.groupby("language_set"):
        expected = set(g["locale"])
        for key, run in g.groupby(RUN_KEY):
            lack = sorted(expected - set(run["locale"]))
            if lack:
                cell = ", ".join(sorted(run["cell"].astype(str).unique()))
                shown = ", ".join(lack[:8]) + (f" and {len(lack) - 8} more" if len(lack) > 8 else "")
                raise DataError(
                    f"{cells_csv}: cell {cell} (language set {key[0]}, {key[1]} resource, init {key[2]}, KD {key[3]}, "
                    f"seed {key[4]}) lacks {len(lack)} locale(s) on {split} that other runs of language set {ls} "
                    f"have: {shown}; rerun its evaluation"
                )
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Aggregates
# --------------------------------------------------------------------------------------------------


def _slices(df: pd.DataFrame) -> list[tuple[str, str]]:
    pairs = {(ls, r) for ls, r in zip(df["language_set"], df["resource"])}
    return sorted(pairs, key=lambda s: (s[0], S.RESOURCES.index(s[1])))


def seed_level(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per run: the locale-averaged score."""
    out = df.groupby(RUN_KEY, as_index=False)[metric].mean()
    out["variant"] = [SHORT[(i, k)] for i, k in zip(out["init"], out["kd"])]
    return out


def summary_frame(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (language_set, resource, init, kd): mean/std over seeds of the locale-averaged score, in [0, 1]."""
    sl = seed_level(df, metric)
    g = sl.groupby(["language_set", "resource", "init", "kd"])[metric]
    out = g.agg(mean="mean", std=lambda x: float(x.std(ddof=1)) if len(x) > 1 else float("nan"),
                n_seeds="count").reset_index()
    nloc = df.groupby(["language_set", "resource", "init", "kd"])["locale"].nunique().rename("n_locales")
    loc_means = df.groupby(["language_set", "resource", "init", "kd", "locale"])[metric].mean()
    worst = loc_means.groupby(["language_set", "resource", "init", "kd"]).agg(["min", "max"])
    worst.columns = ["locale_min", "locale_max"]
    out = out.merge(nloc.reset_index(), on=["language_set", "resource", "init", "kd"])
    out = out.merge(worst.reset_index(), on=["language_set", "resource", "init", "kd"])
    out["variant"] = [SHORT[(i, k)] for i, k in zip(out["init"], out["kd"])]
    out["metric"] = metric
    order = {v: n for n, v in enumerate(VARIANT_ORDER)}
    out["_o"] = out["variant"].map(order)
    out["_r"] = out["resource"].map(S.RESOURCES.index)
    return out.sort_values(["language_set", "_r", "_o"]).drop(columns=["_o", "_r"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def _pct(x: float, digits: int = 1) -> str:
    return "--" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def _pval(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "--"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _num(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "--"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def _latex_table(rows: list[list[str]], headers: list[str], colalign: Sequence[str] | None = None) -> str:
    from tabulate import tabulate

    # tabulate's latex_booktabs escapes & % $ # _ { } ~ ^ \ in every cell and header.
    return tabulate(rows, headers=headers, tablefmt="latex_booktabs", disable_numparse=True,
                    colalign=colalign) + "\n"


REFERENCE_LABELS = {"probe": "frozen probe (floor)", "teacher": "teacher (ceiling)", "chance": "chance"}
REFERENCE_COLUMNS = {"probe": "probe", "teacher": "teacher model"}  # their column names beside the variants


def reference_means(refs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (language_set, resource, reference): the locale-averaged score of the probe, the teacher and chance."""
    if refs is None or refs.empty:
        return pd.DataFrame(columns=["language_set", "resource", "reference", "mean"])
    value = "accuracy" if metric not in refs.columns else metric
    return (refs.groupby(["language_set", "resource", "reference"])[value].mean().rename("mean").reset_index())


def main_table(summary: pd.DataFrame, metric: str, refs: pd.DataFrame | None = None) -> str:
    cols = _slices(summary)
    headers = ["Init", "KD"] + [f"{ls} {res}" for ls, res in cols]
    rows = []
    for init in S.INITS:
        for kd in S.KDS:
            row = [init, kd]
            for ls, res in cols:
                r = summary[(summary.language_set == ls) & (summary.resource == res) & (summary.init == init)
                            & (summary.kd == kd)]
                if r.empty:
                    row.append("--")
                    continue
                r = r.iloc[0]
                row.append(_pct(r["mean"]) + ("" if math.isnan(r["std"]) else " ± " + _pct(r["std"])))
            rows.append(row)
    ref = reference_means(refs, metric)
    for name, label in REFERENCE_LABELS.items():
        if name == "chance" and metric != "accuracy":
            continue
        row = [label, ""]
        for ls, res in cols:
            r = ref[(ref.language_set == ls) & (ref.resource == res) & (ref.reference == name)]
            row.append("--" if r.empty else _pct(float(r["mean"].iloc[0])))
        if any(c != "--" for c in row[2:]):
            rows.append(row)
    head = (f"% {metric} (%), mean ± std over seeds of the locale-averaged score; columns: language set and "
            "resource level. Reference rows: the frozen probe fitted on the column's training rows (floor), the "
            "teacher distilled into the column (ceiling), chance\n")
    return head + _latex_table(rows, headers, ["left", "left"] + ["right"] * len(cols))


def per_locale_tables(df: pd.DataFrame, metric: str, refs: pd.DataFrame | None = None) -> tuple[str, int]:
    """One tabular per (language_set, resource): locale x variant, seed-averaged, in %, plus an average row;
    the frozen probe and the teacher as the first columns (floor and ceiling)."""
    parts, n_rows = [], 0
    for ls, res in _slices(df):
        sub = df[(df.language_set == ls) & (df.resource == res)]
        piv = sub.assign(variant=[SHORT[(i, k)] for i, k in zip(sub["init"], sub["kd"])]) \
            .groupby(["locale", "variant"])[metric].mean().unstack("variant")
        piv = piv[[v for v in VARIANT_ORDER if v in piv.columns]]
        if refs is not None and not refs.empty and metric in refs.columns:
            r = refs[(refs.language_set == ls) & (refs.resource == res) & refs.reference.isin(list(REFERENCE_COLUMNS))]
            ref_piv = r.pivot_table(index="locale", columns="reference", values=metric, aggfunc="mean")
            ref_piv = ref_piv.rename(columns=REFERENCE_COLUMNS)
            piv = ref_piv.reindex(piv.index).join(piv)
        rows = [[loc] + [_pct(x) for x in piv.loc[loc]] for loc in piv.index]
        rows.append(["Average"] + [_pct(x) for x in piv.mean(axis=0)])
        n_rows += len(rows)
        parts.append(f"% language set {ls}, {res} resource: {metric} (%), averaged over seeds\n"
                     f"\\noindent\\textbf{{Language set {latex_escape(ls)}, {latex_escape(res)} resource}}\\par\n"
                     + _latex_table(rows, ["Locale"] + list(piv.columns), ["left"] + ["right"] * piv.shape[1])
                     + "\\par\\medskip\n")
    return "".join(parts), n_rows


def significance_table(fam: pd.DataFrame) -> str:
    headers = ["Claim", "Set", "Res.", "Locales", "Comparison", "Delta (pp)", "95% CI (pp)", "p (Wilcoxon)",
               "p (t, seeds)", "p Holm", "r_rb", "d_z", "Verdict"]
    rows = []
    for r in fam.itertuples():
        if r.status != "ok":
            rows.append([str(r.claim), r.language_set, r.resource, r.locale_subset, r.comparison] + ["--"] * 7
                        + ["skipped"])
            continue
        rows.append([
            str(r.claim), r.language_set, r.resource, r.locale_subset, r.comparison,
            _num(100 * r.delta), f"[{_num(100 * r.ci_lo)}, {_num(100 * r.ci_hi)}]", _pval(r.p_wilcoxon),
            _pval(r.p_t), _pval(r.p_holm), _num(r.rank_biserial), _num(r.cohen_dz), r.verdict,
        ])
    primary = fam["primary_test"].iloc[0]
    head = (f"% Delta = a - b in percentage points; CI: bootstrap over locales; Holm over {_family_phrase(fam)} "
            f"on the {primary} p-values (both = max of Wilcoxon and t); r_rb: matched-pairs rank-biserial; d_z: Cohen's d_z over seeds\n")
    return head + _latex_table(rows, headers, ["left"] * 5 + ["right"] * 7 + ["left"])


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def _save(fig, out_dir: Path, stem: str) -> list[str]:
    names = []
    for fmt in ("pdf", "png"):
        with atomic_path(out_dir / f"{stem}.{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=150 if fmt == "png" else None, bbox_inches="tight")
        names.append(f"{stem}.{fmt}")
    return names


def _reference_lines(ax, ref: pd.DataFrame, ls: str, resources: Sequence[str]) -> None:
    """Horizontal lines for the floor (frozen probe), the ceiling (teacher) and chance of one language set."""
    styles = {"teacher": ("tab:green", "-"), "probe": ("tab:gray", "--"), "chance": ("black", ":")}
    for name, (color, style) in styles.items():
        for res in resources:
            r = ref[(ref.language_set == ls) & (ref.resource == res) & (ref.reference == name)]
            if r.empty:
                continue
            label = REFERENCE_LABELS[name] + (f" ({res})" if name == "probe" and len(resources) > 1 else "")
            alpha = 1.0 if res == resources[-1] else 0.5
            ax.axhline(100 * float(r["mean"].iloc[0]), color=color, linestyle=style, linewidth=1, alpha=alpha, label=label)
            if name != "probe":
                break  # teacher and chance are the same for every resource level


def make_figures(df: pd.DataFrame, out_dir: Path, metric: str, seed: int = 0, refs: pd.DataFrame | None = None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    written = []
    slices = _slices(df)
    multi = len(slices) > 1
    ref = reference_means(refs, metric)

    # Heatmap: locale x variant (columns prefixed by slice when several), seed-averaged, in %.
    d = df.assign(variant=[SHORT[(i, k)] for i, k in zip(df["init"], df["kd"])])
    d["column"] = [f"{ls}/{r}: {v}" if multi else v for ls, r, v in zip(d.language_set, d.resource, d.variant)]
    if refs is not None and not refs.empty and metric in refs.columns:
        r = refs[refs.reference.isin(list(REFERENCE_COLUMNS))]
        r = r[[(ls, res) in set(slices) for ls, res in zip(r.language_set, r.resource)]]
        r = r.assign(variant=r["reference"].map(REFERENCE_COLUMNS))
        r["column"] = [f"{ls}/{res}: {v}" if multi else v for ls, res, v in zip(r.language_set, r.resource, r.variant)]
        d = pd.concat([d, r[["locale", "column", metric]]], ignore_index=True)
    piv = d.groupby(["locale", "column"])[metric].mean().unstack("column") * 100
    col_order = [f"{ls}/{r}: {v}" if multi else v for ls, r in slices for v in list(REFERENCE_COLUMNS.values()) + VARIANT_ORDER]
    piv = piv[[c for c in col_order if c in piv.columns]]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * piv.shape[1] + 3), max(4.0, 0.28 * piv.shape[0] + 2)))
    sns.heatmap(piv, ax=ax, cmap="viridis", annot=piv.shape[0] * piv.shape[1] <= 200, fmt=".1f",
                cbar_kws={"label": f"{metric} (%)"})
    ax.set_xlabel("variant")
    ax.set_ylabel("locale")
    ax.set_title(f"Per-locale {metric} (seed-averaged)")
    written += _save(fig, out_dir, "fig_heatmap")
    plt.close(fig)

    # Bar plot: variants with 95% CIs over seeds (locale-averaged scores per seed).
    sl = seed_level(df, metric)
    sl["score"] = sl[metric] * 100
    sets = sorted(sl["language_set"].unique())
    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 4.2), squeeze=False, sharey=True)
    for ax, ls in zip(axes[0], sets):
        sub = sl[sl.language_set == ls]
        sns.barplot(data=sub, x="variant", y="score", hue="resource", order=VARIANT_ORDER,
                    hue_order=[r for r in S.RESOURCES if r in set(sub.resource)], errorbar=("ci", 95),
                    seed=seed, ax=ax, capsize=0.1)
        _reference_lines(ax, ref, ls, [r for r in S.RESOURCES[::-1] if r in set(sub.resource)])
        ax.set_title(f"language set {ls}")
        ax.set_ylabel(f"{metric} (%), locale average")
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize="x-small")
    fig.suptitle("Variants (bars: mean over seeds; whiskers: 95% bootstrap CI over seeds; lines: teacher, frozen probe, chance)")
    fig.tight_layout()
    written += _save(fig, out_dir, "fig_variants")
    plt.close(fig)

    # Low vs high resource per variant.
    fig, axes = plt.subplots(1, len(sets), figsize=(6.0 * len(sets), 4.2), squeeze=False, sharey=True)
    for ax, ls in zip(axes[0], sets):
        sub = sl[sl.language_set == ls]
        sns.pointplot(data=sub, x="resource", y="score", hue="variant", hue_order=VARIANT_ORDER,
                      order=[r for r in ("low", "high") if r in set(sub.resource)], errorbar=("ci", 95),
                      seed=seed, dodge=0.3, ax=ax)
        _reference_lines(ax, ref, ls, [r for r in S.RESOURCES[::-1] if r in set(sub.resource)])
        ax.set_title(f"language set {ls}: low vs high resource")
        ax.set_ylabel(f"{metric} (%), locale average")
        ax.legend(fontsize="x-small", title="variant")
    fig.tight_layout()
    written += _save(fig, out_dir, "fig_resource")
    plt.close(fig)
    return written


# --------------------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------------------


def _claim_verdicts(fam: pd.DataFrame) -> dict:
    out: dict = {}
    for claim in sorted(fam["claim"].unique()):
        sub = fam[fam.claim == claim]
        per = {}
        for (ls, res), g in sub.groupby(["language_set", "resource"], sort=False):
            per[f"{ls}/{res}"] = S.slice_verdict(g["verdict"])
        out[str(int(claim))] = per
    return out


def _fmt_row(r) -> str:
    if r.status != "ok":
        return f"- {r.comparison} ({r.locale_subset} locales): skipped, a variant is missing from the data"
    t = ("" if r.p_t is None or (isinstance(r.p_t, float) and math.isnan(r.p_t))
         else f"; paired t over {r.n_seeds} seeds p = {_pval(r.p_t)}, d_z = {_num(r.cohen_dz)}")
    why = f" ({r.not_testable})" if r.not_testable else ""
    return (f"- {r.comparison} ({r.locale_subset} locales, n = {r.n_locales}): "
            f"Δ = {100 * r.delta:+.2f} pp, 95% CI [{100 * r.ci_lo:+.2f}, {100 * r.ci_hi:+.2f}] (locales × seeds; "
            f"over locales only [{100 * r.loc_ci_lo:+.2f}, {100 * r.loc_ci_hi:+.2f}]), "
            f"Wilcoxon p = {_pval(r.p_wilcoxon)}, r_rb = {_num(r.rank_biserial)}{t}, "
            f"Holm p ({r.primary_test}) = {_pval(r.p_holm)} → **{r.verdict}**{why}")


def _summary_lines(fam: pd.DataFrame, verdicts: dict) -> list[str]:
    """One screen: claim x slice -> verdict and the effect with its interval (the comparison with the smallest
    effect in the claimed direction, since a claim holds in a slice only if all its comparisons do)."""
    slices = list(dict.fromkeys(f"{ls}/{res}" for ls, res in zip(fam.language_set, fam.resource)))
    rows = []
    for claim in sorted(fam["claim"].unique()):
        row = [f"{int(claim)}"]
        for sl in slices:
            ls, res = sl.split("/")
            g = fam[(fam.claim == claim) & (fam.language_set == ls) & (fam.resource == res) & (fam.status == "ok")]
            if g.empty:
                row.append("—")
                continue
            weakest = g.loc[g["delta"].idxmin()]
            row.append(f"**{verdicts[str(int(claim))][sl]}**<br>Δ {100 * weakest.delta:+.1f} "
                       f"[{100 * weakest.ci_lo:+.1f}, {100 * weakest.ci_hi:+.1f}]")
        rows.append(row)
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
    for (ls, res), g in ref.groupby(["language_set", "resource"], sort=False):
        val = {r.reference: _pct(r.mean) for r in g.itertuples()}
        lines.append(f"| {ls}/{res} | {val.get('probe', '—')} | {val.get('teacher', '—')} | {val.get('chance', '—')} |")
    return lines + [""]


def claims_markdown(fam: pd.DataFrame, verdicts: dict, profile: str, scale_note: str, metric: str, split: str,
                    alpha: float, n_resamples: int, warnings_: list[str], gates=None, refs=None) -> str:
    primary = fam["primary_test"].iloc[0]
    scale = f"{profile} profile" + (f": {scale_note}" if scale_note else "")
    n_loc = int(fam.loc[fam.status == "ok", "n_locales"].max()) if (fam.status == "ok").any() else 0
    lines = [
        f"# Claims check: Wibowo, Solorio & Aji (2024), \"The Privileged Students\"",
        "",
        f"**Scale:** {scale}. Results of this profile only; numbers are not comparable with the paper's "
        "absolute accuracies, only the direction and significance of the effects are checked.",
        "",
        f"Metric: {metric} on the {split} split of MASSIVE intent classification. Δ is in percentage points (pp).",
        "",
        "## Summary",
        "",
        "Verdict per claim and slice (language set / resource); Δ [95% CI] of the claim's weakest comparison "
        "(the interval covers locale and seed variation).",
        "",
    ]
    lines += _summary_lines(fam, verdicts) + [""]
    lines += ["Claims: " + " ".join(f"({c}) {S.CLAIMS[c]}" for c in sorted(S.CLAIMS)), ""]
    lines += _gate_lines(gates) + _reference_lines_md(refs, metric)
    lines += [
        "## Verdict rule",
        "",
        f"Every claim states a direction (a > b). A comparison is **reproduced** if its mean difference Δ = a − b "
        f"is > 0, its Holm-corrected p-value is < {alpha}, its 95% CI (locales × seeds) lies entirely above 0, and "
        "every test the p-value rests on points the same way (Wilcoxon: the rank-biserial r_rb; t: the t statistic); "
        f"**contradicted** likewise with Δ < 0; **inconclusive (tests disagree)** if significant but a test points "
        "the other way (e.g. a large gain on a few locales, a loss on most); **inconclusive** otherwise; "
        "**not testable at this scale** if it rests on a failed sanity gate or on a degenerate model. "
        f"The p-value entering Holm is {PRIMARY_DESC[primary]}; "
        f"Holm runs over {_family_phrase(fam)}. "
        "A claim is reproduced in a slice (language set × resource level) if all its comparisons there are "
        "reproduced, contradicted if at least one is contradicted and none reproduced, not testable if any is, "
        "inconclusive otherwise.",
        "",
    ]
    if warnings_:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings_] + [""]
    for claim in sorted(fam["claim"].unique()):
        claim = int(claim)
        lines += [f"## Claim {claim}", "", S.CLAIMS[claim], ""]
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
        "- **95% CI of Δ over locales and seeds** (the interval in the summary and the tables): a two-way "
        "random-effects model of the per-(locale, seed) differences, d = μ + locale + seed + error; its variance "
        "(MS_locale + MS_seed − MS_error) / (L·S) counts both the spread across languages and the run-to-run noise "
        "of training, with Satterthwaite degrees of freedom (few seeds → wide interval). Its coverage is checked by "
        "simulation in the tests. The bootstrap over locales alone (scipy.stats.bootstrap, BCa, "
        f"{n_resamples} resamples) is shown beside it: it ignores seed noise and is too narrow when seeds matter.",
        "- **Wilcoxon signed-rank test across locales** (seed-averaged differences, two-sided, exact ties kept: "
        "differences are rounded to 1e-9 before ranking) with the matched-pairs rank-biserial correlation r_rb: is "
        "the advantage consistent across languages, rather than carried by a few? With n locales and no ties its "
        f"smallest possible p is 2/2^n up to n = 50 (scipy's exact test); above, scipy's normal approximation "
        f"gives more (n = {n_loc}: {S.min_wilcoxon_p(n_loc):.2e}).",
        "- **Paired t-test across seeds** (locale-averaged scores; variants share seeds by id, and a comparison "
        "whose variants have different seed sets is an error) with Cohen's d_z: is the advantage of the average "
        "larger than the run-to-run noise of training? With 3 seeds it has 2 degrees of freedom. A difference "
        "with no seed-to-seed variation at all (collapsed models) is flagged as degenerate, not given p = 0.",
        "- Why both: the Wilcoxon test treats locales as independent replicates, but every locale of a run shares "
        "that run's training randomness; a lucky seed lifts all locales at once and would read as a consistent "
        "effect. Requiring the seed-level test too (p = max of the two) guards against that; with few seeds it "
        "costs power, so an inconclusive verdict may mean 'too few seeds', not 'no effect'.",
        "- **Holm-Bonferroni** within each claim (`analysis.holm_family: claim`; `all` corrects over every "
        "comparison at once): controls the chance of any false 'reproduced' or "
        "'contradicted' verdict among the testable comparisons of a claim at the stated level.",
        "- **Claim 3** tests, per locale and seed, (teacher init − pretrained init, both KD off) − (pretrained init "
        "with KD − without KD): does copying the teacher's weights buy more than distillation does?",
        "- **Claim 5** repeats the teacher-init comparisons of claims 1–2 in the low-resource setting on "
        "non-English locales only, and on locales outside the language set's training locales where those are "
        "known (the `en` language set is trained on en-US only).",
        "- Almost stochastic order (ASO) over seeds is not computed: with 3 seeds its estimate is mostly noise.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else (None if math.isnan(x) else ("inf" if x > 0 else "-inf"))
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _family_sizes(fam: pd.DataFrame) -> dict:
    """{claim: comparisons Holm corrects over}, or {"all": n} when the family is every comparison."""
    if fam["holm_family"].iloc[0] == "all":
        return {"all": int(fam["family_size"].iloc[0])}
    return {str(int(c)): int(g["family_size"].iloc[0]) for c, g in fam.groupby("claim")}


def _family_phrase(fam: pd.DataFrame) -> str:
    sizes = _family_sizes(fam)
    if "all" in sizes:
        return f"the whole family of {sizes['all']} comparisons (all claims, language sets and resource levels)"
    return ("each claim's comparisons across all language sets and resource levels (family sizes: "
            + ", ".join(f"claim {c}: {m}" for c, m in sizes.items()) + ")")


def _scale_warnings(fam: pd.DataFrame, alpha: float) -> list[str]:
    out = []
    ok = fam[fam.status == "ok"]
    if ok.empty:
        return out
    m = int(fam["family_size"].max())
    if fam["primary_test"].iloc[0] in ("wilcoxon", "both"):
        n = int(ok["n_locales"].max())
        floor = S.min_wilcoxon_p(n)
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


def run_analysis(
    cells_csv: Path,
    out_dir: Path,
    profile: str,
    metric: str = "accuracy",
    split: str = "test",
    scale_note: str = "",
    *,
    n_resamples: int = 10000,
    seed: int = 0,
    alpha: float = 0.05,
    primary_test: str = "both",
    holm_family: str = "claim",
    train_locales: Mapping[str, Sequence[str]] | None = None,
    figures: bool = True,
    references_csv: Path | None = None,
    training_csv: Path | None = None,
    min_chance_multiple: float = 5.0,
    min_distinct_fraction: float = 0.1,
    resource_sizes: Mapping[str, float] | None = None,
) -> dict:
    """Analyse one profile's `cells.csv` and write tables, figures, claims.md, stats.json and summary.csv.

    `train_locales` maps a language set to the locales it was trained on (default: {"en": ["en-US"]}); claim 5
    then also tests the locales a language set never saw. Returns {"out_dir", "files", "verdicts", "warnings",
    "n_comparisons"}.
    """
    from mkd.gates import check_gates, load_references, load_training

    out_dir = Path(out_dir)
    df = load_cells(Path(cells_csv), profile=profile, metric=metric, split=split)
    cells_dir = Path(cells_csv).parent
    refs = load_references(Path(references_csv or cells_dir / "references.csv"), split, metric)
    gates = check_gates(df, refs, load_training(Path(training_csv or cells_dir / "training.csv")),
                        {**S.DEFAULT_TRAIN_LOCALES, **(train_locales or {})}, metric=metric,
                        min_chance_multiple=min_chance_multiple, min_distinct_fraction=min_distinct_fraction,
                        resource_sizes=resource_sizes)
    fam = S.comparison_family(df, metric=metric, split=split, n_resamples=n_resamples, seed=seed, alpha=alpha,
                              primary_test=primary_test, train_locales=train_locales,
                              holm_family=holm_family, blockers=gates.blockers)
    verdicts = _claim_verdicts(fam)
    warns = _scale_warnings(fam, alpha)
    summary = summary_frame(df, metric)
    out_dir.mkdir(parents=True, exist_ok=True)

    files = []
    write_text(out_dir / "main_table.tex", main_table(summary, metric, refs))
    per_loc, _ = per_locale_tables(df, metric, refs)
    write_text(out_dir / "per_locale_table.tex", per_loc)
    write_text(out_dir / "significance_table.tex", significance_table(fam))
    files += ["main_table.tex", "per_locale_table.tex", "significance_table.tex"]
    if figures:
        files += make_figures(df, out_dir, metric, seed=seed, refs=refs)
    write_text(out_dir / "claims.md",
               claims_markdown(fam, verdicts, profile, scale_note, metric, split, alpha, n_resamples, warns,
                               gates=gates, refs=refs))
    files.append("claims.md")
    records = fam.drop(columns=["locales"], errors="ignore").to_dict(orient="records")
    write_json(out_dir / "stats.json", _jsonable({
        "profile": profile, "scale_note": scale_note, "metric": metric, "split": split, "alpha": alpha,
        "n_resamples": n_resamples, "bootstrap_seed": seed, "primary_test": primary_test,
        "holm_family": holm_family,
        "family_size": _family_sizes(fam), "claims": {str(k): v for k, v in S.CLAIMS.items()},
        "verdicts": verdicts, "warnings": warns, "comparisons": records,
        "gates": [c.__dict__ for c in gates.checks],
        "references": reference_means(refs, metric).to_dict(orient="records"),
        "variants": summary.to_dict(orient="records"),
    }))
    files.append("stats.json")
    with atomic_path(out_dir / "summary.csv") as tmp:
        summary.to_csv(tmp, index=False)
    files.append("summary.csv")
    return {"out_dir": str(out_dir), "files": files, "verdicts": verdicts, "warnings": warns,
            "n_comparisons": int(len(fam))}
