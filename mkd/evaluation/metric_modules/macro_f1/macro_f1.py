"""Macro-averaged F1 as an `evaluate` metric module, kept in the repo and loaded by path.

The classes averaged over are those seen in the predictions or the references (as scikit-learn does
when `labels` is not given); a class with references but no correct prediction scores 0.
"""

import datasets
import evaluate

_DESCRIPTION = "Unweighted mean over classes of per-class F1."
_CITATION = ""
_KWARGS_DESCRIPTION = "predictions, references: lists of int label ids. Returns {'macro_f1': float}; with groups (a label per row, e.g. its locale): {'macro_f1': {group: float}}, one compute call for all groups."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MacroF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, groups=None):
        from mkd.evaluation.scores import by_group, macro_f1  # the one implementation, also used where `evaluate` is not imported

        if groups is None:
            return {"macro_f1": macro_f1(predictions, references)}
        return {"macro_f1": by_group(macro_f1, predictions, references, groups)}
