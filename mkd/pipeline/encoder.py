"""The profile's prepared data as model inputs, and the evaluation every teacher and student gets.

`Encoder` tokenizes examples once (cached on disk, mkd.models.features) into EncodedSets; `predict_eval_sets` gives a
model's prediction for every evaluation row and `evaluate_model` scores them per locale.
"""

from __future__ import annotations

import torch

from mkd.pipeline.grid import Paths, language_set


class Encoder:
    """Tokenizes examples once (cached on disk) and turns them into EncodedSets."""

    def __init__(self, params: dict, paths: Paths):
        from mkd.data import load_prepared
        from mkd.models.sources import load_tokenizer

        self.params, self.paths = params, paths
        self.data = load_prepared(paths.data)
        self.tokenizer = load_tokenizer(paths.base)
        self.pad_id = self.tokenizer.pad_token_id
        self._draw: tuple[int, object] | None = None   # (seed, its prepared rows): the one draw last read

    def encode(self, examples):
        from mkd.models.features import encode
        from mkd.training.loop import EncodedSet

        ids = encode(self.tokenizer, [e.utt for e in examples], self.params["data"]["max_length"], self.paths.tokens)
        labels = torch.tensor([self.data.labels.id(e.intent) for e in examples], dtype=torch.long)
        return EncodedSet(ids, labels, [e.locale for e in examples])

    def train(self, ls: str, res: str, seed: int | None = None):
        """(examples, EncodedSet) of the training rows of (ls, res): grid seed `seed`'s own draw (a student's,
        artifacts/<profile>/draws), or with seed None the fixed rows of data.seed (the teacher's)."""
        data = self.data if seed is None else self.draw(seed)
        ex = data.train(language_set(self.params, ls), res)
        return ex, self.encode(ex)

    def draw(self, seed: int):
        from mkd.core.errors import DataError
        from mkd.data import load_prepared

        # One draw held at a time: at the paper's size each is ~0.4 GB of rows, and the stages that read several
        # (references, logits) read them one after another; reading one again costs seconds.
        if self._draw is None or self._draw[0] != seed:
            where = self.paths.draw(seed)
            if not where.is_dir():
                raise DataError(f"no training rows drawn for grid seed {seed} ({where} is missing): grid.seeds or "
                                "grid.extra_seeds.seeds must name it when `mkd prepare` runs; re-run `dvc repro prepare`")
            self._draw = None        # the old draw goes before the new one is read
            self._draw = (seed, load_prepared(where))
        return self._draw[1]

    def split(self, locales, split: str):
        ex = self.data.split(locales, split)
        return ex, self.encode(ex)


def predict_eval_sets(model, enc: Encoder):
    """The model's prediction for every dev and test row of every evaluation locale (mkd.evaluation.predictions)."""
    from mkd.evaluation.predict import predict_logits
    from mkd.evaluation.predictions import SPLITS, Predictions

    locales = language_set(enc.params, enc.params["data"]["eval_languages"])
    intents = enc.data.labels.intents
    rows = []
    for split in SPLITS:
        examples, es = enc.split(locales, split)
        predicted = predict_logits(model, es.ids, enc.pad_id).argmax(-1).tolist()
        rows += [(split, e.locale, e.id, e.intent, intents[p]) for e, p in zip(examples, predicted)]
    return Predictions(tuple(rows))


def evaluate_model(model, enc: Encoder) -> dict:
    """{"dev": {metric: {locale: v, "avg": v}, "distinct_predictions": n}, "test": {...}} on every eval locale.
    `distinct_predictions` (how many labels the model predicts at all) lets the analysis flag a collapsed,
    constant-prediction model instead of counting it as evidence."""
    return predict_eval_sets(model, enc).scores(enc.data.labels)
