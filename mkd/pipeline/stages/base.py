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
    from mkd.models.sources import build_base_model, count_parameters
    from mkd.models.vocab_trim import trim_vocabulary

    paths = Paths(params, root)
    source_dir = build_base_model(params["base"]["model"])
    with atomic.atomic_dir(paths.base) as tmp:
        if params["base"]["trim_vocab"]:
            stats = trim_vocabulary(source_dir, trim_corpus(paths), tmp)
        else:
            shutil.copytree(source_dir, tmp, dirs_exist_ok=True)
            stats = {"params_after": count_parameters(tmp)["total"]}
        set_base_pooling(tmp, params["base"]["pooling"])
    log.info("base model in %s: %s", paths.base, stats)
    return stats


def trim_corpus(paths: Paths) -> list[str]:
    """Every text a model of the profile reads: the prepared folder (the teacher's rows, every evaluation row)
    and every grid seed's own training rows (artifacts/<profile>/draws). The trimmed model computes exactly what
    the untrimmed one does on these texts only: a draw left out would reach its students with pieces the
    trimmed vocabulary lacks (re-segmented, or <unk>). Each text once, in first-seen order: the draws repeat rows
    (seed 0's are the prepared folder's; at the paper's 100 % every seed's high draw is all 598,728 training rows),
    and trimming tokenizes every text it is given twice."""
    from mkd.data import load_prepared

    texts = dict.fromkeys(load_prepared(paths.data).texts())
    for draw in sorted(paths.draws.glob("s*")) if paths.draws.is_dir() else ():
        texts.update(dict.fromkeys(load_prepared(draw).texts()))
    return list(texts)


def set_base_pooling(model_dir: Path, pooling: str) -> None:
    """Write the pooling into the base model's config.json: teachers and students are built from this config
    (students from the teacher's, a copy of it), so every model of the profile pools the same way."""
    from mkd.models.heads import CONFIG_KEY, check_pooling

    check_pooling(pooling, "base.pooling")
    config = json.loads((model_dir / "config.json").read_text())
    config[CONFIG_KEY] = pooling
    atomic.write_json(model_dir / "config.json", config)
