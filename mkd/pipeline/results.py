"""The tables the collect stage writes into results/<profile>/ from the grid's checked cell results.

cells.csv: every cell x split x locale, long format; references.csv: per grid slice its probe, its teacher and
chance; training.csv: one row per cell (start, best dev accuracy and its step, steps trained and why it
stopped, collapse count, cost); provenance.json: what
made each cell (`mkd verify` compares a re-run with it); summary.json, per_locale.csv and curves.csv: what
`dvc metrics show` / `dvc exp show` and `dvc plots show` read.
"""

from __future__ import annotations

from pathlib import Path

from mkd.axes import variant_name
from mkd.core import atomic
from mkd.pipeline.grid import Cell

CELL_COLUMNS = ["profile", "cell", "language_set", "resource", "init", "kd", "seed", "split", "locale", "accuracy", "macro_f1"]
REFERENCE_COLUMNS = ["profile", "reference", "language_set", "resource", "trained_on", "split", "locale", "accuracy", "macro_f1",
                     "probe_c"]  # the C the probe chose on dev (empty for teachers and chance)
TRAINING_COLUMNS = ["profile", "cell", "language_set", "resource", "init", "kd", "seed", "initial_dev_accuracy",
                    "best_dev_accuracy", "best_step", "steps", "epochs", "stopped", "distinct_test_predictions",
                    "train_seconds"]
CURVE_COLUMNS = ["series", "step", "runs_training", "train_loss", "dev_accuracy", "best_dev_accuracy",
                 "best_dev_accuracy_min", "best_dev_accuracy_max"]


def write_tables(profile: str, results_dir: Path, cells: dict[Cell, tuple[dict, dict]], references: dict) -> None:
    """All of collect's outputs from {cell: (its scores, info.json)} and references.json."""
    rows = [row for cell, (metrics, _) in cells.items() for row in cell_rows(profile, cell, metrics)]
    write_csv(results_dir / "cells.csv", CELL_COLUMNS, rows)
    write_csv(results_dir / "references.csv", REFERENCE_COLUMNS, reference_rows(profile, references))
    write_csv(results_dir / "training.csv", TRAINING_COLUMNS,
              [training_row(profile, cell, metrics, info) for cell, (metrics, info) in cells.items()])
    made_by = {cell.id: {k: v for k, v in info["provenance"].items() if k != "load_average"}
               for cell, (_, info) in cells.items()}
    atomic.write_json(results_dir / "provenance.json", made_by)  # what `mkd verify` compares a re-run with
    write_csv(results_dir / "curves.csv", CURVE_COLUMNS, curve_rows(cells, references))
    write_summary(results_dir, rows, references)


def _cell_columns(profile: str, cell: Cell) -> list:
    return [profile, cell.id, cell.language_set, cell.resource, cell.init, cell.kd, cell.seed]


def cell_rows(profile: str, cell: Cell, metrics: dict) -> list[list]:
    """cells.csv's rows of one cell: one per split and locale (the locale average left out)."""
    return [_cell_columns(profile, cell) + [split, locale, acc, metrics[split]["macro_f1"][locale]]
            for split in ("dev", "test") for locale, acc in metrics[split]["accuracy"].items() if locale != "avg"]


def training_row(profile: str, cell: Cell, metrics: dict, info: dict) -> list:
    t = info["training"]
    return _cell_columns(profile, cell) + [t["initial_dev_accuracy"], t["best_dev_accuracy"], t["best_step"], t["steps"],
                                           round(t["epochs"], 4), t["stopped"], metrics["test"]["distinct_predictions"],
                                           t["train_seconds"]]


def learning_curve(histories: list[list[dict]], start: list[float] | None = None) -> list[list]:
    """One series' rows of curves.csv from its runs' histories (one per seed): at each evaluated step, the
    runs still training, their mean train loss and dev accuracy, and the best-so-far dev accuracy over all runs
    (mean, min, max). A run stopped early keeps its best weights, so from then on it counts with its best: the
    best-so-far curve is what a run given that many steps would deliver. `start`: each run's dev accuracy
    before training (step 0), where known."""
    import numpy as np

    steps = sorted({h["step"] for hist in histories for h in hist} | ({0} if start is not None else set()))
    by_step = [{h["step"]: h for h in hist} for hist in histories]
    best = list(start) if start is not None else [float("-inf")] * len(histories)
    rows = []
    for step in steps:
        live = [run[step] for run in by_step if step in run]
        for i, run in enumerate(by_step):
            if step in run:
                best[i] = max(best[i], run[step]["dev_accuracy"])
        known = [b for b in best if b > float("-inf")]
        loss = [h["train_loss"] for h in live]
        dev = [h["dev_accuracy"] for h in live] if step else list(start)
        rows.append([step, len(live), round(float(np.mean(loss)), 6) if loss else "",
                     round(float(np.mean(dev)), 6) if dev else "", round(float(np.mean(known)), 6),
                     round(float(min(known)), 6), round(float(max(known)), 6)])
    return rows


