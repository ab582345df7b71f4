"""The experiment's stages as plain functions of the validated params; each DVC stage calls one of them.

Their parts live beside it: the grid's cells and where each output goes (mkd/grid.py, with the layout), the
encoded examples and the per-locale evaluation of every model (mkd/encoder.py), the training recipe handed to
`fit` (mkd/recipe.py, built by `_train_config`) and the tables collect writes (mkd/results.py). The fingerprints
here decide when a finished cell or an interrupted teacher's checkpoint belongs to the current params.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from mkd import atomic
from mkd.encoder import Encoder, evaluate_model, predict_eval_sets
from mkd.errors import DataError, MkdError
from mkd.grid import Cell, Paths, grid_cells, language_set, needed_teachers, teacher_key
from mkd.hashing import bytes_sha256, json_digest
from mkd.predictions import FILE_NAME as PREDICTIONS_FILE
from mkd.predictions import Predictions
from mkd.provenance import provenance

log = logging.getLogger("mkd")


# ---------------------------------------------------------------- fingerprints


def digest(obj) -> str:
    """Short fingerprint (16 hex): names folders and is recorded as a cell's params_digest."""
    return json_digest(obj, chars=16)


def cell_digest(params: dict, cell: Cell) -> str:
    """Fingerprint of everything a cell's result depends on; collect refuses results whose digest differs."""
    relevant = {k: params[k] for k in ("profile", "data", "base", "teacher", "student")}
    return digest({"params": relevant, "cell": cell.__dict__})


# ---------------------------------------------------------------- stages


def prepared_locales(params: dict) -> list[str]:
    """Every locale prepare reads: the evaluation set, the grid's training sets and the teacher's."""
    locales: set[str] = set(language_set(params, params["data"]["eval_languages"]))
    for ls in params["grid"]["language_sets"]:
        locales |= set(language_set(params, ls))
    locales |= set(language_set(params, params["teacher"]["language_set"]))
    return sorted(locales)


def source_fingerprint(params: dict) -> str:
    """SHA-256 over the MASSIVE files prepare will read (names relative to the source, so the same data gives the
    same fingerprint on any machine); the official release is pinned by its own checksum."""
    from mkd.data import locate_source, official_release, source_files

    source = locate_source(params["data"]["massive"])
    if source is None:  # not downloaded here: prepare fetches the release and checks it against this checksum
        return f"official release, sha256 {official_release()[1]}"
    files = source_files(source, prepared_locales(params))
    return json_digest(files)


def write_params_stamp(params: dict, root=".") -> Path:
    """The `validate` stage's output. The stage runs on every `dvc repro` / `dvc exp run` (always_changed): each
    edit of params.yaml, `-S +new.key=...` included, is validated before `prepare`, and new MASSIVE files change
    the fingerprint written here, so prepare and what follows re-run. Otherwise the content stays the same and
    a valid edit re-runs only the stages that declare what changed."""
    path = Paths(params, root).artifacts / "params.valid"
    atomic.write_text(path, f"params.yaml passed `mkd validate`\nMASSIVE source: {source_fingerprint(params)}\n")
    return path


def prepare(params: dict, root=".") -> dict:
    from mkd.data import prepare_dataset, resolve_source

    paths = Paths(params, root)
    locales = prepared_locales(params)
    source = resolve_source(params["data"]["massive"])
    manifest = prepare_dataset(
        source,
        locales,
        params["data"]["train_sizes"],
        params["data"]["seed"],
        paths.data,
        eval_per_locale=params["data"]["eval_per_locale"],
        allow_partial=params["data"]["allow_partial"],
    )
    log.info("prepared %d locales from %s into %s", len(locales), source, paths.data)
    return manifest


def build_base(params: dict, root=".") -> dict:
    from mkd.data import load_prepared
    from mkd.models import build_base_model, count_parameters
    from mkd.vocab_trim import trim_vocabulary

    paths = Paths(params, root)
    source_dir = build_base_model(params["base"]["model"])
    with atomic.atomic_dir(paths.base) as tmp:
        if params["base"]["trim_vocab"]:
            stats = trim_vocabulary(source_dir, load_prepared(paths.data).texts(), tmp)
        else:
            shutil.copytree(source_dir, tmp, dirs_exist_ok=True)
            stats = {"params_after": count_parameters(tmp)["total"]}
        set_base_pooling(tmp, params["base"]["pooling"])
    log.info("base model in %s: %s", paths.base, stats)
    return stats


