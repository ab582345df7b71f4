"""What the workers share: thread setup, the cell they time, its seed and paths, a locale-averaged accuracy."""

from __future__ import annotations


from benchmark.common import CellSize


def setup_threads(spec) -> int:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    return torch.get_num_threads()


def paths_of(spec):
    from mkd.pipeline.grid import Paths

    return Paths(spec["params"], spec["root"])


def grid_cell(size: CellSize):
    from mkd.pipeline.grid import Cell

    return Cell(size.language_set, size.resource, "teacher", "on", 0)


def student_seed(size: CellSize) -> int:
    from mkd.data import seed_for

    return seed_for("student", size.language_set, size.resource, 0)  # as run_cell derives it


def locale_avg_accuracy(preds, labels, locales) -> float:
    by = {}
    for p, y, loc in zip(preds, labels, locales):
        by.setdefault(loc, []).append(int(p) == int(y))
    return float(sum(sum(v) / len(v) for v in by.values()) / len(by))
