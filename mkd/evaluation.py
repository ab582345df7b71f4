"""Per-locale accuracy and macro-F1, computed by `evaluate` metric modules kept in this repo.

The modules live in mkd/metric_modules and are loaded by path: `evaluate.load("accuracy")` needs the
Hub. `evaluate` is imported lazily because importing it costs seconds.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mkd.features import length_grouped_batches, pad_batch

METRIC_DIR = Path(__file__).with_name("metric_modules")
METRICS = ("accuracy", "macro_f1")


@lru_cache(maxsize=None)
def load_metric(name: str):
    import evaluate  # lazy: ~10 s import

    if not (METRIC_DIR / name / f"{name}.py").exists():
        raise FileNotFoundError(f"metric module {name!r} not found in {METRIC_DIR}")
    return evaluate.load(str(METRIC_DIR / name))


@torch.no_grad()
def predict_logits(model, encoded: Sequence[Sequence[int]], pad_id: int, batch_size: int = 128, device=None) -> torch.Tensor:
    """Logits for every sequence, in input order, computed on the model's own device (or `device`), under the
    model's pooling. Batches are length-sorted to waste little on padding."""
    from mkd.heads import forward

    model.eval()
    if device is None:
        device = next(model.parameters()).device
    out = torch.empty(len(encoded), model.config.num_labels)
    lengths = [len(s) for s in encoded]
    for batch in length_grouped_batches(lengths, batch_size, seed=0, epoch=0, shuffle=False):
        ids, mask = pad_batch([encoded[i] for i in batch], pad_id)
        logits = forward(model, ids.to(device), mask.to(device)).logits
        out[torch.as_tensor(batch)] = logits.float().cpu()
    return out


def per_locale_metrics(predictions: Sequence[int], references: Sequence[int], locales: Sequence[str]) -> dict[str, dict[str, float]]:
    """{metric: {locale: value, ..., "avg": mean over locales}}. The average is over locales, not rows,
    so every language counts the same, as in the paper's averaged scores."""
    predictions = np.asarray(predictions)
    references = np.asarray(references)
    locales = np.asarray(locales)
    result: dict[str, dict[str, float]] = {m: {} for m in METRICS}
    for locale in sorted(set(locales.tolist())):
        sel = locales == locale
        for m in METRICS:
            value = load_metric(m).compute(predictions=predictions[sel].tolist(), references=references[sel].tolist())[m]
            result[m][locale] = float(value)
    for m in METRICS:
        values = list(result[m].values())
        result[m]["avg"] = float(np.mean(values))
    return result
