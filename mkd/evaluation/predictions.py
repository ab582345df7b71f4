"""Per-example predictions: what a cell keeps of its evaluation, and the per-locale scores computed from them.

A cell writes one `predictions.csv.gz` (split, locale, id, intent, predicted: every dev and test row of every
evaluation locale, 18 KB for the cpu profile's 4,160 rows) instead of finished numbers, so a new metric, a per-intent analysis or a confusion
matrix needs no retraining: `pandas.read_csv(path)` reads it. `collect` scores all cells in one process with the
`evaluate` modules (mkd/evaluation/metric_modules); a teacher or a cell scoring itself uses their plain computation
(mkd.evaluation.scores: same numbers bit for bit, without the ~6 s `import evaluate`).
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from mkd.axes import METRICS
from mkd.evaluation.scores import SCORES, by_group

FILE_NAME = "predictions.csv.gz"
COLUMNS = ("split", "locale", "id", "intent", "predicted")
SPLITS = ("dev", "test")


@dataclass(frozen=True)
class Predictions:
    rows: tuple[tuple[str, str, str, str, str], ...]  # COLUMNS, in evaluation order

    def to_bytes(self) -> bytes:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(self.rows)
        return gzip.compress(buf.getvalue().encode("utf-8"), mtime=0)  # mtime 0: the same rows give the same bytes

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "predictions") -> "Predictions":
        reader = csv.reader(io.StringIO(gzip.decompress(data).decode("utf-8")))
        header = tuple(next(reader, ()))
        if header != COLUMNS:
            raise ValueError(f"{source}: columns {header}, expected {COLUMNS}")
        return cls(tuple(tuple(row) for row in reader))

    @classmethod
    def read(cls, path: str | Path) -> "Predictions":
        return cls.from_bytes(Path(path).read_bytes(), str(path))

    def scores(self, labels, scorers: Mapping[str, Callable] | None = None) -> dict:
        """{split: {metric: {locale: v, "avg": mean over locales}, "distinct_predictions": n}}. `labels` (the
        prepared data's LabelVocab) gives the label ids the scores are computed on, as in training."""
        out = {}
        for split in SPLITS:
            rows = [r for r in self.rows if r[0] == split]
            predicted = [labels.id(r[4]) for r in rows]
            out[split] = per_locale_metrics(predicted, [labels.id(r[3]) for r in rows], [r[1] for r in rows], scorers)
            out[split]["distinct_predictions"] = len(set(predicted))  # a collapsed, constant-prediction model
        return out


def per_locale_metrics(predictions, references, locales, scorers: Mapping[str, Callable] | None = None) -> dict[str, dict[str, float]]:
    """{metric: {locale: value, ..., "avg": mean over locales}}. The average is over locales, not rows,
    so every language counts the same, as in the paper's averaged scores. `scorers`: {metric: f(predictions,
    references, groups) -> {group: value}}; default mkd.evaluation.scores' functions (collect passes the `evaluate` modules)."""
    scorers = scorers or {m: partial(by_group, SCORES[m]) for m in METRICS}
    result: dict[str, dict[str, float]] = {}
    for m in METRICS:
        result[m] = dict(scorers[m](list(predictions), list(references), list(locales)))
        result[m]["avg"] = float(np.mean(list(result[m].values())))
    return result
