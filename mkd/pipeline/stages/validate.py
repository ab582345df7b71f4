"""Stage `validate`: params.yaml checked (by the CLI, before this runs) and the MASSIVE source fingerprinted."""

from __future__ import annotations

from pathlib import Path

from mkd.core import atomic
from mkd.core.hashing import json_digest
from mkd.pipeline.grid import Paths, prepared_locales


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
