"""`mkd verify`: do the committed numbers come back? Re-runs a sample of grid cells in a scratch workspace and
compares them, value for value, with a cells.csv (by default the profile's committed results/<profile>/cells.csv).

The cells re-run from the profile's existing upstream artifacts (data, base model, teachers, cached logits), so
what is checked is the cell stage itself: training, evaluation and the environment they run in. Where numbers
differ, the report names the provenance fields (git commit, package set, CPU, threads, ...) that differ between
the committed run (results/<profile>/provenance.json, written by collect) and this one.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import shutil
import time
from pathlib import Path

from mkd.core import atomic
from mkd.data import LabelVocab
from mkd.core.errors import MkdError
from mkd.pipeline.grid import Cell, Paths, grid_cells
from mkd.pipeline.stages import run_cell

log = logging.getLogger(__name__)

# Provenance fields that can change a cell's numbers; load average and wall time cannot.
COMPARED_PROVENANCE = ("git_commit", "mkd", "torch", "transformers", "packages_sha256", "python", "machine", "cpu",
                       "threads")
UPSTREAM = ("data", "draws", "base", "teachers", "logits")


def read_reference(path: Path) -> dict[str, dict[tuple[str, str], tuple[float, float]]]:
    """cells.csv as {cell id: {(split, locale): (accuracy, macro_f1)}}."""
    if not path.is_file():
        raise MkdError(f"reference {path} not found; give --reference a cells.csv (collect writes one per profile)")
    out: dict[str, dict] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["cell"], {})[(row["split"], row["locale"])] = (float(row["accuracy"]), float(row["macro_f1"]))
    return out


def choose_cells(params: dict, reference: dict, ids: list[str], n: int, seed: int) -> list[Cell]:
    cells = {c.id: c for c in grid_cells(params)}
    unknown = [i for i in ids if i not in cells]
    if unknown:
        raise MkdError(f"not cells of this grid: {', '.join(unknown)} (see `mkd grid`)")
    missing = [i for i in ids if i not in reference]
    if missing:
        raise MkdError(f"the reference has no rows for {', '.join(missing)}")
    if ids:
        return [cells[i] for i in ids]
    candidates = sorted(i for i in cells if i in reference)
    if not candidates:
        raise MkdError("no cell of this grid is in the reference; is it the same profile?")
    return [cells[i] for i in random.Random(seed).sample(candidates, min(n, len(candidates)))]


def compare(scores: dict, expected: dict[tuple[str, str], tuple[float, float]]) -> list[str]:
    """Every (split, locale, metric) whose re-run value differs from the reference, as readable lines."""
    diffs = []
    for (split, locale), (acc, f1) in sorted(expected.items()):
        for name, want in (("accuracy", acc), ("macro_f1", f1)):
            got = scores[split][name].get(locale)
            if got != want:
                diffs.append(f"{split} {locale} {name}: committed {want!r}, now {got!r}")
    return diffs


def provenance_differences(recorded: dict | None, now: dict) -> list[str]:
    if not recorded:
        return ["no recorded provenance to compare with"]
    return [f"{k}: {recorded.get(k)!r} -> {now.get(k)!r}" for k in COMPARED_PROVENANCE if recorded.get(k) != now.get(k)]


def scratch_workspace(params: dict, root: Path) -> Path:
    """A folder under artifacts/<profile>/verify whose upstream artifacts are links to the real ones, so cells run
    there exactly as in the pipeline while their outputs and checkpoints stay apart from the real results."""
    paths = Paths(params, root)
    absent = [name for name in UPSTREAM if not (getattr(paths, name)).exists()]
    if absent:
        raise MkdError(f"{', '.join(str(getattr(paths, n)) for n in absent)} missing: verify re-runs cells from the "
                       f"profile's upstream stages; run `dvc repro logits` (or `bash scripts/run.sh {params['profile']}`) first")
    scratch = paths.artifacts / "verify" / time.strftime("%Y%m%d-%H%M%S")
    scratch_paths = Paths(params, scratch)
    scratch_paths.artifacts.mkdir(parents=True)
    for name in UPSTREAM:
        getattr(scratch_paths, name).symlink_to(getattr(paths, name).resolve(), target_is_directory=True)
    return scratch


def verify(params: dict, ids: list[str], n: int = 3, seed: int = 0, reference: str | None = None, root=".") -> dict:
    """Re-run the chosen cells and compare; returns the report (also written to artifacts/<profile>/verify/)."""
    root = Path(root)
    paths = Paths(params, root)
    ref_path = Path(reference) if reference else paths.results / "cells.csv"
    expected = read_reference(ref_path)
    cells = choose_cells(params, expected, ids, n, seed)
    recorded_path = paths.results / "provenance.json"
    recorded = json.loads(recorded_path.read_text()) if recorded_path.exists() else {}
    scratch = scratch_workspace(params, root)
    labels = LabelVocab.load(paths.data / "labels.json")
    report = {"profile": params["profile"], "reference": str(ref_path), "cells": []}
    try:
        for cell in cells:
            log.info("verify: re-running %s", cell.id)
            scores = run_cell(params, cell, root=scratch).scores(labels)  # the computation of collect's modules
            info = json.loads((Paths(params, scratch).cell_dir(cell) / "info.json").read_text())
            diffs = compare(scores, expected[cell.id])
            report["cells"].append({
                "cell": cell.id, "identical": not diffs, "differences": diffs,
                "provenance_differences": provenance_differences(recorded.get(cell.id), info["provenance"]),
            })
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report["identical"] = sum(c["identical"] for c in report["cells"])
    atomic.write_json(paths.artifacts / "verify" / "report.json", report)
    return report


def format_report(report: dict) -> str:
    lines = [f"verify {report['profile']} against {report['reference']}: "
             f"{report['identical']} of {len(report['cells'])} cells identical"]
    for c in report["cells"]:
        outcome = "identical" if c["identical"] else f"DIFFERENT in {len(c['differences'])} values"
        lines.append(f"  {c['cell']}: {outcome}")
        lines += [f"    {d}" for d in c["differences"][:5]]
        if not c["identical"]:
            lines += [f"    provenance {d}" for d in c["provenance_differences"]] or ["    provenance: identical"]
    return "\n".join(lines)
