"""Kind `setup`: the cpu-profile artifacts the cells need, built once and cached (prepared data, trimmed base,
the teacher trimmed and untrimmed, cached teacher logits)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from benchmark.common import CellSize, Spans, bench_cache, cpu8, digest
from benchmark.workers.shared import paths_of


def _teacher_key(paths, params: dict, mode: str, teacher_rows: int) -> str:
    kept = json.loads((paths.base / "trim_kept_ids.json").read_text())
    return digest({"v": 2, "kept": digest(kept), "mode": mode, "recipe": params["teacher"], "pooling": params["base"]["pooling"],
                   "rows": teacher_rows, "locales": list(cpu8())})


def w_setup(spec, spans: Spans) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mkd.pipeline import stages
    from mkd.pipeline.encoder import Encoder
    from mkd.pipeline.grid import language_set
    from mkd.training.loop import train_config
    from mkd.evaluation.predict import predict_logits
    from mkd.models.sources import build_base_model

    params, root = spec["params"], Path(spec["root"])
    paths = paths_of(spec)
    info: dict = {}
    if not (paths.data / "manifest.json").exists() or not (paths.draw(0) / "manifest.json").exists():
        with spans("prepare"):
            stages.prepare(params, root)
    if not (paths.base / "trim_stats.json").exists():
        with spans("trim"):
            stages.build_base(params, root)
    info["trim_stats"] = json.loads((paths.base / "trim_stats.json").read_text())

    # ---- the teacher: a fine-tuned (or random-head) 12-layer e5-small, trimmed; and its untrimmed twin
    mode, trows = spec["teacher"], int(spec["teacher_rows"])
    tdir = bench_cache() / "teachers" / _teacher_key(paths, params, mode, trows)
    enc = Encoder(params, paths)
    labels = enc.data.labels
    label_kw = dict(num_labels=len(labels), id2label=dict(enumerate(labels.intents)),
                    label2id={n: i for i, n in enumerate(labels.intents)})
    if not (tdir / "full" / "config.json").exists():
        from mkd.training.loop import fit

        seed = 1234
        _, dev = enc.split(cpu8(), "dev")
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(paths.base, **label_kw)
        stats = {"mode": mode}
        if mode == "finetuned":
            _, train = enc.train("bench8", f"r{trows}")
            cfg = train_config({**params["teacher"], "checkpoint_every": 0}, {"ce": 1.0}, seed)
            with spans("teacher_finetune"):
                stats.update(fit(model, train, dev, cfg, pad_id=enc.pad_id, name="benchmark teacher"))
        else:  # a seeded random 60-way head on the pretrained body
            from mkd.training.loop import dev_accuracy

            stats["best_dev_accuracy"] = dev_accuracy(model, dev, enc.pad_id, 128, "cpu")
        trimmed = tdir / "trimmed"
        if trimmed.exists():
            shutil.rmtree(trimmed)
        model.save_pretrained(trimmed)
        enc.tokenizer.save_pretrained(trimmed)
        labels.save(trimmed / "labels.json")
        # The untrimmed twin: the e5-small folder's 250k-row embedding table with the teacher's rows written
        # back at their old ids; every other weight is the teacher's. On these texts both compute the same.
        e5 = build_base_model(params["base"]["model"])
        full = AutoModelForSequenceClassification.from_pretrained(e5, **label_kw)
        kept = torch.as_tensor(json.loads((paths.base / "trim_kept_ids.json").read_text()))
        fsd, tsd = full.state_dict(), model.state_dict()
        with torch.no_grad():
            for k, v in tsd.items():
                if fsd[k].shape == v.shape:
                    fsd[k].copy_(v)
                else:
                    fsd[k][kept] = v
        full.load_state_dict(fsd)
        # check: the two teachers' logits on dev texts
        dev_ex = enc.data.split(cpu8(), "dev")[:64]
        texts = [e.utt for e in dev_ex]
        tok_full = AutoTokenizer.from_pretrained(e5)
        model.eval(), full.eval()
        with torch.no_grad():
            a = model(**enc.tokenizer(texts, padding=True, return_tensors="pt")).logits
            b = full(**tok_full(texts, padding=True, return_tensors="pt")).logits
        stats["trimmed_vs_full_max_abs_logit_diff"] = float((a - b).abs().max())
        full.save_pretrained(tdir / "full")
        tok_full.save_pretrained(tdir / "full")
        (tdir / "teacher_info.json").write_text(json.dumps(stats, indent=1, default=str))
    info["teacher"] = json.loads((tdir / "teacher_info.json").read_text())
    info["teacher_dir"] = str(tdir)

    paths.teachers.mkdir(parents=True, exist_ok=True)
    link = paths.teachers / "shared"
    if link.is_symlink() or link.exists():
        if link.is_symlink() and os.readlink(link) == str(tdir / "trimmed"):
            pass
        else:
            link.unlink() if link.is_symlink() else shutil.rmtree(link)
    if not link.exists():
        link.symlink_to(tdir / "trimmed", target_is_directory=True)

    # ---- cached teacher logits for every training set the benchmark needs (as mkd cache-logits writes them)
    marker = paths.logits / "teacher_dir.txt"
    if marker.exists() and marker.read_text() != str(tdir):
        shutil.rmtree(paths.logits)
    paths.logits.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(tdir))
    teacher = None
    for s in spec["sizes"]:
        size = CellSize(**s)
        out = paths.logits_file(size.language_set, size.resource, 0)  # the benchmark's cells are seed 0's
        examples, train = enc.train(size.language_set, size.resource, 0)
        for split in ("dev", "test"):  # warm the token cache, as earlier cells of the grid would have
            enc.split(language_set(params, size.language_set), split)
        if out.exists():
            continue
        if teacher is None:
            teacher = AutoModelForSequenceClassification.from_pretrained(paths.teachers / "shared")
        logits = predict_logits(teacher, train.ids, enc.pad_id)
        tmp = out.with_suffix(".tmp")
        torch.save({"teacher": "shared", "keys": [(e.locale, e.id) for e in examples], "logits": logits}, tmp)
        os.replace(tmp, out)
    return info
