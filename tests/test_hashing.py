"""One hasher: every fingerprint mkd records goes through mkd.core.hashing, in a format that must not drift (a changed
format would make every cached teacher, checkpoint and recorded cell digest look stale)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mkd.core.hashing import bytes_sha256, file_sha256, json_digest
from mkd.pipeline.fingerprints import cell_digest, cell_student, digest
from mkd.pipeline.grid import Cell


def test_json_digest_is_sha256_of_sorted_json_with_other_values_as_text():
    obj = {"b": [1, 2.5, None, True], "a": {"é": "x"}, "path": Path("/data")}
    text = json.dumps(obj, sort_keys=True, default=str)
    assert json_digest(obj) == hashlib.sha256(text.encode()).hexdigest()
    assert digest(obj) == json_digest(obj)[:16] and len(digest(obj)) == 16
    assert json_digest({"a": 1, "b": 2}) == json_digest({"b": 2, "a": 1})


def test_cell_digest_reads_the_sections_a_result_depends_on_and_not_the_grid():
    from copy import deepcopy

    from mkd.config import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    cell = Cell("all", "low", "teacher", "on", 0)
    same = cell_digest({**params, "grid": {"seeds": [0, 1]}, "analysis": {"metric": "macro_f1"}}, cell)
    assert cell_digest(params, cell) == same
    faster = deepcopy(params)
    faster["student"]["lr"] = 2.0
    assert cell_digest(faster, cell) != same
    # which matrix stage makes a cell (cell or cell_extra) is not what it is: `mkd cell` builds it without knowing,
    # collect and the fanout ledger from the grid; the digest has the format of before the two matrices
    assert cell_digest(params, Cell("all", "low", "teacher", "on", 3, "cell_extra")) == cell_digest(
        params, Cell("all", "low", "teacher", "on", 3))
    relevant = {**{k: params[k] for k in ("profile", "data", "base", "teacher")},
                "student": cell_student(params, cell)}
    assert same == digest({"params": relevant, "cell": {"language_set": "all", "resource": "low", "init": "teacher",
                                                        "kd": "on", "seed": 0}})


def test_file_sha256_equals_hashlib_on_a_real_massive_file(massive_dir):
    path = massive_dir / "sw-KE.jsonl.gz"
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_sha256(path, chunk=1000) == file_sha256(path)  # chunk boundaries do not matter
    assert bytes_sha256(path.read_bytes()) == file_sha256(path)
