"""Accuracy as an `evaluate` metric module, kept in the repo and loaded by path.

Why here: `evaluate` ships no metrics and `evaluate.load("accuracy")` needs the Hub.
"""

import datasets
import evaluate

_DESCRIPTION = "Fraction of predictions equal to the reference label."
_CITATION = ""
_KWARGS_DESCRIPTION = "predictions: list of int label ids; references: list of int label ids. Returns {'accuracy': float}; with groups (a label per row, e.g. its locale): {'accuracy': {group: float}}, one compute call for all groups."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, groups=None):
        from mkd.evaluation.scores import by_group, accuracy  # the one implementation, also used where `evaluate` is not imported

        if groups is None:
            return {"accuracy": accuracy(predictions, references)}
        return {"accuracy": by_group(accuracy, predictions, references, groups)}
