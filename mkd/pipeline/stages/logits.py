"""Stage `logits`: the teachers' logits for every training row, computed once for all cells."""

from __future__ import annotations

import torch

from mkd.core import atomic
from mkd.pipeline.encoder import Encoder
from mkd.pipeline.grid import Paths, all_seeds, teacher_key


def cache_logits(params: dict, root=".") -> None:
    """Teacher logits for the training rows of every (language set, resource, grid seed), as that seed drew them
    (one file each: a cell declares only its own)."""
    from transformers import AutoModelForSequenceClassification

    from mkd.core.device import compute_device
    from mkd.evaluation.predict import predict_logits

    paths = Paths(params, root)
    enc = Encoder(params, paths)
    with atomic.atomic_dir(paths.logits) as tmp:
        for ls in params["grid"]["language_sets"]:
            for res in params["grid"]["resources"]:
                key, _, _ = teacher_key(params, ls, res)
                teacher = AutoModelForSequenceClassification.from_pretrained(paths.teachers / key).to(compute_device())
                for seed in all_seeds(params):
                    examples, train = enc.train(ls, res, seed)
                    logits = predict_logits(teacher, train.ids, enc.pad_id)
                    torch.save({"teacher": key, "keys": [(e.locale, e.id) for e in examples], "logits": logits},
                               tmp / paths.logits_file(ls, res, seed).name)
