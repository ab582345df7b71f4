"""Fingerprints that decide when a finished result or an interrupted run's checkpoint belongs to the current params:
a cell's params digest (recorded in its info.json, checked by collect, keyed in the fanout ledger) and the short
digest that names checkpoint folders."""

from __future__ import annotations

from mkd.core.hashing import json_digest
from mkd.pipeline.grid import Cell


def digest(obj) -> str:
    """Short fingerprint (16 hex): names folders and is recorded as a cell's params_digest."""
    return json_digest(obj, chars=16)


def cell_digest(params: dict, cell: Cell) -> str:
    """Fingerprint of everything a cell's result depends on; collect refuses results whose digest differs."""
    relevant = {k: params[k] for k in ("profile", "data", "base", "teacher", "student")}
    return digest({"params": relevant, "cell": cell.__dict__})
