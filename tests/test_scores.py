"""The scores cells report: mkd.evaluation.scores (what the pipeline calls) against the `evaluate` metric modules kept in the
repo (what a user of `evaluate` loads), bit for bit, and no `import evaluate` in a process that scores a model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mkd.evaluation.metrics import load_metric, module_scorers
from mkd.evaluation.predictions import per_locale_metrics
from mkd.evaluation.scores import SCORES


@pytest.mark.parametrize("n, labels", [(1, 60), (30, 60), (2974, 60), (500, 3)])
def test_the_evaluate_modules_and_the_pipeline_give_the_same_numbers(n, labels):
    rng = np.random.default_rng(n)
    references = rng.integers(0, labels, n).tolist()
    # mostly right, some wrong, some labels never predicted: the cases macro-F1 averages over
    predictions = [r if rng.random() < 0.6 else int(rng.integers(0, labels)) for r in references]
    locales = rng.choice(["en-US", "de-DE", "sw-KE"], n).tolist()
    for name, score in SCORES.items():
        via_evaluate = load_metric(name).compute(predictions=predictions, references=references)[name]
        assert score(predictions, references) == via_evaluate  # exactly: the modules call these functions
        # grouped (collect's one call per cell, split and metric) = one call per group
        grouped = load_metric(name).compute(predictions=predictions, references=references, groups=locales)[name]
        assert list(grouped) == sorted(set(locales))
        for loc, value in grouped.items():
            rows = [i for i, x in enumerate(locales) if x == loc]
            assert value == load_metric(name).compute(predictions=[predictions[i] for i in rows],
                                                      references=[references[i] for i in rows])[name]
    # the pipeline's per-locale scores through the modules equal those through mkd.evaluation.scores, bit for bit
    assert per_locale_metrics(predictions, references, locales, module_scorers()) == per_locale_metrics(predictions, references, locales)


def test_known_values():
    assert SCORES["accuracy"]([0, 1, 1, 2], [0, 1, 2, 2]) == 0.75
    # class 0: F1 1; class 1: tp 1 fp 1 -> 2/3; class 2: tp 1 fn 1 -> 2/3
    assert SCORES["macro_f1"]([0, 1, 1, 2], [0, 1, 2, 2]) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    with pytest.raises(ValueError, match="empty"):
        SCORES["accuracy"]([], [])


def test_scoring_a_model_does_not_import_evaluate():
    code = ("import sys; from mkd.evaluation.predictions import per_locale_metrics; "
            "m = per_locale_metrics([0, 1, 2, 2], [0, 1, 2, 1], ['en-US', 'en-US', 'de-DE', 'de-DE']); "
            "assert m['accuracy'] == {'de-DE': 0.5, 'en-US': 1.0, 'avg': 0.75}, m; "
            "assert 'evaluate' not in sys.modules and 'datasets' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_per_locale_metrics_average_over_locales_not_rows():
    m = per_locale_metrics([0] * 9 + [1], [0] * 9 + [0], ["en-US"] * 9 + ["sw-KE"])
    assert m["accuracy"] == {"en-US": 1.0, "sw-KE": 0.0, "avg": 0.5}
