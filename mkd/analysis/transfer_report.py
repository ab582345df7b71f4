"""The transfer analysis written out: the per-family retention table (booktabs), the retention heatmap and the
retention-against-language scatter (PDF + PNG), and the claims.md section of claims 5b-5d."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from mkd.axes import KD_SETTINGS, initializations
from mkd.analysis.formatting import format_p
from mkd.analysis.tables import _latex_table
from mkd.analysis.transfer import TRANSFER_CLAIMS, zero_shot


def family_table(by_family: pd.DataFrame) -> str:
    """Mean retention (%, student / teacher accuracy) over the locales the students never trained on: a row per
    language family x KD setting, a column per slice x init, grouped by language set, each group led by how many
    of the family's locales that set never trained on."""
    value = by_family.set_index(["language_set", "resource", "init", "kd", "family"])["retention"]
    headers, columns = ["Family", "KD"], []  # columns: ("count", ls) or ("value", ls, res, init)
    for ls, g in by_family.groupby("language_set", sort=False):
        headers.append(f"{ls} locales")
        columns.append(("count", ls))
        for res in dict.fromkeys(g.resource):
            for init in [i for i in initializations() if (g.init == i).any()]:
                headers.append(f"{ls} {res} {init}")
                columns.append(("value", ls, res, init))
    counts = by_family.groupby(["language_set", "family"])["locales"].max()
    rows = []
    for fam in sorted(by_family.family.unique()):
        for kd in [k for k in KD_SETTINGS if (by_family.kd == k).any()]:
            row = [fam, kd]
            for col in columns:
                if col[0] == "count":
                    n = counts.get((col[1], fam))
                    row.append("0" if n is None else str(int(n)))
                else:
                    v = value.get((col[1], col[2], col[3], kd, fam), math.nan)
                    row.append("--" if not math.isfinite(v) else f"{100 * v:.0f}")
            rows.append(row)
    return _latex_table(rows, headers, colalign=["left", "left"] + ["right"] * len(columns))


def _heatmap_frame(retention: pd.DataFrame, languages: pd.DataFrame, trained) -> pd.DataFrame:
    """locale x column (slice, init, KD) of retention in %, locales sorted by family then script."""
    r = zero_shot(retention, trained)
    r = r.assign(column=[f"{ls}/{res}: {init}, KD {kd}" for ls, res, init, kd in zip(r.language_set, r.resource, r.init, r.kd)])
    wide = r.pivot_table(index="locale", columns="column", values="retention", sort=False) * 100
    meta = languages.set_index("locale").loc[wide.index, ["family", "script"]]
    order = meta.sort_values(["family", "script"]).index
    return wide.loc[order], meta.loc[order]


NO_ZERO_SHOT = "no locale outside the training languages in this profile: nothing to show"


def _empty_figure(text: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9)
    return fig


