"""Fingerprints that decide when a finished result or an interrupted run's checkpoint belongs to the current params:
a cell's params digest (recorded in its info.json, checked by collect, keyed in the fanout ledger) and the short
digest that names checkpoint folders."""

from __future__ import annotations

from mkd.core.hashing import json_digest
from mkd.pipeline.grid import Cell


def digest(obj) -> str:
    """Short fingerprint (16 hex): names folders and is recorded as a cell's params_digest."""
    return json_digest(obj, chars=16)


def cell_student(params: dict, cell: Cell) -> dict:
    """What a cell reads of the `student` section: its KD setting's objective and its init's recipe, never the
    other setting's or init's (dvc.yaml declares the same keys, so an ablation of one re-runs only its cells)."""
    from mkd.config import WIDTH_KEYS
    from mkd.training.recipe import section_for_init

    s = params["student"]
    read = {"layers": s["layers"], "layer_map": s["layer_map"], "objective": s["objective"][cell.kd],
            "recipe": section_for_init(s, cell.init), "save_model": s["save_model"]}
    widths = {k: s[k] for k in WIDTH_KEYS if s.get(k) is not None}
    return {**read, "width": widths} if widths else read  # a teacher-wide student's digest as before widths existed


def cell_digest(params: dict, cell: Cell) -> str:
    """Fingerprint of everything a cell's result depends on; collect refuses results whose digest differs. The
    upstream sections whole (data, base model and teacher reach the cell through their artifacts), of the student
    only what this cell reads."""
    relevant = {**{k: params[k] for k in ("profile", "data", "base", "teacher")}, "student": cell_student(params, cell)}
    return digest({"params": relevant, "cell": cell.identity})
