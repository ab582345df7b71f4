"""The two scores every model is reported with, as plain functions of label ids.

They are the computation of the `evaluate` metric modules in mkd/evaluation/metric_modules (which call them), so a cell,
a teacher or a probe scores itself without importing `evaluate` (about 6 s per process: 72 cells paid ~7
minutes of the cpu grid for it); tests check that both give the same numbers, bit for bit.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Fraction of predictions equal to the reference label."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.size == 0:
        raise ValueError("accuracy of an empty prediction set is undefined")
    return float((predictions == references).mean())


def macro_f1(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes seen in predictions or references (scikit-learn's
    classes when `labels` is not given); a class with references but no correct prediction scores 0."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.size == 0:
        raise ValueError("macro-F1 of an empty prediction set is undefined")
    scores = []
    for c in np.union1d(predictions, references):
        tp = np.sum((predictions == c) & (references == c))
        fp = np.sum((predictions == c) & (references != c))
        fn = np.sum((predictions != c) & (references == c))
        denom = 2 * tp + fp + fn
        scores.append(0.0 if denom == 0 else 2 * tp / denom)
    return float(np.mean(scores))


def by_group(score, predictions: Sequence[int], references: Sequence[int], groups: Sequence[str]) -> dict[str, float]:
    """{group: score on that group's rows}, groups sorted (a cell's per-locale scores in one call)."""
    predictions, references, groups = np.asarray(predictions), np.asarray(references), np.asarray(groups)
    return {g: score(predictions[groups == g].tolist(), references[groups == g].tolist()) for g in sorted(set(groups.tolist()))}


SCORES = {"accuracy": accuracy, "macro_f1": macro_f1}  # the names mkd.axes.METRICS lists
