"""MASSIVE locales kept as Arrow datasets (Hugging Face `datasets`): validated once, memory-mapped after.

The first read of a locale goes through the JSONL reader (mkd.data.reader), which checks every row and names
file and line for any fault. Its rows are then saved with `Dataset.save_to_disk` under
<cache>/massive-arrow/<locale>-<sha256 of the bytes read>; a later read of the same bytes is a `load_from_disk`
(memory-mapped Arrow, no parsing, no row checks: the checksum in the folder name says these bytes passed them).
Edited or new files have another checksum, so they are read and checked again; an unreadable cache entry is a
miss, never an error. Why not `load_dataset("json")` on the files: pyarrow's JSON reader accepts lines the
reader must refuse (two objects on one line become two rows) and names no line for those it refuses
("JSON parse error ... in row 0" of a block), so it cannot be the validator, and a cold read pays the reader
anyway (benchmark/data_and_models.py measures the reader, a cold and a warm read).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

from mkd.core.atomic import atomic_dir
from mkd.core.cache import cache_root
from mkd.core.errors import DataError
from mkd.core.hashing import file_sha256

from .schema import Example
from .source import locale_file

log = logging.getLogger(__name__)

_FORMAT = "massive-arrow-1"  # bump when the saved columns change
COLUMNS = ("id", "partition", "intent", "utt")


def cache_dir() -> Path:
    return cache_root() / "massive-arrow"


def entry_names(source: Path, locales: Sequence[str]) -> dict[str, str]:
    """{locale: cache folder name}, from the SHA-256 of what the reader reads for it: its file in a folder
    source, or the whole tarball. A file that cannot be read gets no name: the reader then says what is wrong."""
    def digest(path: Path) -> str | None:
        try:
            return file_sha256(path)[:32]
        except OSError:
            return None

    if source.is_file():
        whole = digest(source)
        digests = {loc: whole for loc in locales}
    else:
        digests = {}
        for loc in locales:
            try:
                digests[loc] = digest(locale_file(source, loc))
            except DataError:  # missing, or two copies: the reader's error
                digests[loc] = None
    return {loc: f"{loc}-{d}" for loc, d in digests.items() if d is not None}


def _datasets():
    import datasets  # ~1.3 s; only where MASSIVE is read

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def load(names: Mapping[str, str], splits: Sequence[str]) -> dict[str, dict[str, list[Example]]]:
    """The cached locales among `names`, as {locale: {split: [Example]}} in file order; others are left out."""
    if not any((cache_dir() / _FORMAT / name).is_dir() for name in names.values()):
        return {}
    datasets = _datasets()
    out = {}
    for loc, name in names.items():
        folder = cache_dir() / _FORMAT / name
        if not folder.is_dir():
            continue
        try:
            table = datasets.load_from_disk(str(folder)).data.table
            ids, parts, intents, utts = (table.column(c).to_pylist() for c in COLUMNS)
        except Exception as exc:  # a damaged entry: read the source again and replace it
            log.warning("ignoring unreadable MASSIVE cache %s (%s); reading the source again", folder, exc)
            continue
        rows: dict[str, list[Example]] = {s: [] for s in splits}
        for rid, part, intent, utt in zip(ids, parts, intents, utts):
            if part in rows:
                rows[part].append(Example(rid, loc, part, intent, utt))
        out[loc] = rows
    return out


def save(name: str, rows: Mapping[str, Sequence[Example]]) -> None:
    """Keep one locale's checked rows (every split, file order within each) for the next read."""
    import pyarrow as pa

    datasets = _datasets()
    examples = [ex for split_rows in rows.values() for ex in split_rows]
    # a pyarrow table of string columns: 0.03 s a locale, where Dataset.from_dict's conversion took 0.23 s
    table = pa.table({c: pa.array([getattr(ex, "split" if c == "partition" else c) for ex in examples], pa.string())
                      for c in COLUMNS})
    target = cache_dir() / _FORMAT / name
    try:
        with atomic_dir(target) as tmp:
            datasets.Dataset(table).save_to_disk(str(tmp))
    except OSError as exc:  # a full or read-only cache costs speed, not the run
        log.warning("could not cache MASSIVE rows in %s (%s); the next read parses the source again", target, exc)
