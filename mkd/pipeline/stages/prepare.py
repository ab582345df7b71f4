"""Stage `prepare`: MASSIVE read and checked; labels, nested low/high subsets and evaluation splits written, and
each grid seed's own training rows."""

from __future__ import annotations

import logging

from mkd.pipeline.grid import Paths, all_seeds, language_set, prepared_locales

log = logging.getLogger("mkd")


def grid_locales(params: dict) -> list[str]:
    """The locales any grid language set trains on (the ones each seed draws rows of)."""
    return sorted({loc for ls in params["grid"]["language_sets"] for loc in language_set(params, ls)})


def selection_sets(params: dict) -> list[tuple[str, ...]]:
    """The language sets a model is selected on (the grid's and the teacher's): each reads at least
    data.selection_dev_rows dev rows (mkd.data.prepare_dataset)."""
    return [language_set(params, ls) for ls in sorted({*params["grid"]["language_sets"], params["teacher"]["language_set"]})]


def prepare(params: dict, root=".") -> dict:
    """artifacts/<profile>/data (the teacher's rows, every evaluation row, labels: fixed by data.seed) and
    artifacts/<profile>/draws/s<seed> (each grid seed's nested student subsets, mkd.data.prepare_draws)."""
    from mkd.data import draw_seed, prepare_dataset, prepare_draws, read_massive, resolve_source

    paths = Paths(params, root)
    d = params["data"]
    locales = prepared_locales(params)
    massive = read_massive(resolve_source(d["massive"]), locales, d["allow_partial"])
    manifest = prepare_dataset(None, locales, d["train_sizes"], d["seed"], paths.data,
                               eval_per_locale=d["eval_per_locale"], allow_partial=d["allow_partial"], massive=massive,
                               selection_dev_rows=d["selection_dev_rows"], selection_sets=selection_sets(params))
    student_sizes = {res: d["train_sizes"][res] for res in params["grid"]["resources"]}
    seeds = {s: draw_seed(d["seed"], s, d["draw_per_seed"]) for s in all_seeds(params)}
    prepare_draws(massive, grid_locales(params), student_sizes, seeds, paths.draws)
    log.info("prepared %d locales from %s into %s; training rows of %d seed(s) into %s", len(locales), massive[0],
             paths.data, len(seeds), paths.draws)
    return manifest
