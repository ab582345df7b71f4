"""Reading MASSIVE's JSONL files (plain, gzipped, or inside the tarball) into Examples, validating every row.

Every fault in the data is a DataError naming the file (and the 1-based line number for a bad row) and
the fix; nothing else escapes the reader (tests/test_data_fuzz.py holds it to that).
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import json
import tarfile
import zlib
from pathlib import Path
from typing import Any, Iterator, Sequence

from mkd.core.errors import DataError

from .schema import ALL_LOCALES, SPLITS, Example, resolve_language_set, unknown_name
from .source import FIX_SOURCE, locale_file

_REQUIRED_FIELDS = ("id", "locale", "partition", "intent", "utt")


def _validate(row: Any, where: str, locale: str) -> tuple[str, str, str, str]:
    """(id, partition, intent, utt) of a parsed row, or DataError saying what is wrong with it."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [f for f in _REQUIRED_FIELDS if f not in row]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
    rid = row["id"]
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    for field, value in (("id", rid), ("locale", row["locale"]), ("partition", row["partition"]),
                         ("intent", row["intent"]), ("utt", row["utt"])):
        if not isinstance(value, str):
            raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__} {value!r:.60}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{where}: field {field!r} holds an invalid Unicode escape (lone surrogate)") from None
    if not rid.strip():
        raise DataError(f"{where}: empty id")
    if row["locale"] != locale:
        raise DataError(f"{where}: locale field is {row['locale']!r} but the file is for {locale!r}")
    part = row["partition"]
    if part not in SPLITS:
        raise DataError(f"{where}: unknown partition {part!r} (expected one of {', '.join(SPLITS)})")
    if not row["intent"].strip():
        raise DataError(f"{where}: empty intent")
    if not row["utt"].strip():
        raise DataError(f"{where}: empty utt")
    return rid, part, row["intent"], row["utt"]


def _parse_blob(blob: bytes, name: str, locale: str, splits: Sequence[str]) -> dict[str, list[Example]]:
    """Parse a whole JSONL file's bytes into Examples of the requested splits; any fault -> DataError(name, line)."""
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = blob.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{name}, line {lineno}: not valid UTF-8 ({exc.reason})") from None
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors add when saving: not part of the JSON
    out: dict[str, list[Example]] = {s: [] for s in splits}
    seen: dict[str, str] = {}  # id -> partition it first appeared in
    decoder = json.JSONDecoder()
    decode, scan = decoder.decode, decoder.scan_once
    lineno = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line or line.isspace():
            continue
        try:
            row, end = scan(line, 0)  # the C scanner, without decode()'s wrapping
            if end != len(line) and not line[end:].isspace():
                raise ValueError("extra data")
        except (StopIteration, ValueError, RecursionError):
            try:  # the slow way, for leading whitespace and a precise message
                row = decode(line)
            except (ValueError, RecursionError) as exc:
                raise DataError(f"{name}, line {lineno}: malformed JSON ({exc})") from None
        # fast path for the well-formed rows (nearly all); anything unusual gets the full checks in _validate
        try:
            rid, loc, part, intent, utt = row["id"], row["locale"], row["partition"], row["intent"], row["utt"]
            fast = (type(rid) is str and type(loc) is str and loc == locale and type(part) is str and part in SPLITS
                    and type(intent) is str and type(utt) is str and "\\ud" not in line and "\\uD" not in line
                    and not rid.isspace() and rid and intent and not intent.isspace() and utt and not utt.isspace()
                    and type(row) is dict)
        except (KeyError, TypeError, IndexError):
            fast = False
        if not fast:
            rid, part, intent, utt = _validate(row, f"{name}, line {lineno}", locale)
        # MASSIVE ids are unique within a locale across partitions: an id in two of them means the same utterance
        # is both trained on and tested on.
        if rid in seen:
            first = seen[rid]
            raise DataError(f"{name}, line {lineno}: duplicate id {rid!r} in partition {part!r} (first in {first!r})"
                            + (" -- the same example would be trained on and tested on" if first != part else ""))
        seen[rid] = part
        if part in out:
            out[part].append(Example(rid, locale, part, intent, utt))
    for s in splits:
        if not out[s]:
            raise DataError(f"{name}: no rows of split {s!r} (read {lineno} lines); the file is incomplete or not MASSIVE 1.1")
    return out


