"""Stage `references`: the floor and ceiling beside every slice (a frozen probe per training set, the teachers)."""

from __future__ import annotations

import json
import logging
import time

from mkd.core import atomic
from mkd.pipeline.encoder import Encoder
from mkd.pipeline.grid import Paths, all_seeds, language_set, needed_teachers, teacher_key

log = logging.getLogger("mkd")


def reference_datasets(params: dict) -> list[tuple[str, str]]:
    """Every training set a reference probe is fitted on: each grid slice's, and each teacher's own."""
    sets = {(ls, res) for ls in params["grid"]["language_sets"] for res in params["grid"]["resources"]}
    sets |= set(needed_teachers(params).values())
    return sorted(sets)


def distinct_draws(params: dict) -> list[int]:
    """One grid seed per distinct draw of training rows (all seeds share one unless data.draw_per_seed)."""
    from mkd.data import draw_seed

    d, first = params["data"], {}
    for seed in all_seeds(params):
        first.setdefault(draw_seed(d["seed"], seed, d["draw_per_seed"]), seed)
    return list(first.values())


def mean_probe(fits: list[dict]) -> dict:
    """One probe's record, or the mean of several (per locale and split; the Cs joined, e.g. "0.1/1"), with each
    draw's own record under `draws`."""
    if len(fits) == 1:
        return fits[0]

    def mean(path):
        values = [f["metrics"][path[0]][path[1]] for f in fits]
        return {k: sum(v[k] for v in values) / len(values) for k in values[0]}

    metrics = {split: {metric: mean((split, metric)) for metric in fits[0]["metrics"][split]
                       if isinstance(fits[0]["metrics"][split][metric], dict)} for split in fits[0]["metrics"]}
    return {"train_rows": fits[0]["train_rows"], "c": "/".join(f"{f['c']:g}" for f in fits), "metrics": metrics,
            "draws": fits}


def references(params: dict, root=".") -> dict:
    """The floor and the ceiling every slice is reported next to: a frozen probe fitted on the slice's own
    training rows (and one on each teacher's rows), the teacher that distils into the slice, and chance.
    -> results/<profile>/references.json"""
    from mkd.evaluation.predictions import per_locale_metrics
    import torch

    from mkd.core.device import compute_device
    from mkd.models.probe import embed, load_frozen_encoder, tune_probe

    paths = Paths(params, root)
    enc = Encoder(params, paths)
    n_labels = len(enc.data.labels)
    device = compute_device()
    body = load_frozen_encoder(paths.base).to(device)
    eval_locales = language_set(params, params["data"]["eval_languages"])
    evals = {split: enc.split(eval_locales, split)[1] for split in ("dev", "test")}
    features = {split: embed(body, es.ids, enc.pad_id) for split, es in evals.items()}
    c_grid = params["probe"]["c_grid"]
    out = {"num_labels": n_labels, "chance_accuracy": 1.0 / n_labels, "probes": {}, "teachers": {}, "slices": {},
           "probe_recipe": "mean-pooled frozen base model, standardized, L2 logistic regression (L-BFGS, 100 "
                           f"iterations), C chosen from {list(c_grid)} on the training locales' dev rows"}
    grid_slices = {(ls, res) for ls in params["grid"]["language_sets"] for res in params["grid"]["resources"]}
    for ls, res in reference_datasets(params):
        t0 = time.perf_counter()
        # The students' model-selection rows: the dev rows of the language set's own locales.
        _, select = enc.split(language_set(params, ls), "selection")  # the dev rows model selection reads (data.selection_dev_rows)
        select_features = embed(body, select.ids, enc.pad_id)

        def dev_score(probe):
            return per_locale_metrics(probe.predict(select_features).tolist(), select.labels.tolist(),
                                      select.locales)["accuracy"]["avg"]

        def fit(seed):
            """The probe on (ls, res)'s training rows as grid seed `seed` drew them (None: the teacher's rows)."""
            _, train = enc.train(ls, res, seed)
            # float64 from the start, where the fit runs, standardized where it lies: one feature matrix, not three
            # (598,728 x 768 in float64 is 3.7 GB at the paper's size); the token ids go once embedded
            train_features = embed(body, train.ids, enc.pad_id, dtype=torch.float64, on_model_device=True)
            rows, labels = len(train), train.labels
            del train
            probe, c, dev_by_c = tune_probe(train_features, labels, n_labels, c_grid, dev_score, device=device,
                                            in_place=True)
            del train_features     # standardized in place: the fit's own x, not needed past it
            metrics = {split: per_locale_metrics(probe.predict(features[split]).tolist(), es.labels.tolist(), es.locales)
                       for split, es in evals.items()}
            return {"train_rows": rows, "c": c, "dev_accuracy_by_c": {f"{k:g}": v for k, v in dev_by_c.items()},
                    "metrics": metrics}

        # A grid slice's floor is what a probe reaches on the rows its students trained on: one probe per seed's
        # draw (seeds that drew the same rows share one), averaged; a teacher's own rows are fixed.
        fits = ([fit(None)] if (ls, res) not in grid_slices
                else [fit(seed) for seed in distinct_draws(params)])
        out["probes"][f"{ls}-{res}"] = {"language_set": ls, "resource": res, **mean_probe(fits),
                                        "seconds": time.perf_counter() - t0}
        log.info("probe[%s-%s]: C %s, test accuracy %.4f (%d draw(s))", ls, res, out["probes"][f"{ls}-{res}"]["c"],
                 out["probes"][f"{ls}-{res}"]["metrics"]["test"]["accuracy"]["avg"], len(fits))
    for key, (ls, res) in needed_teachers(params).items():
        info = json.loads((paths.teachers / key / "teacher_metrics.json").read_text())
        out["teachers"][key] = {"language_set": ls, "resource": res, "metrics": info["metrics"],
                                "history": info["training"]["history"]}  # its learning curve (collect's curves.csv)
    for ls in params["grid"]["language_sets"]:
        for res in params["grid"]["resources"]:
            out["slices"][f"{ls}-{res}"] = {"probe": f"{ls}-{res}", "teacher": teacher_key(params, ls, res)[0]}
    atomic.write_json(paths.results / "references.json", out)
    return out
