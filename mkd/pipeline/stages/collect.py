"""Stage `collect`: every cell's predictions scored and gathered into results/<profile>/ (cells.csv and beside it)."""

from __future__ import annotations

import json
from pathlib import Path

from mkd.core.errors import MkdError
from mkd.core.hashing import bytes_sha256
from mkd.evaluation.predictions import FILE_NAME as PREDICTIONS_FILE
from mkd.evaluation.predictions import Predictions
from mkd.pipeline import fingerprints
from mkd.pipeline.grid import Paths, grid_cells


def collect(params: dict, root=".") -> Path:
    """Score every cell's predictions and gather the grid's results into results/<profile>/cells.csv (and the
    references, training summary and curves beside it, mkd/pipeline/results.py); refuse missing, partial or stale cells."""
    from mkd.data import LabelVocab
    from mkd.evaluation.metrics import module_scorers
    from mkd.pipeline.results import write_tables

    paths = Paths(params, root)
    refs_path = paths.results / "references.json"
    if not refs_path.exists():
        raise MkdError(f"{refs_path} not found; run `dvc repro references` (or `mkd references`) first")
    checked, problems = {}, []
    for cell in grid_cells(params):
        d = paths.cell_dir(cell)
        try:
            info = json.loads((d / "info.json").read_text())
            raw = (d / PREDICTIONS_FILE).read_bytes()
        except FileNotFoundError:
            problems.append(f"{cell.id}: no result (run `dvc repro` to finish the grid)")
            continue
        except json.JSONDecodeError as e:
            problems.append(f"{cell.id}: unreadable result ({e}); delete {d} and re-run `dvc repro`")
            continue
        if info.get("params_digest") != fingerprints.cell_digest(params, cell):
            problems.append(f"{cell.id}: result was made with other parameters (stale); re-run `dvc repro`")
            continue
        if info.get("predictions_sha256") != bytes_sha256(raw):
            problems.append(f"{cell.id}: {d / PREDICTIONS_FILE} is not what the cell wrote (its digest in info.json "
                            f"differs); restore it with `dvc checkout --force {cell.stage}` (DVC's copy of it) or re-run "
                            f"`dvc repro -f {cell.stage}`")
            continue
        checked[cell] = (info, info["predictions_sha256"])
    if problems:
        raise MkdError(f"{len(problems)} of {len(grid_cells(params))} grid cells are not usable:\n  " + "\n  ".join(problems[:20]))
    # Every cell scored here, in one process, by the `evaluate` modules (one import for the whole grid), one cell
    # at a time: only its scores are kept (at the paper's size a cell predicts 260,364 rows; all 36 held as parsed
    # rows would take ~3.4 GB). Each file is read again and must still be the one checked above.
    labels, scorers = LabelVocab.load(paths.data / "labels.json"), module_scorers()
    scored = {cell: (cell_scores(paths.cell_dir(cell) / PREDICTIONS_FILE, digest, labels, scorers), info)
              for cell, (info, digest) in checked.items()}
    write_tables(params["profile"], paths.results, scored, json.loads(refs_path.read_text()))
    return paths.results / "cells.csv"


def cell_scores(path: Path, digest: str, labels, scorers) -> dict:
    """One cell's predictions file, parsed and scored (its rows dropped once scored); it must still have `digest`."""
    raw = path.read_bytes()
    if bytes_sha256(raw) != digest:
        raise MkdError(f"{path} changed while collect ran; re-run `mkd collect`")
    return Predictions.from_bytes(raw, str(path)).scores(labels, scorers)
