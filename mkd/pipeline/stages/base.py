"""Stage `base`: the base model built (Hub id, local folder or e5 wheels), its vocabulary trimmed, its pooling set."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from mkd.core import atomic
from mkd.pipeline.grid import Paths

log = logging.getLogger("mkd")


def build_base(params: dict, root=".") -> dict:
    from mkd.data import load_prepared
    from mkd.models.sources import build_base_model, count_parameters
    from mkd.models.vocab_trim import trim_vocabulary

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
    from mkd.models.heads import CONFIG_KEY, check_pooling

    check_pooling(pooling, "base.pooling")
    config = json.loads((model_dir / "config.json").read_text())
    config[CONFIG_KEY] = pooling
    atomic.write_json(model_dir / "config.json", config)
