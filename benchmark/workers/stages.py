"""Kinds `trim` and `logits`: the vocabulary-trimming and teacher-logit stages a cell relies on, into scratch folders."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from benchmark.common import CellSize, Spans
from benchmark.workers.shared import paths_of, setup_threads


def w_trim(spec, spans: Spans) -> dict:
    with spans("imports"):
        from mkd.models.sources import build_base_model
        from mkd.models.vocab_trim import trim_vocabulary
        from mkd.pipeline.stages.base import trim_corpus
    threads = setup_threads(spec)
    paths = paths_of(spec)
    scratch = Path(tempfile.mkdtemp(prefix="bench-trim-"))
    try:
        with spans("trim"):  # = pipeline.build_base: the e5 folder is already converted (cached), as on a rerun
            stats = trim_vocabulary(build_base_model(spec["params"]["base"]["model"]),
                                    trim_corpus(paths), scratch / "base")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"threads": threads, "trim_stats": stats}


def w_logits(spec, spans: Spans) -> dict:
    """pipeline.cache_logits for one (language set, resource), into a scratch folder."""
    with spans("imports"):
        import torch
        from transformers import AutoModelForSequenceClassification

        from mkd.pipeline.encoder import Encoder
        from mkd.evaluation.predict import predict_logits
    threads = setup_threads(spec)
    size = CellSize(**spec["size"])
    paths = paths_of(spec)
    scratch = Path(tempfile.mkdtemp(prefix="bench-logits-"))
    try:
        with spans("logits"):
            enc = Encoder(spec["params"], paths)
            teacher = AutoModelForSequenceClassification.from_pretrained(paths.teachers / "shared")
            examples, train = enc.train(size.language_set, size.resource, 0)
            logits = predict_logits(teacher, train.ids, enc.pad_id)
            torch.save({"teacher": "shared", "keys": [(e.locale, e.id) for e in examples], "logits": logits},
                       scratch / f"{size.language_set}-{size.resource}.pt")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"threads": threads, "rows": len(examples)}
