"""Stage `teachers`: each teacher the grid needs fine-tuned on its rows; the best-on-dev weights kept."""

from __future__ import annotations

import json
import logging
import shutil
import time

import torch

from mkd.core import atomic
from mkd.pipeline import fingerprints
from mkd.pipeline.encoder import Encoder, evaluate_model
from mkd.pipeline.grid import Paths, language_set, needed_teachers
from mkd.pipeline.provenance import provenance

log = logging.getLogger("mkd")


def train_teachers(params: dict, root=".") -> dict:
    from transformers import AutoModelForSequenceClassification

    from mkd.data import seed_for
    from mkd.training.loop import fit, train_config

    paths = Paths(params, root)
    enc = Encoder(params, paths)
    t = params["teacher"]
    summary = {}
    for key, (ls, res) in needed_teachers(params).items():
        out_dir = paths.teachers / key
        if (out_dir / "teacher_metrics.json").exists():  # finished earlier (an interrupted multi-teacher stage)
            summary[key] = json.loads((out_dir / "teacher_metrics.json").read_text())
            continue
        _, train = enc.train(ls, res)
        _, dev = enc.split(language_set(params, ls), "selection")  # the dev rows model selection reads (data.selection_dev_rows)
        seed = seed_for("teacher", t["seed"], key)
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            paths.base, num_labels=len(enc.data.labels),
            id2label=dict(enumerate(enc.data.labels.intents)), label2id={n: i for i, n in enumerate(enc.data.labels.intents)},
        )
        cfg = train_config(t, {"ce": 1.0}, seed)
        ckpt = paths.checkpoints / f"teacher-{key}-{fingerprints.digest([params['data'], params['base'], t, key])}"
        t0 = time.perf_counter()
        stats = fit(model, train, dev, cfg, pad_id=enc.pad_id, name=f"teacher[{key}]", checkpoint_dir=ckpt)
        metrics = evaluate_model(model, enc)
        info = {"key": key, "language_set": ls, "resource": res, "train_rows": len(train), "wall_seconds": time.perf_counter() - t0,
                "training": stats, "metrics": metrics, "provenance": provenance()}
        with atomic.atomic_dir(out_dir) as tmp:
            model.save_pretrained(tmp)
            enc.tokenizer.save_pretrained(tmp)
            enc.data.labels.save(tmp / "labels.json")
            atomic.write_json(tmp / "teacher_metrics.json", info)
        shutil.rmtree(ckpt, ignore_errors=True)
        log.info("teacher[%s]: test accuracy %.4f (avg over locales)", key, metrics["test"]["accuracy"]["avg"])
        summary[key] = info
    return summary
