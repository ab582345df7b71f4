"""The figures (PDF and PNG): a locale x variant heatmap, the variants per language set with the floor,
ceiling and chance as lines, and low versus high resource per variant."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from mkd.core.atomic import atomic_path
from mkd.axes import RESOURCES
from mkd.analysis.cell_scores import (
    REFERENCE_COLUMNS, REFERENCE_LABELS, variant_order, reference_means, seed_level, slices_of, variant_labels,
)


# No creation date or software version in the files: the same numbers give the same bytes, so a re-run of the
# analysis leaves paper_tables/ unchanged in git and DVC (matplotlib stamps a PDF's CreationDate by default).
_METADATA = {"pdf": {"CreationDate": None, "Producer": None, "Creator": None}, "png": {"Software": None}}


def _save(fig, out_dir: Path, stem: str) -> list[str]:
    names = []
    for fmt in ("pdf", "png"):
        with atomic_path(out_dir / f"{stem}.{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=150 if fmt == "png" else None, bbox_inches="tight",
                        metadata=_METADATA[fmt])
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


def _column(ls: str, res: str, variant: str, multi: bool) -> str:
    """A heatmap column: the variant, prefixed by its slice when several slices share the heatmap."""
    return f"{ls}/{res}: {variant}" if multi else variant


def _heatmap_scores(df: pd.DataFrame, metric: str, refs: pd.DataFrame | None) -> pd.DataFrame:
    """locale x column (variants, the probe and the teacher, per slice), seed-averaged, in %."""
    slices = slices_of(df)
    multi = len(slices) > 1
    d = df.assign(variant=variant_labels(df))
    d["column"] = [_column(ls, r, v, multi) for ls, r, v in zip(d.language_set, d.resource, d.variant)]
    if refs is not None and not refs.empty and metric in refs.columns:
        r = refs[refs.reference.isin(list(REFERENCE_COLUMNS))]
        r = r[[(ls, res) in set(slices) for ls, res in zip(r.language_set, r.resource)]]
        r = r.assign(variant=r["reference"].map(REFERENCE_COLUMNS))
        r["column"] = [_column(ls, res, v, multi) for ls, res, v in zip(r.language_set, r.resource, r.variant)]
        d = pd.concat([d, r[["locale", "column", metric]]], ignore_index=True)
    piv = d.groupby(["locale", "column"])[metric].mean().unstack("column") * 100
    col_order = [_column(ls, r, v, multi) for ls, r in slices for v in list(REFERENCE_COLUMNS.values()) + variant_order()]
    return piv[[c for c in col_order if c in piv.columns]]


def _heatmap(piv: pd.DataFrame, metric: str):
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * piv.shape[1] + 3), max(4.0, 0.28 * piv.shape[0] + 2)))
    sns.heatmap(piv, ax=ax, cmap="viridis", annot=piv.shape[0] * piv.shape[1] <= 200, fmt=".1f",
                cbar_kws={"label": f"{metric} (%)"})
    ax.set_xlabel("variant")
    ax.set_ylabel("locale")
    ax.set_title(f"Per-locale {metric} (seed-averaged)")
    return fig


def _panels_per_language_set(sl: pd.DataFrame, ref: pd.DataFrame, metric: str, panel_width: float, plot,
                             title: str, legend_title: str | None = None):
    """One panel per language set: `plot(scores, ax)` draws its seed-level scores, then the floor, ceiling and
    chance lines, the titles and the legend."""
    import matplotlib.pyplot as plt

    sets = sorted(sl["language_set"].unique())
    fig, axes = plt.subplots(1, len(sets), figsize=(panel_width * len(sets), 4.2), squeeze=False, sharey=True)
    for ax, ls in zip(axes[0], sets):
        sub = sl[sl.language_set == ls]
        plot(sub, ax)
        _reference_lines(ax, ref, ls, [r for r in RESOURCES[::-1] if r in set(sub.resource)])
        ax.set_title(title.format(ls=ls))
        ax.set_ylabel(f"{metric} (%), locale average")
        ax.legend(fontsize="x-small", title=legend_title)
    return fig


def _variants_figure(sl: pd.DataFrame, ref: pd.DataFrame, metric: str, seed: int):
    """Bars: variants with 95% CIs over seeds (locale-averaged scores per seed), one panel per language set."""
    import seaborn as sns

    def bars(sub, ax):
        sns.barplot(data=sub, x="variant", y="score", hue="resource", order=variant_order(),
                    hue_order=[r for r in RESOURCES if r in set(sub.resource)], errorbar=("ci", 95),
                    seed=seed, ax=ax, capsize=0.1)
        ax.tick_params(axis="x", rotation=30)

    fig = _panels_per_language_set(sl, ref, metric, 6.5, bars, "language set {ls}")
    fig.suptitle("Variants (bars: mean over seeds; whiskers: 95% bootstrap CI over seeds; lines: teacher, frozen probe, chance)")
    fig.tight_layout()
    return fig


def _resource_figure(sl: pd.DataFrame, ref: pd.DataFrame, metric: str, seed: int):
    """Low vs high resource per variant, one panel per language set."""
    import seaborn as sns

    def points(sub, ax):
        sns.pointplot(data=sub, x="resource", y="score", hue="variant", hue_order=variant_order(),
                      order=[r for r in ("low", "high") if r in set(sub.resource)], errorbar=("ci", 95),
                      seed=seed, dodge=0.3, ax=ax)

    fig = _panels_per_language_set(sl, ref, metric, 6.0, points, "language set {ls}: low vs high resource", "variant")
    fig.tight_layout()
    return fig


def save_figure(draw, out_dir: Path, stem: str) -> list[str]:
    """Draw one figure (`draw()` returns it), save it as PDF and PNG, close it; returns the file names. One
    figure at a time: each is drawn, saved and closed before the next."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw()
    try:
        return _save(fig, out_dir, stem)
    finally:
        plt.close(fig)


def make_figures(df: pd.DataFrame, out_dir: Path, metric: str, seed: int = 0, refs: pd.DataFrame | None = None) -> list[str]:
    """Write the three figures of the test scores (PDF and PNG) into `out_dir`; returns the file names."""
    ref = reference_means(refs, metric)
    sl = seed_level(df, metric)
    sl["score"] = sl[metric] * 100
    written = []
    for stem, draw in (("fig_heatmap", lambda: _heatmap(_heatmap_scores(df, metric, refs), metric)),
                       ("fig_variants", lambda: _variants_figure(sl, ref, metric, seed)),
                       ("fig_resource", lambda: _resource_figure(sl, ref, metric, seed))):
        written += save_figure(draw, out_dir, stem)
    return written