def set_base_pooling(model_dir: Path, pooling: str) -> None:
    """Write the pooling into the base model's config.json: teachers and students are built from this config
    (students from the teacher's, a copy of it), so every model of the profile pools the same way."""
    from mkd.heads import CONFIG_KEY, check_pooling

    check_pooling(pooling, "base.pooling")
    config = json.loads((model_dir / "config.json").read_text())
    config[CONFIG_KEY] = pooling
    atomic.write_json(model_dir / "config.json", config)


def _train_config(section: dict, objective, seed: int):
    """fit's config from a params section (teacher or student) and an objective (mkd.losses.Objective or weights)."""
    from mkd.losses import Objective, parse_objective
    from mkd.train import TrainConfig

    if not isinstance(objective, Objective):
        objective = parse_objective(objective, "objective")
    return TrainConfig.from_section(section, objective=dict(objective.weights), loss_options=objective.options, seed=seed)


def train_teachers(params: dict, root=".") -> dict:
    from transformers import AutoModelForSequenceClassification

    from mkd.data import seed_for
    from mkd.train import fit

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
        _, dev = enc.split(language_set(params, ls), "dev")
        seed = seed_for("teacher", t["seed"], key)
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            paths.base, num_labels=len(enc.data.labels),
            id2label=dict(enumerate(enc.data.labels.intents)), label2id={n: i for i, n in enumerate(enc.data.labels.intents)},
        )
        cfg = _train_config(t, {"ce": 1.0}, seed)
        ckpt = paths.checkpoints / f"teacher-{key}-{digest([params['data'], params['base'], t, key])}"
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


def cache_logits(params: dict, root=".") -> None:
    """Teacher logits for every training row of every (language set, resource), computed once."""
    from transformers import AutoModelForSequenceClassification

    from mkd.evaluation import predict_logits

    paths = Paths(params, root)
    enc = Encoder(params, paths)
    with atomic.atomic_dir(paths.logits) as tmp:
        for ls in params["grid"]["language_sets"]:
            for res in params["grid"]["resources"]:
                key, _, _ = teacher_key(params, ls, res)
                teacher = AutoModelForSequenceClassification.from_pretrained(paths.teachers / key)
                examples, train = enc.train(ls, res)
                logits = predict_logits(teacher, train.ids, enc.pad_id)
                torch.save({"teacher": key, "keys": [(e.locale, e.id) for e in examples], "logits": logits}, tmp / f"{ls}-{res}.pt")


