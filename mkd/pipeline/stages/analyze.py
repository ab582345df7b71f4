"""Stage `analyze`: cells.csv and the references into verdicts, LaTeX tables, figures and claims.md."""

from __future__ import annotations

from mkd.core.errors import DataError
from mkd.pipeline.grid import Paths, language_set


def analyze(params: dict, root=".") -> dict:
    from mkd.config import _size_key
    from mkd.analysis.report import run_analysis

    paths = Paths(params, root)
    cells_csv = paths.results / "cells.csv"
    if not cells_csv.exists():
        raise DataError(f"{cells_csv} not found; run `dvc repro collect` (or `mkd collect`) first")
    a = params["analysis"]
    return run_analysis(
        cells_csv, paths.tables, profile=params["profile"], metric=a["metric"], split=a["split"], scale_note=params["scale"],
        n_resamples=a["bootstrap_resamples"], primary_test=a["primary_test"], holm_family=a["holm_family"],
        equivalence_margin=float(a["equivalence_margin"]) / 100,  # params: percentage points
        train_locales={ls: list(language_set(params, ls)) for ls in set(params["grid"]["language_sets"]) | {params["teacher"]["language_set"]}},
        references_csv=paths.results / "references.csv", training_csv=paths.results / "training.csv",
        min_chance_multiple=float(a["min_chance_multiple"]), min_distinct_fraction=float(a["min_distinct_fraction"]),
        resource_sizes={name: _size_key(size) for name, size in params["data"]["train_sizes"].items()},
        curves_csv=paths.results / "curves.csv", budget_steps=params["student"]["max_steps"],
    )
