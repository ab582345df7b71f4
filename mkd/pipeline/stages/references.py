"""Stage `references`: the floor and ceiling beside every slice (a frozen probe per training set, the teachers)."""

from __future__ import annotations

import json
import logging
import time

from mkd.core import atomic
from mkd.pipeline.encoder import Encoder
from mkd.pipeline.grid import Paths, language_set, needed_teachers, teacher_key

log = logging.getLogger("mkd")


def reference_datasets(params: dict) -> list[tuple[str, str]]:
    """Every training set a reference probe is fitted on: each grid slice's, and each teacher's own."""
    sets = {(ls, res) for ls in params["grid"]["language_sets"] for res in params["grid"]["resources"]}
    sets |= set(needed_teachers(params).values())
    return sorted(sets)


def references(params: dict, root=".") -> dict:
    """The floor and the ceiling every slice is reported next to: a frozen probe fitted on the slice's own
    training rows (and one on each teacher's rows), the teacher that distils into the slice, and chance.
    -> results/<profile>/references.json"""
    from mkd.evaluation.predictions import per_locale_metrics
    from mkd.models.probe import embed, load_frozen_encoder, tune_probe

    paths = Paths(params, root)
    enc = Encoder(params, paths)
    n_labels = len(enc.data.labels)
    body = load_frozen_encoder(paths.base)
    eval_locales = language_set(params, params["data"]["eval_languages"])
    evals = {split: enc.split(eval_locales, split)[1] for split in ("dev", "test")}
    features = {split: embed(body, es.ids, enc.pad_id) for split, es in evals.items()}
    c_grid = params["probe"]["c_grid"]
    out = {"num_labels": n_labels, "chance_accuracy": 1.0 / n_labels, "probes": {}, "teachers": {}, "slices": {},
           "probe_recipe": "mean-pooled frozen base model, standardized, L2 logistic regression (L-BFGS, 100 "
                           f"iterations), C chosen from {list(c_grid)} on the training locales' dev rows"}
    for ls, res in reference_datasets(params):
        t0 = time.perf_counter()
        _, train = enc.train(ls, res)
        # The students' model-selection rows: the dev rows of the language set's own locales.
        _, select = enc.split(language_set(params, ls), "dev")
        select_features = embed(body, select.ids, enc.pad_id)

        def dev_score(probe):
            return per_locale_metrics(probe.predict(select_features).tolist(), select.labels.tolist(),
                                      select.locales)["accuracy"]["avg"]

        probe, c, dev_by_c = tune_probe(embed(body, train.ids, enc.pad_id), train.labels, n_labels, c_grid, dev_score)
        metrics = {split: per_locale_metrics(probe.predict(features[split]).tolist(), es.labels.tolist(), es.locales)
                   for split, es in evals.items()}
        out["probes"][f"{ls}-{res}"] = {"language_set": ls, "resource": res, "train_rows": len(train), "c": c,
                                        "dev_accuracy_by_c": {f"{k:g}": v for k, v in dev_by_c.items()},
                                        "metrics": metrics, "seconds": time.perf_counter() - t0}
        log.info("probe[%s-%s]: C %g (dev %.4f), test accuracy %.4f", ls, res, c, dev_by_c[c], metrics["test"]["accuracy"]["avg"])
    for key, (ls, res) in needed_teachers(params).items():
        info = json.loads((paths.teachers / key / "teacher_metrics.json").read_text())
        out["teachers"][key] = {"language_set": ls, "resource": res, "metrics": info["metrics"],
                                "history": info["training"]["history"]}  # its learning curve (collect's curves.csv)
    for ls in params["grid"]["language_sets"]:
        for res in params["grid"]["resources"]:
            out["slices"][f"{ls}-{res}"] = {"probe": f"{ls}-{res}", "teacher": teacher_key(params, ls, res)[0]}
    atomic.write_json(paths.results / "references.json", out)
    return out