def retention_heatmap(retention: pd.DataFrame, languages: pd.DataFrame, trained):
    """The locale x variant heatmap of retention, rows grouped into labelled family bands."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if zero_shot(retention, trained).empty:
        return _empty_figure(NO_ZERO_SHOT)
    wide, meta = _heatmap_frame(retention, languages, trained)
    fig, ax = plt.subplots(figsize=(2 + 0.45 * wide.shape[1], 2 + 0.22 * wide.shape[0]))
    sns.heatmap(wide, ax=ax, cmap="viridis", vmin=0, vmax=100, cbar_kws={"label": "retention (% of the teacher)"})
    ax.set_yticklabels([f"{l} ({s})" for l, s in zip(wide.index, meta.script)], fontsize=7)
    ax.set_xticklabels(ax.get_xticklabels(), rotation=60, ha="right", fontsize=7)
    bounds = np.flatnonzero(meta.family.to_numpy()[1:] != meta.family.to_numpy()[:-1]) + 1
    for b in bounds:
        ax.axhline(b, color="white", linewidth=1.5)
    starts = np.concatenate([[0], bounds]); ends = np.concatenate([bounds, [len(meta)]])
    for s, e in zip(starts, ends):
        # left of the locale labels (about 60 points wide at this font size)
        ax.annotate(meta.family.iloc[s], xy=(0, (s + e) / 2), xycoords=("axes fraction", "data"), xytext=(-66, 0),
                    textcoords="offset points", ha="right", va="center", fontsize=7, fontweight="bold")
    ax.set_ylabel(""); ax.set_xlabel("")
    ax.set_title("Retention of the teacher's accuracy on locales never trained on")
    return fig


def retention_scatter(retention: pd.DataFrame, languages: pd.DataFrame, trained, kd: str = "off"):
    """Retention against URIEL syntactic distance and against log CC-100 size, one panel each per language set,
    a least-squares line per init (KD `kd`)."""
    import matplotlib.pyplot as plt

    r = zero_shot(retention[retention.kd == kd], trained)
    if r.empty:
        return _empty_figure(NO_ZERO_SHOT)
    sets = list(dict.fromkeys(r.language_set))
    meta = languages.set_index("locale")
    fig, axes = plt.subplots(len(sets), 2, figsize=(10, 3.6 * len(sets)), squeeze=False)
    colors = dict(zip(initializations(), ("tab:gray", "tab:blue", "tab:orange")))
    for i, ls in enumerate(sets):
        for j, (col, label) in enumerate(((f"{ls}_syntactic", "URIEL syntactic distance to the nearest training language"),
                                          ("cc100_gib", "CC-100 pretraining data (GiB, log scale)"))):
            ax = axes[i][j]
            for (res, init), g in r[r.language_set == ls].groupby(["resource", "init"], sort=False):
                x = meta.loc[g.locale, col].to_numpy(dtype=float)
                y = 100 * g.retention.to_numpy()
                ok = np.isfinite(x) & np.isfinite(y)
                xs = np.log10(x[ok]) if col == "cc100_gib" else x[ok]
                style = "o" if res == "high" else "^"
                ax.scatter(x[ok], y[ok], s=12, marker=style, color=colors.get(init), alpha=0.6, label=f"{init}, {res}")
                if ok.sum() > 2:
                    slope, icpt = np.polyfit(xs, y[ok], 1)
                    grid = np.linspace(xs.min(), xs.max(), 20)
                    ax.plot(10 ** grid if col == "cc100_gib" else grid, icpt + slope * grid, color=colors.get(init),
                            linestyle="-" if res == "high" else "--", linewidth=1)
            if col == "cc100_gib":
                ax.set_xscale("log")
            ax.set_xlabel(label, fontsize=8); ax.set_ylabel("retention (%)", fontsize=8)
            ax.set_title(f"{ls}-trained students, KD {kd}", fontsize=9)
        axes[i][0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def transfer_lines(transfer: pd.DataFrame, languages: pd.DataFrame) -> list[str]:
    """claims.md's section: the claims as stated in advance, then one verdict row per comparison."""
    lines = ["", "## Which languages keep it (claims 5b-5d, stated before they were computed)", ""]
    for claim, spec in TRANSFER_CLAIMS.items():
        lines.append(f"- **{claim}**: {spec['text']}")
    lines += ["", "Over the locales each student never trained on; interval: bootstrap over locales and seeds; "
              "p: permutation of the language covariate over locales, Holm within each claim. Language data: script "
              "from langcodes, family and distances from URIEL (lang2vec's data), pretraining size from XLM-R's "
              "CC-100 table (Conneau et al. 2020, Table 6)."]
    missing = languages.locale[~np.isfinite(languages.cc100_gib.astype(float))].tolist()
    if missing:
        lines.append(f"Not in the CC-100 table (left out of 5c): {', '.join(missing)}.")
    if transfer.empty:
        return lines + ["", NO_ZERO_SHOT[0].upper() + NO_ZERO_SHOT[1:] + ".", ""]
    lines += ["", "| claim | slice | init | KD | statistic | delta (claimed > 0) [95 % CI] | p (Holm) | locales | verdict |",
              "|---|---|---|---|---:|---|---:|---:|---|"]
    for r in transfer.itertuples():
        lines.append(f"| {r.claim} | {r.language_set}/{r.resource} | {r.init or 'teacher - pretrained'} | {r.kd} | "
                     f"{r.statistic:+.3f} | {r.delta:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}] | {format_p(r.p_holm)} | "
                     f"{r.n_locales} | {r.verdict}{' (' + r.not_testable + ')' if r.not_testable else ''} |")
    return lines + [""]
