"""The learning curves as a result: dev accuracy on the training locales against optimizer steps, per init x KD x
slice (curves.csv, written by `mkd collect`), read at fixed fractions of the step budget, and drawn.

Question (stated with the step budget, before any curve was looked at): is the teacher-init advantage a head start that
fades as the other inits train, or does it last to the end of the budget? Read, per slice and KD setting, from
the best-so-far dev accuracy (what a run stopped at that step would deliver: the best weights are kept), as
seed means. Descriptive: dev rows of the training locales, no test, no p-value; the verdicts stay in the claims.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from mkd.analysis.cell_scores import slices_of
from mkd.axes import KD_SETTINGS, RESOURCES, initializations, parse_variant_name
from mkd.core.errors import DataError

REQUIRED_CURVE_COLUMNS = ("series", "step", "runs_training", "best_dev_accuracy", "best_dev_accuracy_min",
                          "best_dev_accuracy_max")
BUDGET_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
PRIVILEGED, OTHERS = "teacher", ("pretrained", "random")
# The reading of one advantage's course, a rule fixed in advance: "lasting" if at the end of the budget it
# keeps at least half of what it was at the first fraction read; "fades" if it keeps less; "none at first" if
# there was no advantage to begin with (<= 0 at the first fraction).
KEPT_FOR_LASTING = 0.5


def load_curves(path: Path) -> pd.DataFrame:
    """The student rows of curves.csv with their language_set, resource, init and kd (teachers' rows dropped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; run `dvc repro collect` (it writes the learning curves)")
    df = pd.read_csv(path, dtype={"series": str})
    missing = [c for c in REQUIRED_CURVE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; re-run `mkd collect`")
    parsed = [parse_variant_name(s) for s in df["series"]]
    df = df[[p is not None for p in parsed]].reset_index(drop=True)
    names = pd.DataFrame([p for p in parsed if p is not None], columns=["language_set", "resource", "init", "kd"])
    if df.empty:
        raise DataError(f"{path} holds no student curve (series like cpu8/high/teacher/kd_on); re-run `mkd collect`")
    return pd.concat([df, names], axis=1)


def best_at(curves: pd.DataFrame, step: float) -> pd.DataFrame:
    """Per variant: the best-so-far dev accuracy (mean, min, max over seeds) at its last evaluation <= `step`."""
    rows = curves[curves["step"] <= step]
    last = rows.loc[rows.groupby(["language_set", "resource", "init", "kd"])["step"].idxmax()]
    return last.reset_index(drop=True)


def budget_advantage(curves: pd.DataFrame, max_steps: int,
                     fractions: Sequence[float] = BUDGET_FRACTIONS) -> pd.DataFrame:
    """One row per slice x KD x other init x budget fraction: the step read (the last evaluation at or before
    fraction x max_steps), the best-so-far dev accuracy of teacher init and of the other init, and the
    advantage (teacher - other; seed means)."""
    rows = []
    for fraction in fractions:
        target = fraction * max_steps
        at = best_at(curves, target).set_index(["language_set", "resource", "init", "kd"])
        for (ls, res, init, kd), r in at.iterrows():
            if init not in OTHERS or (ls, res, PRIVILEGED, kd) not in at.index:
                continue
            t = at.loc[(ls, res, PRIVILEGED, kd)]
            rows.append({"language_set": ls, "resource": res, "kd": kd, "other": init, "fraction": fraction,
                         "step": int(min(r["step"], t["step"])), "teacher_init": float(t["best_dev_accuracy"]),
                         "other_init": float(r["best_dev_accuracy"]),
                         "advantage": float(t["best_dev_accuracy"] - r["best_dev_accuracy"])})
    out = pd.DataFrame(rows, columns=["language_set", "resource", "kd", "other", "fraction", "step", "teacher_init",
                                      "other_init", "advantage"])
    order = {r: i for i, r in enumerate(RESOURCES)}
    return out.sort_values(["language_set", "resource", "kd", "other", "fraction"],
                           key=lambda c: c.map(order) if c.name == "resource" else c).reset_index(drop=True)


def course(advantages: Sequence[float]) -> str:
    """The reading of one advantage from the first to the last fraction (KEPT_FOR_LASTING)."""
    first, last = advantages[0], advantages[-1]
    if first <= 0:
        return "none at first"
    return "lasting" if last >= KEPT_FOR_LASTING * first else "fades"


def advantage_lines(adv: pd.DataFrame, max_steps: int) -> list[str]:
    """The claims.md section: the advantage at each budget fraction and its course, per slice x KD x other init."""
    if adv.empty:
        return []
    fractions = sorted(adv["fraction"].unique())
    head = [f"{100 * f:g} % (step {int(adv[adv.fraction == f]['step'].max())})" for f in fractions]
    lines = ["## Head start or lasting advantage? (learning curves)", "",
             f"Teacher-init advantage in best-so-far dev accuracy on the training locales (pp, seed means) at "
             f"fractions of the {max_steps}-step budget (the last evaluation at or before it). Descriptive, "
             f"no test: the verdicts are the claims'. Course: *lasting* if the advantage at 100 % is at least "
             f"{KEPT_FOR_LASTING:g} of the one at {100 * fractions[0]:g} %, *fades* otherwise (a head start the "
             "other init catches up on). Figure: fig_curves.", "",
             "| slice | KD | over | " + " | ".join(head) + " | course |", "|---|---|---|" + "---:|" * len(head) + "---|"]
    for (ls, res, kd, other), g in adv.groupby(["language_set", "resource", "kd", "other"], sort=False):
        g = g.sort_values("fraction")
        cells = [f"{100 * a:+.1f}" for a in g["advantage"]]
        lines.append(f"| {ls}/{res} | {kd} | {other} | " + " | ".join(cells) + f" | {course(list(g['advantage']))} |")
    return lines + [""]


def curves_figure(curves: pd.DataFrame, max_steps: int | None = None,
                  fractions: Sequence[float] = BUDGET_FRACTIONS):
    """One panel per slice: best-so-far dev accuracy (%) against steps, a line per init x KD (seed mean) with
    its min-max band over seeds; dotted verticals at the budget fractions."""
    import matplotlib.pyplot as plt

    slices = slices_of(curves)
    fig, axes = plt.subplots(1, len(slices), figsize=(4.6 * len(slices), 4.0), squeeze=False, sharey=True)
    colors = dict(zip(initializations(), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    styles = dict(zip(KD_SETTINGS, ("-", "--")))
    for ax, (ls, res) in zip(axes[0], slices):
        for init in initializations():
            for kd in KD_SETTINGS:
                g = curves[(curves.language_set == ls) & (curves.resource == res) & (curves.init == init)
                           & (curves.kd == kd)].sort_values("step")
                if g.empty:
                    continue
                color = colors.get(init)
                ax.plot(g["step"], 100 * g["best_dev_accuracy"], color=color, linestyle=styles[kd],
                        label=init + (" + KD" if kd == "on" else ""))
                ax.fill_between(g["step"], 100 * g["best_dev_accuracy_min"], 100 * g["best_dev_accuracy_max"],
                                color=color, alpha=0.12, linewidth=0)
        for f in fractions if max_steps else ():
            ax.axvline(f * max_steps, color="gray", linestyle=":", linewidth=0.8)
        ax.set_title(f"{ls} / {res} resource")
        ax.set_xlabel("optimizer steps")
        ax.set_ylabel("best-so-far dev accuracy (%), training locales")
        ax.legend(fontsize="x-small")
    fig.suptitle("Learning curves (lines: mean over seeds; bands: min-max; dotted: 10/25/50/100 % of the budget)")
    fig.tight_layout()
    return fig
