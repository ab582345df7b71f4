"""Stage `prepare`: MASSIVE read and checked; labels, nested low/high subsets and evaluation splits written."""

from __future__ import annotations

import logging

from mkd.pipeline.grid import Paths, prepared_locales

log = logging.getLogger("mkd")


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
