"""Benchmark workers: each runs in its own process (`python -m benchmark.workers KIND SPEC OUT`), records
its time spans (benchmark.common.Spans) and writes a JSON result; the scheduler turns spans into active
seconds and reads the process's peak RSS.

Kinds:
  setup     build (once, cached) the cpu-profile artifacts the cells need: prepared data, trimmed base,
            the teacher (trimmed, and an untrimmed copy for the baseline), cached teacher logits
  ours      one grid cell exactly as `dvc repro` runs it: mkd.pipeline.stages.run_cell
  baseline  the same distillation written as a user would: transformers.Trainer, teacher run every step,
            inputs padded to 128, the full 250k vocabulary
  trim      the vocabulary-trimming stage (mkd build-base), into a scratch folder
  logits    the teacher-logit caching stage (mkd cache-logits) for one training set, into a scratch folder
  profile   matmul FLOP/s, and the forward / backward / clip / optimizer split of both contenders' steps
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmark.common import CellSize, Spans, bench_cache, cpu8, digest, set_env, training_batches, write_json


# --------------------------------------------------------------------------------------- helpers


def _setup_threads(spec) -> int:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    return torch.get_num_threads()


def _paths(spec):
    from mkd.pipeline.grid import Paths

    return Paths(spec["params"], spec["root"])


def _cell(size: CellSize):
    from mkd.pipeline.grid import Cell

    return Cell(size.language_set, size.resource, "teacher", "on", 0)


def _student_seed(size: CellSize) -> int:
    from mkd.data import seed_for

    return seed_for("student", size.language_set, size.resource, 0)  # as run_cell derives it


def _locale_avg_accuracy(preds, labels, locales) -> float:
    by = {}
    for p, y, loc in zip(preds, labels, locales):
        by.setdefault(loc, []).append(int(p) == int(y))
    return float(sum(sum(v) / len(v) for v in by.values()) / len(by))


def _teacher_key(paths, params: dict, mode: str, teacher_rows: int) -> str:
    kept = json.loads((paths.base / "trim_kept_ids.json").read_text())
    return digest({"v": 2, "kept": digest(kept), "mode": mode, "recipe": params["teacher"], "pooling": params["base"]["pooling"],
                   "rows": teacher_rows, "locales": list(cpu8())})


# ----------------------------------------------------------------------------------------- setup


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
    paths = _paths(spec)
    info: dict = {}
    if not (paths.data / "manifest.json").exists():
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
        out = paths.logits / f"{size.language_set}-{size.resource}.pt"
        examples, train = enc.train(size.language_set, size.resource)
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


# ------------------------------------------------------------------------------------------ ours


def w_ours(spec, spans: Spans) -> dict:
    with spans("imports"):
        import torch

        import mkd.pipeline.stages.cell as P
        import mkd.training.loop as T
    threads = _setup_threads(spec)
    size = CellSize(**spec["size"])

    def timed(label, fn):
        def wrapper(*a, **kw):
            with spans(label):
                return fn(*a, **kw)

        return wrapper

    T.fit = timed("fit", T.fit)                       # run_cell imports fit at call time
    T.dev_accuracy = timed("dev_eval", T.dev_accuracy)  # per-epoch model selection inside fit
    T._save = timed("checkpoint", T._save)            # resumable checkpoints (cpu profile: every 100 steps)
    P.predict_eval_sets = timed("final_eval", P.predict_eval_sets)
    # a leftover checkpoint (an interrupted earlier run) would make run_cell resume instead of train
    shutil.rmtree(P.Paths(spec["params"], spec["root"]).checkpoints, ignore_errors=True)
    with spans("cell"):
        P.run_cell(spec["params"], _cell(size), root=spec["root"])
    info = json.loads((P.Paths(spec["params"], spec["root"]).cell_dir(_cell(size)) / "info.json").read_text())
    tr = info["training"]
    return {"threads": threads, "train_rows": info["train_rows"], "examples": tr["train_examples_seen"],
            "steps": tr["steps"], "history": tr["history"], "best_dev_accuracy": tr["best_dev_accuracy"],
            "final_dev_accuracy": tr["history"][-1]["dev_accuracy"], "seed": info["seed_used"],
            "torch": torch.__version__}


# -------------------------------------------------------------------------------------- baseline


def w_baseline(spec, spans: Spans) -> dict:
    """What a user would write instead: the Trainer with the teacher in compute_loss."""
    with spans("imports"):
        import datasets
        import torch
        import torch.nn.functional as F
        import transformers
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

        from mkd.models import heads
        from mkd.data import load_prepared
        from mkd.pipeline.grid import language_set
        from mkd.training.losses import kd_objective
        from mkd.models.students import layer_map, make_student
        from mkd.training.loop import configure_optimizer, train_config
    threads = _setup_threads(spec)
    size = CellSize(**spec["size"])
    params, paths = spec["params"], _paths(spec)
    s = params["student"]
    e5, teacher_dir = spec["e5_dir"], spec["teacher_full_dir"]

    class DistillationTrainer(Trainer):
        """The cell's recipe in Trainer terms: the teacher run in compute_loss, the model's pooling (e5 mean-pools)
        in every forward, and the recipe's optimizer (mkd.training.loop.configure_optimizer: the head at its own learning
        rate, frozen word embeddings, no decay on biases and LayerNorm); everything else is the Trainer's default."""

        def __init__(self, *args, teacher=None, kd_weight=0.5, ce_weight=0.5, recipe=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher = teacher.eval()
            self.kd_weight, self.ce_weight, self.recipe = kd_weight, ce_weight, recipe

        def create_optimizer(self, model=None):
            self.optimizer = configure_optimizer(self.model, self.recipe, "cpu")
            return self.optimizer

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            outputs = heads.forward(model, inputs["input_ids"], inputs["attention_mask"])
            with torch.no_grad():
                teacher_logits = heads.forward(self.teacher, inputs["input_ids"], inputs["attention_mask"]).logits
            loss = (self.ce_weight * F.cross_entropy(outputs.logits, labels)
                    + self.kd_weight * F.mse_loss(outputs.logits, teacher_logits))
            return (loss, outputs) if return_outputs else loss

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad():
                return None, heads.forward(model, inputs["input_ids"], inputs["attention_mask"]).logits, None

    with spans("cell"):
        with spans("setup"):
            data = load_prepared(paths.data)
            locales = language_set(params, size.language_set)
            train_ex, dev_ex = data.train(locales, size.resource), data.split(locales, "dev")
            tokenizer = AutoTokenizer.from_pretrained(e5)

            def tokenize(examples):
                return tokenizer([e.utt for e in examples], padding="max_length", truncation=True, max_length=128)

            train_ds = datasets.Dataset.from_dict({**tokenize(train_ex), "labels": [data.labels.id(e.intent) for e in train_ex]})
            dev_ds = datasets.Dataset.from_dict(dict(tokenize(dev_ex)))
            teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
            seed = _student_seed(size)
            student = make_student("teacher", base_dir=e5, teacher_dir=teacher_dir,
                                   mapping=layer_map(s["layer_map"], teacher.config.num_hidden_layers, s["layers"]),
                                   num_labels=len(data.labels), seed=seed)
            steps = -(-len(train_ex) // s["batch_size"]) * size.epochs
            args = TrainingArguments(
                output_dir=tempfile.mkdtemp(prefix="bench-trainer-"),
                learning_rate=float(s["lr"]), num_train_epochs=size.epochs,
                per_device_train_batch_size=s["batch_size"], seed=seed,
                warmup_steps=int(float(s["warmup_ratio"]) * steps),  # same integer as mkd's loop
                weight_decay=float(s["weight_decay"]),
                eval_strategy="no", save_strategy="no", report_to="none",
            )
            objective = kd_objective(s)
            weights = objective.weights
            if set(weights) - {"ce", "logit_mse"}:
                raise SystemExit(f"the Trainer baseline implements ce + logit_mse only, not {weights}")
            trainer = DistillationTrainer(model=student, args=args, train_dataset=train_ds, teacher=teacher,
                                          kd_weight=weights["logit_mse"], ce_weight=weights.get("ce", 0.0),
                                          recipe=train_config(s, objective, seed))
        with spans("train"):
            out = trainer.train()
        with spans("dev_eval"):
            preds = trainer.predict(dev_ds).predictions.argmax(-1)
    acc = _locale_avg_accuracy(preds, [data.labels.id(e.intent) for e in dev_ex], [e.locale for e in dev_ex])
    shutil.rmtree(args.output_dir, ignore_errors=True)
    return {"threads": threads, "train_rows": len(train_ex), "examples": len(train_ex) * size.epochs,
            "steps": trainer.state.global_step, "final_dev_accuracy": acc, "seed": seed,
            "train_loss": out.training_loss, "optim": str(args.optim), "lr_scheduler": str(args.lr_scheduler_type),
            "warmup_steps": args.warmup_steps, "max_grad_norm": args.max_grad_norm, "head_lr": float(s["head_lr"]),
            "frozen_word_embeddings": bool(s["freeze_word_embeddings"]),
            "transformers": transformers.__version__}


# ----------------------------------------------------------------------------------- stage costs


def w_trim(spec, spans: Spans) -> dict:
    with spans("imports"):
        from mkd.data import load_prepared
        from mkd.models.sources import build_base_model
        from mkd.models.vocab_trim import trim_vocabulary
    threads = _setup_threads(spec)
    paths = _paths(spec)
    scratch = Path(tempfile.mkdtemp(prefix="bench-trim-"))
    try:
        with spans("trim"):  # = pipeline.build_base: the e5 folder is already converted (cached), as on a rerun
            stats = trim_vocabulary(build_base_model(spec["params"]["base"]["model"]),
                                    load_prepared(paths.data).texts(), scratch / "base")
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
    threads = _setup_threads(spec)
    size = CellSize(**spec["size"])
    paths = _paths(spec)
    scratch = Path(tempfile.mkdtemp(prefix="bench-logits-"))
    try:
        with spans("logits"):
            enc = Encoder(spec["params"], paths)
            teacher = AutoModelForSequenceClassification.from_pretrained(paths.teachers / "shared")
            examples, train = enc.train(size.language_set, size.resource)
            logits = predict_logits(teacher, train.ids, enc.pad_id)
            torch.save({"teacher": "shared", "keys": [(e.locale, e.id) for e in examples], "logits": logits},
                       scratch / f"{size.language_set}-{size.resource}.pt")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"threads": threads, "rows": len(examples)}


# --------------------------------------------------------------------------------------- profile


def w_profile(spec, spans: Spans) -> dict:
    """Step-level timing of both contenders and a matmul reference, in one process.

    ours: mkd.training.loop.fit's step (same student, optimizer, param groups, schedule, clipping, loss, batches);
    baseline: the Trainer baseline's step (teacher forward, student forward/backward at 128 tokens, clipping, a
    fused AdamW with the recipe's groups over the full vocabulary).
    """
    with spans("imports"):
        import torch
        import torch.nn.functional as F
        from torch.utils.flop_counter import FlopCounterMode
        from transformers import AutoModelForSequenceClassification

        from mkd.models import heads
        from mkd.pipeline.encoder import Encoder
        from mkd.models.features import pad_batch
        from mkd.training.losses import kd_objective
        from mkd.models.sources import count_parameters
        from mkd.models.students import layer_map, make_student
        from mkd.training.loop import batch_loss, configure_optimizer, linear_schedule, train_config
    threads = _setup_threads(spec)
    size = CellSize(**spec["size"])
    params, paths = spec["params"], _paths(spec)
    s = params["student"]
    out: dict = {"threads": threads}

    # ---- the matmul reference
    n = int(spec.get("matmul_n", 2048))
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.matmul(a, b)
    for _ in range(int(spec.get("matmul_reps", 10))):
        with spans("matmul"):
            torch.matmul(a, b)
    out["matmul_n"] = n
    del a, b

    # ---- ours: the student step exactly as fit takes it
    enc = Encoder(params, paths)
    examples, train = enc.train(size.language_set, size.resource)
    cached = torch.load(paths.logits / f"{size.language_set}-{size.resource}.pt", weights_only=False)
    row = {k: i for i, k in enumerate(map(tuple, cached["keys"]))}
    teacher_logits = cached["logits"][[row[(e.locale, e.id)] for e in examples]]
    teacher_dir = paths.teachers / "shared"
    mapping = layer_map(s["layer_map"], 12, s["layers"])
    seed = _student_seed(size)

    def new_student(base, tdir):
        return make_student("teacher", base_dir=base, teacher_dir=tdir, mapping=mapping,
                            num_labels=len(enc.data.labels), seed=seed)

    objective = kd_objective(s)
    cfg = train_config(s, objective, seed)  # exactly the config run_cell gives fit
    student = new_student(paths.base, teacher_dir)
    counts = count_parameters(student)
    out["ours_params"] = counts
    out["ours_vocab"] = student.config.vocab_size
    optimizer = configure_optimizer(student, cfg, "cpu")  # fit's own optimizer and schedule
    total_steps = -(-len(train) // s["batch_size"]) * size.epochs
    scheduler = linear_schedule(optimizer, cfg, total_steps)
    n_warm, n_steps = 2, int(spec.get("steps", 20))
    batches = training_batches([len(x) for x in train.ids], s["batch_size"], seed, n_warm + n_steps)
    student.train()
    steps = []
    for k, batch in enumerate(batches):
        timed = k >= n_warm
        ids, mask = pad_batch([train.ids[i] for i in batch], enc.pad_id)
        index = torch.as_tensor(batch)

        def loss_of(model):  # fit's own batch loss
            return batch_loss(model, ids, mask, train.labels[index], cfg.objective, loss_options=cfg.loss_options,
                              teacher_logits=teacher_logits[index])[0]

        rec = {"batch": len(batch), "width": int(ids.shape[1]), "real_tokens": int(mask.sum())}
        if timed:  # FLOPs of this very step, counted in a separate untimed pass
            with FlopCounterMode(display=False) as fc:
                loss_of(student).backward()
            rec["counted_flops"] = int(fc.get_total_flops())
            optimizer.zero_grad(set_to_none=True)
        pre = "ours." if timed else "warm."
        with spans(pre + "batch"):
            ids, mask = pad_batch([train.ids[i] for i in batch], enc.pad_id)
            index = torch.as_tensor(batch)
        with spans(pre + "forward"):
            loss = loss_of(student)
        with spans(pre + "backward"):
            loss.backward()
        with spans(pre + "clip"):
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        with spans(pre + "optimizer"):
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            float(loss.detach())
        if timed:
            steps.append(rec)
    out["ours_steps"] = steps

    # why fit uses the fused kernel: torch's default CPU AdamW (a per-tensor for-loop) over the embedding table
    # alone vs the rest, against the fused and foreach implementations over everything
    loss_of(student).backward()
    emb = student.get_input_embeddings().weight
    rest = [p for p in student.parameters() if p is not emb]
    for label, opt in (("opt.embedding_only", torch.optim.AdamW([emb], lr=1e-5)),
                       ("opt.rest_only", torch.optim.AdamW(rest, lr=1e-5)),
                       ("opt.fused_all", torch.optim.AdamW(student.parameters(), lr=1e-5, fused=True)),
                       ("opt.foreach_all", torch.optim.AdamW(student.parameters(), lr=1e-5, foreach=True))):
        opt.step()  # first step allocates the state
        for _ in range(5):
            with spans(label):
                opt.step()
    out["embedding_params"] = emb.numel()
    del optimizer, scheduler, student

    # ---- baseline: the Trainer baseline's step, full vocabulary, padded to 128
    if int(spec.get("baseline_steps", 3)) > 0:
        e5, tfull = spec["e5_dir"], spec["teacher_full_dir"]
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(e5)
        teacher = AutoModelForSequenceClassification.from_pretrained(tfull).eval()
        bstudent = new_student(e5, tfull)
        out["baseline_params"] = count_parameters(bstudent)
        bopt = configure_optimizer(bstudent, cfg, "cpu")  # the recipe's groups, as the baseline's create_optimizer
        bstudent.train()
        bsteps = []
        gen = torch.Generator().manual_seed(seed)
        for k in range(1 + int(spec.get("baseline_steps", 3))):
            pick = torch.randperm(len(examples), generator=gen)[: s["batch_size"]].tolist()
            x = tok([examples[i].utt for i in pick], padding="max_length", truncation=True, max_length=128, return_tensors="pt")
            labels = train.labels[torch.as_tensor(pick)]
            timed = k >= 1
            pre = "base." if timed else "warm."
            rec = {"batch": len(pick), "width": 128, "real_tokens": int(x["attention_mask"].sum())}
            if timed and k == 1:
                with FlopCounterMode(display=False) as fc:
                    with torch.no_grad():
                        t = heads.forward(teacher, x["input_ids"], x["attention_mask"]).logits
                    o = heads.forward(bstudent, x["input_ids"], x["attention_mask"]).logits
                    (0.5 * F.cross_entropy(o, labels) + 0.5 * F.mse_loss(o, t)).backward()
                rec["counted_flops"] = int(fc.get_total_flops())
                bopt.zero_grad(set_to_none=True)
            with spans(pre + "teacher"):
                with torch.no_grad():
                    t = heads.forward(teacher, x["input_ids"], x["attention_mask"]).logits
            with spans(pre + "forward"):
                o = heads.forward(bstudent, x["input_ids"], x["attention_mask"]).logits
                loss = 0.5 * F.cross_entropy(o, labels) + 0.5 * F.mse_loss(o, t)
            with spans(pre + "backward"):
                loss.backward()
            with spans(pre + "clip"):
                torch.nn.utils.clip_grad_norm_(bstudent.parameters(), 1.0)
            with spans(pre + "optimizer"):
                bopt.step()
                bopt.zero_grad(set_to_none=True)
            if timed:
                bsteps.append(rec)
        out["baseline_steps"] = bsteps
    return out


def w_spin(spec, spans: Spans) -> dict:
    """Calibration: busy-loop until `seconds` of this process's own CPU time are spent (the scheduler's self-test)."""
    with spans("spin"):
        end = time.process_time() + float(spec["seconds"])
        n = 0
        while time.process_time() < end:
            n += 1
    return {"iterations": n}


KINDS = {"spin": w_spin, "setup": w_setup, "ours": w_ours, "baseline": w_baseline, "trim": w_trim, "logits": w_logits,
         "profile": w_profile}


def main(argv: list[str]) -> int:
    kind, spec_path, out_path = argv
    set_env()
    spec = json.loads(Path(spec_path).read_text())
    spans = Spans()
    result = KINDS[kind](spec, spans)
    result["spans"] = spans.spans
    result["loadavg_at_end"] = os.getloadavg()
    write_json(Path(out_path), result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
