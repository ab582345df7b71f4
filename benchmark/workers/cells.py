"""Kinds `ours` and `baseline`: one grid cell as `dvc repro` runs it (mkd.pipeline.stages.run_cell), and the same
distillation written as a user would with transformers.Trainer."""

from __future__ import annotations

import json
import shutil
import tempfile

from benchmark.common import CellSize, Spans
from benchmark.workers.shared import grid_cell, locale_avg_accuracy, paths_of, setup_threads, student_seed


def w_ours(spec, spans: Spans) -> dict:
    with spans("imports"):
        import torch

        import mkd.pipeline.stages.cell as P
        import mkd.training.loop as T
    threads = setup_threads(spec)
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
        P.run_cell(spec["params"], grid_cell(size), root=spec["root"])
    info = json.loads((P.Paths(spec["params"], spec["root"]).cell_dir(grid_cell(size)) / "info.json").read_text())
    tr = info["training"]
    return {"threads": threads, "train_rows": info["train_rows"], "examples": tr["train_examples_seen"],
            "steps": tr["steps"], "history": tr["history"], "best_dev_accuracy": tr["best_dev_accuracy"],
            "final_dev_accuracy": tr["history"][-1]["dev_accuracy"], "seed": info["seed_used"],
            "torch": torch.__version__}


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
        from mkd.training.losses import objective_for
        from mkd.models.students import layer_map, make_student
        from mkd.training.loop import configure_optimizer, train_config
    threads = setup_threads(spec)
    size = CellSize(**spec["size"])
    params, paths = spec["params"], paths_of(spec)
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
            seed = student_seed(size)
            student = make_student("teacher", base_dir=e5, teacher_dir=teacher_dir,
                                   mapping=layer_map(s["layer_map"], teacher.config.num_hidden_layers, s["layers"]),
                                   num_labels=len(data.labels), seed=seed)
            steps = s["max_steps"]  # cell_params' epoch budget: size.epochs passes over these rows
            args = TrainingArguments(
                output_dir=tempfile.mkdtemp(prefix="bench-trainer-"),
                learning_rate=float(s["lr"]), num_train_epochs=size.epochs,
                per_device_train_batch_size=s["batch_size"], seed=seed,
                warmup_steps=int(float(s["warmup_ratio"]) * steps),  # same integer as mkd's loop
                weight_decay=float(s["weight_decay"]),
                eval_strategy="no", save_strategy="no", report_to="none",
            )
            objective = objective_for(s, "on")
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
    acc = locale_avg_accuracy(preds, [data.labels.id(e.intent) for e in dev_ex], [e.locale for e in dev_ex])
    shutil.rmtree(args.output_dir, ignore_errors=True)
    return {"threads": threads, "train_rows": len(train_ex), "examples": len(train_ex) * size.epochs,
            "steps": trainer.state.global_step, "final_dev_accuracy": acc, "seed": seed,
            "train_loss": out.training_loss, "optim": str(args.optim), "lr_scheduler": str(args.lr_scheduler_type),
            "warmup_steps": args.warmup_steps, "max_grad_norm": args.max_grad_norm, "head_lr": float(s["head_lr"]),
            "frozen_word_embeddings": bool(s["freeze_word_embeddings"]),
            "transformers": transformers.__version__}