def run_cell(params: dict, cell: Cell, root=".") -> Predictions:
    from mkd.data import seed_for
    from mkd.losses import CE_ONLY, kd_objective
    from mkd.students import layer_map, make_student
    from mkd.train import dev_accuracy, fit

    paths = Paths(params, root)
    out_dir = paths.cell_dir(cell)
    t0 = time.perf_counter()
    enc = Encoder(params, paths)
    s = params["student"]
    key, _, _ = teacher_key(params, cell.language_set, cell.resource)
    teacher_dir = paths.teachers / key
    if not (teacher_dir / "config.json").exists():
        raise MkdError(f"cell {cell.id}: teacher {teacher_dir} is missing; run `dvc repro teachers` (or `mkd train-teachers`) first")
    examples, train = enc.train(cell.language_set, cell.resource)
    # Model selection uses the dev sets of the training languages only: a student trained on English must
    # not be selected with supervision from languages it is meant to transfer to.
    _, dev = enc.split(language_set(params, cell.language_set), "dev")

    objective = kd_objective(s) if cell.kd == "on" else CE_ONLY
    teacher_logits = teacher_model = None
    # Each loss declares what it reads (mkd.losses' registry); the cell provides exactly that.
    if objective.needs_teacher_hidden:
        from transformers import AutoModelForSequenceClassification

        teacher_model = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    if objective.needs_teacher_logits:
        cached = torch.load(paths.logits / f"{cell.language_set}-{cell.resource}.pt", weights_only=False)
        if cached["teacher"] != key:
            raise MkdError(f"cell {cell.id}: cached logits come from teacher {cached['teacher']!r}, expected {key!r}; re-run `dvc repro logits`")
        row = {k: i for i, k in enumerate(map(tuple, cached["keys"]))}
        try:
            teacher_logits = cached["logits"][[row[(e.locale, e.id)] for e in examples]]
        except KeyError as e:
            raise MkdError(f"cell {cell.id}: no cached teacher logits for row {e}; re-run `dvc repro logits`") from None

    from transformers import AutoConfig

    depth = AutoConfig.from_pretrained(teacher_dir).num_hidden_layers
    mapping = layer_map(s["layer_map"], depth, s["layers"])
    # One seed per (language set, resource, grid seed), shared by every init x KD variant: the variants of a
    # seed see the same data order and the same random head, so paired comparisons isolate init and KD.
    seed = seed_for("student", cell.language_set, cell.resource, cell.seed)
    student = make_student(cell.init, base_dir=paths.base, teacher_dir=teacher_dir, mapping=mapping,
                           num_labels=len(enc.data.labels), seed=seed)
    cfg = _train_config(s, objective, seed)
    # Freezing saves CPU time only where the embeddings carry knowledge (copied from the base or the teacher);
    # a random student's token vectors are trained, else it would learn over fixed random features.
    cfg = replace(cfg, freeze_word_embeddings=cfg.freeze_word_embeddings and cell.init != "random")
    # What the initialization alone gives (the sanity gate "a teacher-init student starts where its copied
    # layers put it" reads this); on the model-selection dev rows, so it costs one small evaluation.
    initial_dev = dev_accuracy(student, dev, enc.pad_id, cfg.eval_batch_size)
    ckpt = paths.checkpoints / f"cell-{cell.id}-{cell_digest(params, cell)}"
    stats = fit(student, train, dev, cfg, pad_id=enc.pad_id, name=f"cell {cell.id}", checkpoint_dir=ckpt,
                teacher_logits=teacher_logits, teacher_model=teacher_model, layer_map=mapping)
    predictions = predict_eval_sets(student, enc)
    scores = predictions.scores(enc.data.labels)  # for the log line; collect scores the file with `evaluate`
    predictions_bytes = predictions.to_bytes()
    info = {
        "cell": {**cell.__dict__, "id": cell.id, "profile": params["profile"]},
        "params_digest": cell_digest(params, cell),
        "teacher": key,
        "layer_map": mapping,
        "objective": objective.weights,
        "loss_options": objective.options,
        "seed_used": seed,
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


def reference_datasets(params: dict) -> list[tuple[str, str]]:
    """Every training set a reference probe is fitted on: each grid slice's, and each teacher's own."""
    sets = {(ls, res) for ls in params["grid"]["language_sets"] for res in params["grid"]["resources"]}
    sets |= set(needed_teachers(params).values())
    return sorted(sets)


def references(params: dict, root=".") -> dict:
    """The floor and the ceiling every slice is reported next to: a frozen probe fitted on the slice's own
    training rows (and one on each teacher's rows), the teacher that distils into the slice, and chance.
    -> results/<profile>/references.json"""
    from mkd.predictions import per_locale_metrics
    from mkd.probe import embed, fit_probe, load_frozen_encoder

    paths = Paths(params, root)
    enc = Encoder(params, paths)
    n_labels = len(enc.data.labels)
    body = load_frozen_encoder(paths.base)
    eval_locales = language_set(params, params["data"]["eval_languages"])
    evals = {split: enc.split(eval_locales, split)[1] for split in ("dev", "test")}
    features = {split: embed(body, es.ids, enc.pad_id) for split, es in evals.items()}
    out = {"num_labels": n_labels, "chance_accuracy": 1.0 / n_labels, "probes": {}, "teachers": {}, "slices": {},
           "probe_recipe": "mean-pooled frozen base model, standardized, L2 logistic regression (C=1, L-BFGS, 100 iterations)"}
    for ls, res in reference_datasets(params):
        t0 = time.perf_counter()
        _, train = enc.train(ls, res)
        probe = fit_probe(embed(body, train.ids, enc.pad_id), train.labels, n_labels)
        metrics = {split: per_locale_metrics(probe.predict(features[split]).tolist(), es.labels.tolist(), es.locales)
                   for split, es in evals.items()}
        out["probes"][f"{ls}-{res}"] = {"language_set": ls, "resource": res, "train_rows": len(train),
                                        "metrics": metrics, "seconds": time.perf_counter() - t0}
        log.info("probe[%s-%s]: test accuracy %.4f", ls, res, metrics["test"]["accuracy"]["avg"])
    for key, (ls, res) in needed_teachers(params).items():
        info = json.loads((paths.teachers / key / "teacher_metrics.json").read_text())
        out["teachers"][key] = {"language_set": ls, "resource": res, "metrics": info["metrics"],
                                "history": info["training"]["history"]}  # per-epoch curve (collect's curves.csv)
    for ls in params["grid"]["language_sets"]:
        for res in params["grid"]["resources"]:
            out["slices"][f"{ls}-{res}"] = {"probe": f"{ls}-{res}", "teacher": teacher_key(params, ls, res)[0]}
    atomic.write_json(paths.results / "references.json", out)
    return out


def collect(params: dict, root=".") -> Path:
    """Score every cell's predictions and gather the grid's results into results/<profile>/cells.csv (and the
    references, training summary and curves beside it, mkd/results.py); refuse missing, partial or stale cells."""
    from mkd.data import LabelVocab
    from mkd.evaluation import module_scorers
    from mkd.results import write_tables

    paths = Paths(params, root)
    refs_path = paths.results / "references.json"
    if not refs_path.exists():
        raise MkdError(f"{refs_path} not found; run `dvc repro references` (or `mkd references`) first")
    usable, problems = {}, []
    for cell in grid_cells(params):
        d = paths.cell_dir(cell)
        try:
            info = json.loads((d / "info.json").read_text())
            raw = (d / PREDICTIONS_FILE).read_bytes()
        except FileNotFoundError:
            problems.append(f"{cell.id}: no result (run `dvc repro` to finish the grid)")
            continue
        except json.JSONDecodeError as e:
            problems.append(f"{cell.id}: unreadable result ({e}); delete {d} and re-run `dvc repro`")
            continue
        if info.get("params_digest") != cell_digest(params, cell):
            problems.append(f"{cell.id}: result was made with other parameters (stale); re-run `dvc repro`")
            continue
        if info.get("predictions_sha256") != bytes_sha256(raw):
            problems.append(f"{cell.id}: {d / PREDICTIONS_FILE} is not what the cell wrote (its digest in info.json "
                            f"differs); restore it with `dvc checkout {cell.stage}` or re-run `dvc repro -f {cell.stage}`")
            continue
        usable[cell] = (Predictions.from_bytes(raw, str(d / PREDICTIONS_FILE)), info)
    if problems:
        raise MkdError(f"{len(problems)} of {len(grid_cells(params))} grid cells are not usable:\n  " + "\n  ".join(problems[:20]))
    # Every cell scored here, in one process, by the `evaluate` modules (one import for the whole grid).
    labels, scorers = LabelVocab.load(paths.data / "labels.json"), module_scorers()
    usable = {cell: (predictions.scores(labels, scorers), info) for cell, (predictions, info) in usable.items()}
    write_tables(params["profile"], paths.results, usable, json.loads(refs_path.read_text()))
    return paths.results / "cells.csv"


def analyze(params: dict, root=".") -> dict:
    from mkd.config import _size_key
    from mkd.report import run_analysis

    paths = Paths(params, root)
    cells_csv = paths.results / "cells.csv"
    if not cells_csv.exists():
        raise DataError(f"{cells_csv} not found; run `dvc repro collect` (or `mkd collect`) first")
    a = params["analysis"]
    return run_analysis(
        cells_csv, paths.tables, profile=params["profile"], metric=a["metric"], split=a["split"], scale_note=params["scale"],
        n_resamples=a["bootstrap_resamples"], primary_test=a["primary_test"], holm_family=a["holm_family"],
        train_locales={ls: list(language_set(params, ls)) for ls in set(params["grid"]["language_sets"]) | {params["teacher"]["language_set"]}},
        references_csv=paths.results / "references.csv", training_csv=paths.results / "training.csv",
        min_chance_multiple=float(a["min_chance_multiple"]), min_distinct_fraction=float(a["min_distinct_fraction"]),
        resource_sizes={name: _size_key(size) for name, size in params["data"]["train_sizes"].items()},
    )
