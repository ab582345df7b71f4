"""Stage `cell`: one student of the grid initialized, trained (KD on or off) and its evaluation rows predicted."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace

import torch

from mkd.core import atomic
from mkd.core.errors import MkdError
from mkd.core.hashing import bytes_sha256
from mkd.evaluation.predictions import FILE_NAME as PREDICTIONS_FILE
from mkd.evaluation.predictions import Predictions
from mkd.pipeline import fingerprints
from mkd.pipeline.encoder import Encoder, predict_eval_sets
from mkd.pipeline.grid import Cell, Paths, language_set, teacher_key
from mkd.pipeline.provenance import provenance

log = logging.getLogger("mkd")


def run_cell(params: dict, cell: Cell, root=".", out_dir=None) -> Predictions:
    """Train, evaluate and write one student: `out_dir` (default: the grid cell's folder) gets info.json and
    predictions.csv.gz. A study (mkd.studies) runs cells with other recipes into folders of its own."""
    from mkd.core.device import compute_device
    from mkd.data import seed_for
    from mkd.training.losses import objective_for
    from mkd.models.sources import count_parameters
    from mkd.models.students import layer_map, make_student, source_width, student_width
    from mkd.training.loop import dev_accuracy, fit, train_config
    from mkd.training.recipe import PER_INIT_KEYS, section_for_init

    paths = Paths(params, root)
    out_dir = paths.cell_dir(cell) if out_dir is None else out_dir
    t0 = time.perf_counter()
    enc = Encoder(params, paths)
    s = params["student"]
    key, _, _ = teacher_key(params, cell.language_set, cell.resource)
    teacher_dir = paths.teachers / key
    if not (teacher_dir / "config.json").exists():
        raise MkdError(f"cell {cell.id}: teacher {teacher_dir} is missing; run `dvc repro teachers` (or `mkd train-teachers`) first")
    examples, train = enc.train(cell.language_set, cell.resource, cell.seed)  # this seed's own draw
    # Model selection uses the dev sets of the training languages only: a student trained on English must
    # not be selected with supervision from languages it is meant to transfer to.
    _, dev = enc.split(language_set(params, cell.language_set), "selection")  # the dev rows model selection reads (data.selection_dev_rows)

    objective = objective_for(s, cell.kd)  # student.objective.<kd>: KD off reads no teacher output
    teacher_logits = teacher_model = None
    # Each loss declares what it reads (mkd.training.losses' registry); the cell provides exactly that.
    if objective.reads & {"hidden", "attentions"}:
        from transformers import AutoModelForSequenceClassification

        teacher_model = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    if "teacher_logits" in objective.reads:
        cached = torch.load(paths.logits_file(cell.language_set, cell.resource, cell.seed), weights_only=False)
        if cached["teacher"] != key:
            raise MkdError(f"cell {cell.id}: cached logits come from teacher {cached['teacher']!r}, expected {key!r}; re-run `dvc repro logits`")
        row = {k: i for i, k in enumerate(map(tuple, cached["keys"]))}
        try:
            teacher_logits = cached["logits"][[row[(e.locale, e.id)] for e in examples]]
        except KeyError as e:
            raise MkdError(f"cell {cell.id}: no cached teacher logits for row {e}; re-run `dvc repro logits`") from None

    from transformers import AutoConfig

    teacher_config = AutoConfig.from_pretrained(teacher_dir)
    mapping = layer_map(s["layer_map"], teacher_config.num_hidden_layers, s["layers"])
    width = student_width(teacher_config, s.get("hidden_size"), s.get("intermediate_size"), s.get("num_attention_heads"))
    if width != source_width(teacher_config) and objective.reads & {"hidden", "attentions"}:
        raise MkdError(f"cell {cell.id}: student.objective.{cell.kd} compares hidden states or attention maps with the "
                       f"teacher's, whose widths ({source_width(teacher_config)}) the student's ({width}) are not")
    # One seed per (language set, resource, grid seed), shared by every init x KD variant: the variants of a
    # seed see the same data order and the same random head, so paired comparisons isolate init and KD.
    seed = seed_for("student", cell.language_set, cell.resource, cell.seed)
    student = make_student(cell.init, base_dir=paths.base, teacher_dir=teacher_dir, mapping=mapping,
                           num_labels=len(enc.data.labels), seed=seed, width=width)
    cfg = train_config(section_for_init(s, cell.init), objective, seed)  # student.by_init: this init's rates
    # Freezing saves CPU time only where the embeddings carry knowledge (copied from the base or the teacher);
    # a random student's token vectors are trained, else it would learn over fixed random features.
    cfg = replace(cfg, freeze_word_embeddings=cfg.freeze_word_embeddings and cell.init != "random")
    # What the initialization alone gives (the sanity gate "a teacher-init student starts where its copied
    # layers put it" reads this); on the model-selection dev rows, so it costs one small evaluation.
    student.to(compute_device())  # the loop trains it there; its first evaluation runs there too
    initial_dev = dev_accuracy(student, dev, enc.pad_id, cfg.eval_batch_size)
    ckpt = paths.checkpoints / f"cell-{cell.id}-{fingerprints.cell_digest(params, cell)}"
    stats = fit(student, train, dev, cfg, pad_id=enc.pad_id, name=f"cell {cell.id}", checkpoint_dir=ckpt,
                teacher_logits=teacher_logits, teacher_model=teacher_model, layer_map=mapping)
    predictions = predict_eval_sets(student, enc)
    scores = predictions.scores(enc.data.labels)  # for the log line; collect scores the file with `evaluate`
    predictions_bytes = predictions.to_bytes()
    info = {
        "cell": {**cell.identity, "id": cell.id, "profile": params["profile"]},
        "params_digest": fingerprints.cell_digest(params, cell),
        "teacher": key,
        "layer_map": mapping,
        "width": {"hidden": width.hidden, "intermediate": width.intermediate, "heads": width.heads},
        "parameters": count_parameters(student)["total"],
        "objective": objective.weights,
        "loss_options": objective.options,
        "seed_used": seed,
        "recipe": {k: getattr(cfg, k) for k in PER_INIT_KEYS},  # the values this init trained with (student.by_init)
        "train_rows": len(train),
        # initial_dev_accuracy: what the initialization alone gives, on the same dev rows as best_dev_accuracy
        "training": {**stats, "initial_dev_accuracy": initial_dev},
        "wall_seconds": time.perf_counter() - t0,
        "scale": params["scale"],
        "base_model": params["base"]["model"],
        "provenance": provenance(root),
        "predictions_sha256": bytes_sha256(predictions_bytes),
    }
    if s["save_model"]:
        with atomic.atomic_dir(paths.students / cell.id) as tmp:
            student.save_pretrained(tmp)
            enc.tokenizer.save_pretrained(tmp)
    # info first, predictions last: a predictions file on disk means the cell is complete.
    atomic.write_json(out_dir / "info.json", info)
    atomic.write_bytes(out_dir / PREDICTIONS_FILE, predictions_bytes)
    shutil.rmtree(ckpt, ignore_errors=True)
    log.info("cell %s: test accuracy %.4f in %.0f s", cell.id, scores["test"]["accuracy"]["avg"], info["wall_seconds"])
    return predictions