def curve_rows(cells: dict[Cell, tuple[dict, dict]], references: dict) -> list[list]:
    """Learning curves on the training languages' dev rows (the model-selection rows) against optimizer steps:
    each teacher's, and each variant's over its seeds (learning_curve), for `dvc plots show` and the analysis."""
    from collections import defaultdict

    rows = [[f"teacher[{key}]"] + row for key, t in sorted(references["teachers"].items())
            for row in learning_curve([t["history"]])]
    by_variant = defaultdict(list)
    for cell, (_, info) in sorted(cells.items(), key=lambda kv: kv[0].id):
        by_variant[variant_name(cell.language_set, cell.resource, cell.init, cell.kd)].append(info["training"])
    for name, runs in sorted(by_variant.items()):
        rows += [[name] + row for row in learning_curve([t["history"] for t in runs],
                                                        [t["initial_dev_accuracy"] for t in runs])]
    return rows


def reference_rows(profile: str, refs: dict) -> list[list]:
    """Long rows of references.csv: per grid slice, its probe, its teacher and chance; plus the probe fitted on
    each teacher's own rows (the sanity gate compares the teacher with it)."""
    rows = []

    def add(name, ls, res, trained_on, metrics, c=""):
        for split in ("dev", "test"):
            for locale, acc in metrics[split]["accuracy"].items():
                if locale != "avg":
                    rows.append([profile, name, ls, res, trained_on, split, locale, acc, metrics[split]["macro_f1"][locale], c])

    slices = {tuple(k.rsplit("-", 1)) for k in refs["slices"]}
    for key, probe in refs["probes"].items():
        add("probe", probe["language_set"], probe["resource"], key, probe["metrics"], probe["c"])
    for key, sl in refs["slices"].items():
        ls, res = key.rsplit("-", 1)
        teacher = refs["teachers"][sl["teacher"]]
        add("teacher", ls, res, f"{teacher['language_set']}-{teacher['resource']}", teacher["metrics"])
        chance = {split: {"accuracy": {loc: refs["chance_accuracy"] for loc in teacher["metrics"][split]["accuracy"]},
                          "macro_f1": {loc: float("nan") for loc in teacher["metrics"][split]["accuracy"]}}
                  for split in ("dev", "test")}
        add("chance", ls, res, "", chance)
    for key, teacher in refs["teachers"].items():  # teachers whose own data is no grid slice: a row to gate on
        if (teacher["language_set"], teacher["resource"]) not in slices:
            add("teacher", teacher["language_set"], teacher["resource"], f"{teacher['language_set']}-{teacher['resource']}", teacher["metrics"])
    return rows


def write_csv(path: Path, columns: list[str], rows: list[list]) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    atomic.write_text(path, buf.getvalue())


def write_summary(results_dir: Path, rows: list, references: dict) -> None:
    """Headline numbers for `dvc metrics show` / `dvc exp show` (each variant's test accuracy, each teacher's)
    and the per-locale plot data for `dvc plots show`."""
    from collections import defaultdict

    import numpy as np

    by_variant = defaultdict(lambda: defaultdict(list))  # variant -> seed -> [locale accuracies]
    by_locale = defaultdict(list)
    for _, _, ls, res, init, kd, seed, split, locale, acc, _ in rows:
        if split != "test":
            continue
        by_variant[variant_name(ls, res, init, kd)][seed].append(acc)
        by_locale[(locale, f"{res}/{init}/kd_{kd}")].append(acc)
    summary = {"test_accuracy": {v: float(np.mean([np.mean(a) for a in seeds.values()])) for v, seeds in sorted(by_variant.items())},
               "teacher_test_accuracy": {k: t["metrics"]["test"]["accuracy"]["avg"] for k, t in sorted(references["teachers"].items())}}
    atomic.write_json(results_dir / "summary.json", summary)
    lines = ["locale,variant,accuracy"] + [f"{loc},{var},{np.mean(a):.6f}" for (loc, var), a in sorted(by_locale.items())]
    atomic.write_text(results_dir / "per_locale.csv", "\n".join(lines) + "\n")
