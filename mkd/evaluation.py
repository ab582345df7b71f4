"""Per-locale accuracy and macro-F1.

The metrics are `evaluate` metric modules kept in this repo (mkd/metric_modules, loaded by path:
`evaluate.load("accuracy")` needs the Hub); their computation lives in mkd.scores, which the modules call and
which teachers and probes call directly, so no training process pays `import evaluate` (~6 s). Cells keep
per-example predictions (mkd.predictions) that collect scores with the modules themselves (`module_scorers`;
tests check both agree bit for bit).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

from mkd.axes import METRICS
from mkd.features import length_grouped_batches, pad_batch

METRIC_DIR = Path(__file__).with_name("metric_modules")


@lru_cache(maxsize=None)
def load_metric(name: str):
    import evaluate  # lazy: ~10 s import

    if not (METRIC_DIR / name / f"{name}.py").exists():
        raise FileNotFoundError(f"metric module {name!r} not found in {METRIC_DIR}")
    return evaluate.load(str(METRIC_DIR / name), keep_in_memory=True)  # no Arrow cache file per compute call


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


def module_scorers() -> dict:
    """{metric: f(predictions, references, groups) -> {group: value}} computed by the `evaluate` modules
    themselves, one call per metric for all groups (what collect scores with; one `import evaluate` per process).
    A call per locale instead cost ~7 ms of the module's Arrow bookkeeping each: 120 s for the cpu grid."""
    return {m: (lambda p, r, g, m=m: load_metric(m).compute(predictions=p, references=r, groups=g)[m]) for m in METRICS}
