"""The `evaluate` metric modules that score per-example predictions: per-locale accuracy and macro-F1.

They are kept in this repo (mkd/evaluation/metric_modules, loaded by path:
`evaluate.load("accuracy")` needs the Hub); their computation lives in mkd.evaluation.scores, which the modules call and
which teachers and probes call directly, so no training process pays `import evaluate` (~6 s). Cells keep
per-example predictions (mkd.evaluation.predictions) that collect scores with the modules themselves (`module_scorers`;
tests check both agree bit for bit).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from mkd.axes import METRICS

METRIC_DIR = Path(__file__).with_name("metric_modules")


@lru_cache(maxsize=None)
def load_metric(name: str):
    import evaluate  # lazy: ~10 s import

    if not (METRIC_DIR / name / f"{name}.py").exists():
        raise FileNotFoundError(f"metric module {name!r} not found in {METRIC_DIR}")
    return evaluate.load(str(METRIC_DIR / name), keep_in_memory=True)  # no Arrow cache file per compute call


def module_scorers() -> dict:
    """{metric: f(predictions, references, groups) -> {group: value}} computed by the `evaluate` modules
    themselves, one call per metric for all groups (what collect scores with; one `import evaluate` per process).
    A call per locale instead cost ~7 ms of the module's Arrow bookkeeping each: 120 s for the cpu grid."""
    return {m: (lambda p, r, g, m=m: load_metric(m).compute(predictions=p, references=r, groups=g)[m]) for m in METRICS}