def _check_splits(splits: Sequence[str]) -> tuple[str, ...]:
    if isinstance(splits, str):
        splits = (splits,)
    for s in splits:
        if s not in SPLITS:
            raise DataError(f"unknown split {s!r}; valid: {', '.join(SPLITS)}")
    if not splits:
        raise DataError("no split requested")
    return tuple(dict.fromkeys(splits))


def _check_locale(locale: str) -> None:
    if locale not in ALL_LOCALES:
        raise unknown_name("locale", str(locale), ALL_LOCALES)


def _read_file(path: Path, locale: str, splits: Sequence[str]) -> dict[str, list[Example]]:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                blob = fh.read()
        else:
            blob = path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); restore it from the source") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    return _parse_blob(blob, str(path), locale, splits)


def _tar_member_locale(name: str) -> str | None:
    parts = name.replace("\\", "/").split("/")
    if len(parts) >= 2 and parts[-2] == "data":
        base = parts[-1]
        for suffix in (".jsonl.gz", ".jsonl"):
            if base.endswith(suffix):
                return base[: -len(suffix)]
    return None


def _read_tar(path: Path, locales: Sequence[str], splits: Sequence[str]) -> Iterator[tuple[str, dict[str, list[Example]]]]:
    """One pass over the tarball, yielding (locale, splits) for each wanted `data/<locale>.jsonl` member."""
    wanted = set(locales)
    found: set[str] = set()
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                loc = _tar_member_locale(member.name)
                if loc not in wanted or loc in found or not member.isfile():
                    continue
                fh = tar.extractfile(member)
                assert fh is not None
                name = f"{path}:{member.name}"
                if member.name.endswith(".gz"):
                    try:
                        with gzip.open(fh, "rb") as gz:
                            blob = gz.read()
                    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                        raise DataError(f"{name} is truncated or corrupt ({exc})") from None
                else:
                    blob = fh.read()
                found.add(loc)
                yield loc, _parse_blob(blob, name, loc, splits)
                if found == wanted:
                    return
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); download it again") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    missing = sorted(wanted - found)
    if missing:
        raise DataError(f"{path} has no data/<locale>.jsonl member for {', '.join(missing)}; is it the MASSIVE 1.1 tarball?")


def load_locale(source: Path, locale: str, splits: Sequence[str] = SPLITS) -> dict[str, list[Example]]:
    """Rows of one locale as {split: [Example]} in file order, from a folder (plain or gz) or the tarball."""
    _check_locale(locale)
    splits = _check_splits(splits)
    source = Path(source)
    if source.is_dir():
        return _read_file(locale_file(source, locale), locale, splits)
    if source.is_file():
        return dict(_read_tar(source, [locale], splits))[locale]
    raise DataError(f"MASSIVE source {source} does not exist; {FIX_SOURCE}")


def load_massive(source: Path, locales: Sequence[str], splits: Sequence[str] = SPLITS) -> dict[str, dict[str, list[Example]]]:
    """{locale: {split: [Example]}} for the given locales (in the given order). A locale read whole (every split)
    is kept as an Arrow dataset (mkd.data.arrow_cache): the next read of the same bytes skips parsing and checks."""
    from . import arrow_cache

    locales = resolve_language_set(locales if isinstance(locales, str) else tuple(locales))
    splits = _check_splits(splits)
    source = Path(source)
    if not source.exists():
        raise DataError(f"MASSIVE source {source} does not exist; {FIX_SOURCE}")
    whole = set(splits) == set(SPLITS)  # only complete locales are cached
    names = arrow_cache.entry_names(source, locales) if whole else {}
    with _gc_paused():  # ~900k new objects would trigger many full collections for nothing
        got = arrow_cache.load(names, splits)
        missing = [loc for loc in locales if loc not in got]
        if source.is_file():
            read = dict(_read_tar(source, missing, splits)) if missing else {}
        else:
            read = {loc: load_locale(source, loc, splits) for loc in missing}
    for loc, rows in read.items():
        if loc in names:
            arrow_cache.save(names[loc], rows)
        got[loc] = rows
    return {loc: {s: got[loc][s] for s in splits} for loc in locales}


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
