"""The profile's prepared data as model inputs, and the evaluation every teacher and student gets.

`Encoder` tokenizes examples once (cached on disk, mkd.features) into EncodedSets; `evaluate_model` scores a
model per locale on every evaluation locale's dev and test rows.
"""

from __future__ import annotations

import torch

from mkd.grid import Paths, language_set


class Encoder:
    """Tokenizes examples once (cached on disk) and turns them into EncodedSets."""

    def __init__(self, params: dict, paths: Paths):
        from mkd.data import load_prepared
        from mkd.models import load_tokenizer

        self.params, self.paths = params, paths
        self.data = load_prepared(paths.data)
        self.tokenizer = load_tokenizer(paths.base)
        self.pad_id = self.tokenizer.pad_token_id

    def encode(self, examples):
        from mkd.features import encode
        from mkd.train import EncodedSet

        ids = encode(self.tokenizer, [e.utt for e in examples], self.params["data"]["max_length"], self.paths.tokens)
        labels = torch.tensor([self.data.labels.id(e.intent) for e in examples], dtype=torch.long)
        return EncodedSet(ids, labels, [e.locale for e in examples])

    def train(self, ls: str, res: str):
        ex = self.data.train(language_set(self.params, ls), res)
        return ex, self.encode(ex)

    def split(self, locales, split: str):
        ex = self.data.split(locales, split)
        return ex, self.encode(ex)


def evaluate_model(model, enc: Encoder) -> dict:
    """{"dev": {metric: {locale: v, "avg": v}, "distinct_predictions": n}, "test": {...}} on every eval locale.
    `distinct_predictions` (how many labels the model predicts at all) lets the analysis flag a collapsed,
    constant-prediction model instead of counting it as evidence."""
    from mkd.evaluation import per_locale_metrics, predict_logits

    locales = language_set(enc.params, enc.params["data"]["eval_languages"])
    out = {}
    for split in ("dev", "test"):
        _, es = enc.split(locales, split)
        preds = predict_logits(model, es.ids, enc.pad_id).argmax(-1)
        out[split] = per_locale_metrics(preds.tolist(), es.labels.tolist(), es.locales)
        out[split]["distinct_predictions"] = len(set(preds.tolist()))
    return out
