"""MASSIVE 1.1 reading, label vocabulary, language sets, nested low-resource subsets, prepared data.

Sources: a folder of `<locale>.jsonl[.gz]` files (the offline copy, or an extracted official tarball), the
official tarball itself, or "official" (downloaded once into the cache and checksum-checked).

Every fault in the data is a DataError naming the file (and the 1-based line number for a bad row) and
the fix; nothing else escapes the reader (tests/test_data_fuzz.py holds it to that).
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import gzip
import hashlib
import http.client
import json
import logging
import math
import os
import random
import tarfile
import urllib.request
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .atomic import atomic_dir, atomic_path, write_json
from .errors import DataError

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------- constants

ALL_LOCALES: tuple[str, ...] = tuple(sorted((
    "af-ZA", "am-ET", "ar-SA", "az-AZ", "bn-BD", "ca-ES", "cy-GB", "da-DK", "de-DE", "el-GR", "en-US",
    "es-ES", "fa-IR", "fi-FI", "fr-FR", "he-IL", "hi-IN", "hu-HU", "hy-AM", "id-ID", "is-IS", "it-IT",
    "ja-JP", "jv-ID", "ka-GE", "km-KH", "kn-IN", "ko-KR", "lv-LV", "ml-IN", "mn-MN", "ms-MY", "my-MM",
    "nb-NO", "nl-NL", "pl-PL", "pt-PT", "ro-RO", "ru-RU", "sl-SL", "sq-AL", "sv-SE", "sw-KE", "ta-IN",
    "te-IN", "th-TH", "tl-PH", "tr-TR", "ur-PK", "vi-VN", "zh-CN", "zh-TW",
)))
assert len(ALL_LOCALES) == 52

LANGUAGE_SETS: dict[str, tuple[str, ...]] = {
    "all": ALL_LOCALES,
    "en": ("en-US",),
    # typologically diverse, incl. low-resource languages (Swahili, Amharic, Welsh, Khmer)
    "cpu8": ("en-US", "de-DE", "ja-JP", "ar-SA", "sw-KE", "am-ET", "cy-GB", "km-KH"),
    "smoke": ("en-US", "de-DE", "sw-KE"),
}

SPLITS: tuple[str, ...] = ("train", "dev", "test")
# Rows per split, identical in every locale of MASSIVE 1.1 (the release's own statistics): a copy with fewer rows
# is partial (a file cut at a line boundary still parses), which prepare refuses unless asked for a subset.
MASSIVE_SPLIT_SIZES: dict[str, int] = {"train": 11514, "dev": 2033, "test": 2974}

# The 60 MASSIVE intents (identical in every locale of 1.1).
MASSIVE_INTENTS: tuple[str, ...] = (
    "alarm_query", "alarm_remove", "alarm_set", "audio_volume_down", "audio_volume_mute",
    "audio_volume_other", "audio_volume_up", "calendar_query", "calendar_remove", "calendar_set",
    "cooking_query", "cooking_recipe", "datetime_convert", "datetime_query", "email_addcontact",
    "email_query", "email_querycontact", "email_sendemail", "general_greet", "general_joke",
    "general_quirky", "iot_cleaning", "iot_coffee", "iot_hue_lightchange", "iot_hue_lightdim",
    "iot_hue_lightoff", "iot_hue_lighton", "iot_hue_lightup", "iot_wemo_off", "iot_wemo_on",
    "lists_createoradd", "lists_query", "lists_remove", "music_dislikeness", "music_likeness",
    "music_query", "music_settings", "news_query", "play_audiobook", "play_game", "play_music",
    "play_podcasts", "play_radio", "qa_currency", "qa_definition", "qa_factoid", "qa_maths", "qa_stock",
    "recommendation_events", "recommendation_locations", "recommendation_movies", "social_post",
    "social_query", "takeaway_order", "takeaway_query", "transport_query", "transport_taxi",
    "transport_ticket", "transport_traffic", "weather_query",
)
assert len(MASSIVE_INTENTS) == 60 and list(MASSIVE_INTENTS) == sorted(MASSIVE_INTENTS)

OFFICIAL_URL = "https://amazon-massive-nlu-dataset.s3.amazonaws.com/amazon-massive-dataset-1.1.tar.gz"
OFFICIAL_FILENAME = "amazon-massive-dataset-1.1.tar.gz"
# SHA-256 of the official tarball (40,251,390 bytes). Not computed here (this machine has no internet):
# it is the value that several unrelated public projects pinned after downloading the archive from
# OFFICIAL_URL (found through a code search, all agreeing). Set to None to download unverified.
OFFICIAL_SHA256: str | None = "4cba5faa11c71437928e17cb1b9b3d8b8e727e7ea363a3a9a8045e19c0491577"

_REQUIRED_FIELDS = ("id", "locale", "partition", "intent", "utt")
_FIX_SOURCE = ("set MKD_MASSIVE, or data.massive in params.yaml, to a MASSIVE 1.1 folder or tarball (or 'official' "
               "to download it; 'auto' = MKD_MASSIVE, else ../shared/massive, else the download)")
# Where this workplace's machines keep a copy beside the checkout (the `auto` source looks here first).
SHARED_COPY = Path("..") / "shared" / "massive"


def cache_root() -> Path:
    """The mkd cache folder: env MKD_CACHE, default ~/.cache/mkd."""
    return Path(os.environ.get("MKD_CACHE") or Path.home() / ".cache" / "mkd").expanduser()


# ------------------------------------------------------------------------------------- language sets

def _unknown(kind: str, name: str, valid: Sequence[str]) -> DataError:
    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return DataError(f"unknown {kind} {name!r}.{hint} Valid: {', '.join(valid)}")


def resolve_language_set(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A language-set name ("all", "cpu8", ...) or an explicit list of locales -> tuple of locales."""
    if isinstance(spec, str):
        if spec in LANGUAGE_SETS:
            return LANGUAGE_SETS[spec]
        if spec in ALL_LOCALES:  # a single locale given as a string
            return (spec,)
        close = difflib.get_close_matches(spec, list(LANGUAGE_SETS) + list(ALL_LOCALES), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise DataError(
            f"unknown language set {spec!r}.{hint} Valid set names: {', '.join(LANGUAGE_SETS)}; "
            f"or give a list of locales from: {', '.join(ALL_LOCALES)}"
        )
    if not isinstance(spec, (list, tuple)) or not spec:
        raise DataError(f"a language set must be a set name ({', '.join(LANGUAGE_SETS)}) or a non-empty list of locales, not {spec!r}")
    out: list[str] = []
    for loc in spec:
        if not isinstance(loc, str) or loc not in ALL_LOCALES:
            raise _unknown("locale", str(loc), ALL_LOCALES)
        if loc in out:
            raise DataError(f"locale {loc!r} is listed twice in the language set {list(spec)}")
        out.append(loc)
    return tuple(out)


# ------------------------------------------------------------------------------------------ examples

@dataclass(frozen=True, slots=True)
class Example:
    id: str
    locale: str
    split: str
    intent: str
    utt: str


# ---------------------------------------------------------------------------------------- the source

def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, dest: Path) -> None:
    """Copy `url` (https://, file://) into `dest`. Separate so tests can replace it."""
    with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:  # noqa: S310 (fixed URL)
        expected, received = resp.headers.get("Content-Length"), 0
        while block := resp.read(1 << 20):
            out.write(block)
            received += len(block)
    # http.client returns a body cut short by a dropped connection as if it were whole: count the bytes.
    if expected is not None and received != int(expected):
        raise OSError(f"the connection closed after {received:,} of {int(expected):,} bytes")


_UNSET: Any = object()


def download_official(cache_dir: str | os.PathLike | None = None, url: str | None = None,
                      sha256: str | None = _UNSET) -> Path:
    """Download the official MASSIVE 1.1 tarball into the cache (once) and check its SHA-256.

    url/sha256 default to the module's OFFICIAL_URL / OFFICIAL_SHA256 (read at call time). sha256=None
    skips the check (logged). A mismatch raises DataError and leaves no file behind.
    """
    url = url or OFFICIAL_URL
    expected = OFFICIAL_SHA256 if sha256 is _UNSET else sha256
    folder = Path(cache_dir) if cache_dir is not None else cache_root()
    target = folder / OFFICIAL_FILENAME
    if target.is_file():
        if expected is None or sha256_file(target) == expected:
            return target
        log.warning("cached %s does not match the expected SHA-256; downloading it again", target)
    log.info("downloading MASSIVE 1.1 from %s to %s", url, target)
    try:
        with atomic_path(target) as tmp:
            try:
                _fetch(url, tmp)
            except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, HTTPError, timeouts are
                # OSErrors; a connection cut mid-body is IncompleteRead (an HTTPException); ValueError: bad URL
                raise DataError(f"could not download MASSIVE 1.1 from {url}: {exc}. Download it by hand and {_FIX_SOURCE}") from exc
            actual = sha256_file(tmp)
            if expected is None:
                log.warning("no expected SHA-256 for %s; its content is unverified (sha256 %s)", url, actual)
            elif actual != expected:
                raise DataError(
                    f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}. The download is "
                    f"corrupt or the file changed upstream; nothing was kept. Retry, or {_FIX_SOURCE}"
                )
    except DataError:
        if target.exists() and expected is not None and sha256_file(target) != expected:
            target.unlink()  # the stale cached copy that did not match either
        raise
    return target


def locate_source(spec: str | os.PathLike | None = None) -> Path | None:
    """Where MASSIVE is, fetching nothing: a local folder or tarball, or None for the official release.

    env MKD_MASSIVE wins when set; else `spec`: a folder, a tarball, "official", or "auto" (../shared/massive
    beside the checkout when it is there, else the official release)."""
    env = os.environ.get("MKD_MASSIVE")
    origin = "MKD_MASSIVE" if env else "data.massive"
    if env:
        spec = env
    if spec is None or str(spec).strip() == "":
        raise DataError(f"no MASSIVE 1.1 source given; {_FIX_SOURCE}")
    if str(spec) == "auto":
        return SHARED_COPY.resolve() if SHARED_COPY.is_dir() else None
    if str(spec) == "official":
        return None
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.is_file():
        if not _is_tarball(path):
            raise DataError(f"{path} ({origin}) is a file but not a tar archive; {_FIX_SOURCE}")
        return path.resolve()
    raise DataError(
        f"MASSIVE 1.1 not found at {path} (from {origin}): looked for a folder of <locale>.jsonl[.gz] files "
        f"or the tarball {OFFICIAL_FILENAME}. Fix: {_FIX_SOURCE}"
    )


def resolve_source(spec: str | os.PathLike | None = None) -> Path:
    """locate_source, downloading the official release (once, checksum-verified) when that is the source."""
    path = locate_source(spec)
    return download_official() if path is None else path


def _is_tarball(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _locale_file(folder: Path, locale: str) -> Path:
    candidates = []
    for sub in (Path("."), Path("data"), Path("1.1") / "data"):
        for suffix in (".jsonl.gz", ".jsonl"):
            candidates.append(folder / sub / f"{locale}{suffix}")
    for sub in (Path("."), Path("data"), Path("1.1") / "data"):
        both = [folder / sub / f"{locale}{suffix}" for suffix in (".jsonl.gz", ".jsonl")]
        if all(c.is_file() for c in both):
            raise DataError(f"two copies of locale {locale!r}: {both[0]} and {both[1]}; keep one (which is right is "
                            "not for mkd to guess)")
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(
        f"no file for locale {locale!r} in {folder}: looked for {', '.join(str(c.relative_to(folder)) for c in candidates[:2])} "
        f"(also under data/ and 1.1/data/). Fix: {_FIX_SOURCE}"
    )


# ------------------------------------------------------------------------------------------- reading

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
        raise _unknown("locale", str(locale), ALL_LOCALES)


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
        return _read_file(_locale_file(source, locale), locale, splits)
    if source.is_file():
        return dict(_read_tar(source, [locale], splits))[locale]
    raise DataError(f"MASSIVE source {source} does not exist; {_FIX_SOURCE}")


def load_massive(source: Path, locales: Sequence[str], splits: Sequence[str] = SPLITS) -> dict[str, dict[str, list[Example]]]:
    """{locale: {split: [Example]}} for the given locales (in the given order)."""
    locales = resolve_language_set(locales if isinstance(locales, str) else tuple(locales))
    splits = _check_splits(splits)
    source = Path(source)
    with _gc_paused():  # ~900k new objects would trigger many full collections for nothing
        if source.is_file():
            got = dict(_read_tar(source, locales, splits))
            return {loc: got[loc] for loc in locales}
        return {loc: load_locale(source, loc, splits) for loc in locales}


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def verify_checksums(folder: Path, locales: Sequence[str] | None = None) -> None:
    """Check the files listed in `folder`/SHA256SUMS (only the requested locales' when given).

    No SHA256SUMS (or a tarball path) -> nothing to check. Mismatch -> DataError with expected and actual.
    """
    folder = Path(folder)
    sums = folder / "SHA256SUMS"
    if not folder.is_dir() or not sums.is_file():
        return
    wanted = None if locales is None else {f"{loc}{sfx}" for loc in locales for sfx in (".jsonl", ".jsonl.gz")}
    for n, line in enumerate(sums.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{sums}, line {n}: not '<sha256>  <file>'")
        expected, fname = parts[0].lower(), parts[1].strip().lstrip("*")
        if wanted is not None and fname not in wanted:
            continue
        path = folder / fname
        if not path.is_file():
            if wanted is None:
                raise DataError(f"{path} is listed in {sums} but missing")
            continue
        actual = sha256_file(path)
        if actual != expected:
            raise DataError(
                f"checksum mismatch for {path}: expected sha256 {expected}, actual {actual}. "
                f"The file is corrupt or was edited; restore it from the MASSIVE 1.1 source."
            )


# ----------------------------------------------------------------------------------------- labels

class LabelVocab:
    """Sorted intent names <-> label ids."""

    def __init__(self, intents: Iterable[str]):
        self.intents: tuple[str, ...] = tuple(sorted(set(intents)))
        self._ids = {name: i for i, name in enumerate(self.intents)}

    @classmethod
    def from_examples(cls, examples: Iterable[Example]) -> "LabelVocab":
        return cls(ex.intent for ex in examples)

    def id(self, intent: str) -> int:
        try:
            return self._ids[intent]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(intent), list(self.intents), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(
                f"intent {intent!r} is not in the label vocabulary of {len(self)} intents{hint}. The data does "
                f"not match the prepared labels: re-run `mkd prepare` on the same MASSIVE 1.1 source"
            ) from None

    def intent(self, label: int) -> str:
        return self.intents[label]

    def __len__(self) -> int:
        return len(self.intents)

    def __iter__(self):
        return iter(self.intents)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelVocab) and self.intents == other.intents

    def __hash__(self) -> int:
        return hash(self.intents)

    def __repr__(self) -> str:
        return f"LabelVocab({len(self)} intents)"

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, {"intents": list(self.intents)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LabelVocab":
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
            intents = obj["intents"]
            if not isinstance(intents, list) or not intents or not all(isinstance(i, str) for i in intents):
                raise ValueError("'intents' must be a non-empty list of strings")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read the label vocabulary {path}: {exc}; re-run `mkd prepare`") from None
        vocab = cls(intents)
        if list(vocab.intents) != intents:
            raise DataError(f"{path}: intents are not sorted and unique; re-run `mkd prepare`")
        return vocab


# ------------------------------------------------------------------------------------------ subsets

def seed_for(*parts: Any) -> int:
    """A seed from parts, stable across processes and platforms (crc32, never Python's salted hash())."""
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode("utf-8"))


def _id_key(ex: Example) -> tuple[int, int, str]:
    return (0, int(ex.id), ex.id) if ex.id.isdigit() else (1, 0, ex.id)


def _stratified_order(rows: Sequence[Example], seed: int) -> list[Example]:
    """A seeded ordering of `rows` whose every prefix is stratified by intent.

    First one row of each intent (intents in seeded random order), so any prefix of >= n_intents rows holds
    every intent; then the rest interleaved proportionally: the i-th row of an intent with n rows gets the key
    (i + u)/n, u ~ U(0,1) (systematic sampling), so a prefix holds each intent within about one row of its share.
    Independent of the input order (rows are sorted by id before shuffling).
    """
    rng = random.Random(seed)
    by_intent: dict[str, list[Example]] = defaultdict(list)
    for ex in rows:
        by_intent[ex.intent].append(ex)
    intents = sorted(by_intent)
    head_keys = {name: rng.random() for name in intents}
    head: list[tuple[float, Example]] = []
    rest: list[tuple[float, float, Example]] = []
    for name in intents:
        group = sorted(by_intent[name], key=_id_key)
        rng.shuffle(group)
        n = len(group)
        head.append((head_keys[name], group[0]))
        for i in range(1, n):
            rest.append(((i + rng.random()) / n, rng.random(), group[i]))
    head.sort(key=lambda t: t[0])
    rest.sort(key=lambda t: (t[0], t[1]))
    return [ex for _, ex in head] + [ex for _, _, ex in rest]


def _size_count(name: str, size: Any, available: int, locale: str) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise DataError(f"subset {name!r}: size must be a row count (int) or a fraction in (0, 1], not {size!r}")
    if isinstance(size, float):
        if not (0.0 < size <= 1.0) or math.isnan(size):
            raise DataError(f"subset {name!r}: fraction {size} is outside (0, 1]; use an int for a row count")
        return max(1, min(available, round(size * available)))
    if size < 1:
        raise DataError(f"subset {name!r}: size {size} must be at least 1")
    if size > available:
        raise DataError(
            f"subset {name!r}: {size} rows per locale requested but {locale} has only {available} train rows; "
            f"use a smaller count or a fraction (1.0 = all)"
        )
    return size


def _group_by_locale(rows: Iterable[Example]) -> dict[str, list[Example]]:
    out: dict[str, list[Example]] = {}
    for ex in rows:
        out.setdefault(ex.locale, []).append(ex)
    return out


def nested_subsets(train: list[Example], sizes: Mapping[str, int | float], seed: int) -> dict[str, list[Example]]:
    """Per-locale, intent-stratified, seeded, nested subsets of `train`: {name: [Example]}.

    int size = rows per locale, float in (0, 1] = fraction per locale. Every subset is a prefix of one
    seeded ordering per locale (seed derived from (seed, locale)), so a smaller one is inside every larger one.
    Rows come locale by locale (locales in first-seen order), each in its stratified order.
    """
    if not sizes:
        raise DataError("no subset sizes given")
    by_locale = _group_by_locale(train)
    out: dict[str, list[Example]] = {name: [] for name in sizes}
    for locale, rows in by_locale.items():
        order = _stratified_order(rows, seed_for(seed, locale))
        for name, size in sizes.items():
            out[name].extend(order[: _size_count(name, size, len(order), locale)])
    return out


# ------------------------------------------------------------------------------------------ prepare

_FORMAT = 1
_PREPARED_FILES = ("labels.json", "examples.jsonl.gz", "subsets.json", "manifest.json")


def source_files(source: Path, locales: Sequence[str]) -> dict[str, str]:
    """SHA-256 of each file prepare reads for `locales` (the tarball itself for a tarball source)."""
    if source.is_file():
        return {source.name: sha256_file(source)}
    out = {}
    for loc in locales:
        path = _locale_file(source, loc)
        out[str(path.relative_to(source))] = sha256_file(path)
    return out


def _check_intents(data: Mapping[str, Mapping[str, list[Example]]]) -> None:
    full = set(MASSIVE_INTENTS)
    problems = []
    for loc, splits in data.items():
        present = {ex.intent for rows in splits.values() for ex in rows}
        missing, unknown = sorted(full - present), sorted(present - full)
        if unknown:
            problems.append(f"{loc} has intents outside MASSIVE 1.1: {', '.join(unknown)}")
        if missing:
            problems.append(f"{loc} lacks {len(missing)} intent(s): {', '.join(missing)}")
    if problems:
        raise DataError(
            "the label vocabulary must be the 60 MASSIVE 1.1 intents in every locale, but " + "; ".join(problems)
            + ". The locale file(s) are incomplete or edited; restore them from the MASSIVE 1.1 source"
        )


def _check_split_sizes(data: Mapping[str, Mapping[str, list[Example]]], source: Path) -> None:
    short = [f"{loc} {split} {len(rows)} of {MASSIVE_SPLIT_SIZES[split]}"
             for loc, splits in data.items() for split, rows in splits.items()
             if split in MASSIVE_SPLIT_SIZES and len(rows) != MASSIVE_SPLIT_SIZES[split]]
    if short:
        raise DataError(
            f"{source} is not the whole MASSIVE 1.1 (rows: {'; '.join(short[:6])}{'; ...' if len(short) > 6 else ''}); "
            "a file cut short still parses. Restore the files from the official release (data.massive: official "
            "downloads it), or set data.allow_partial: true if this subset is what you mean to use")


def prepare_dataset(source: str | os.PathLike, locales: Sequence[str] | str, train_sizes: Mapping[str, int | float],
                    seed: int, out_dir: str | os.PathLike,
                    eval_per_locale: Mapping[str, int | None] | None = None, allow_partial: bool = False) -> dict:
    """Read the locales, check them, select nested train subsets and capped dev/test, write `out_dir` atomically.

    out_dir gets labels.json, examples.jsonl.gz (each selected row once, with its label id), subsets.json
    ({name: {locale: [ids]}}) and manifest.json, all at once or not at all. Returns the manifest.
    eval_per_locale: {"dev": n | None, "test": n | None}; a cap keeps a stratified seeded subset whose ids are
    the same in every locale (seed from (seed, split)), so per-locale scores stay comparable.
    allow_partial: accept locales with fewer rows than MASSIVE 1.1 has (else DataError naming them).
    """
    source = download_official() if str(source) == "official" else Path(source)
    locales = resolve_language_set(locales if isinstance(locales, str) else tuple(locales))
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"seed must be an int, not {seed!r}")
    if not train_sizes:
        raise DataError("train_sizes is empty; give at least one subset, e.g. {'high': 1.0}")
    for name in train_sizes:
        if not isinstance(name, str) or not name:
            raise DataError(f"subset names must be non-empty strings, not {name!r}")
    eval_per_locale = dict(eval_per_locale or {})
    for split, cap in eval_per_locale.items():
        if split not in ("dev", "test"):
            raise DataError(f"eval_per_locale: unknown split {split!r}; use 'dev' and/or 'test'")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise DataError(f"eval_per_locale[{split!r}] must be a positive int or None, not {cap!r}")

    verify_checksums(source, locales)
    data = load_massive(source, locales, SPLITS)
    _check_intents(data)
    if not allow_partial:
        _check_split_sizes(data, source)
    labels = LabelVocab(MASSIVE_INTENTS)

    subsets: dict[str, dict[str, list[str]]] = {name: {} for name in train_sizes}
    selected: dict[str, dict[str, list[Example]]] = {}
    counts: dict[str, dict[str, Any]] = {}
    for loc in locales:
        splits = data[loc]
        subs = nested_subsets(splits["train"], train_sizes, seed)
        keep_train: set[str] = set()
        for name, rows in subs.items():
            subsets[name][loc] = [ex.id for ex in rows]
            keep_train.update(ex.id for ex in rows)
        chosen = {"train": [ex for ex in splits["train"] if ex.id in keep_train]}
        for split in ("dev", "test"):
            rows = splits[split]
            cap = eval_per_locale.get(split)
            if cap is not None and cap < len(rows):
                keep = {ex.id for ex in _stratified_order(rows, seed_for(seed, split))[:cap]}
                rows = [ex for ex in rows if ex.id in keep]
            chosen[split] = rows
        selected[loc] = chosen
        counts[loc] = {
            "available": {s: len(splits[s]) for s in SPLITS},
            "dev": len(chosen["dev"]),
            "test": len(chosen["test"]),
            "train_stored": len(chosen["train"]),
            "subsets": {name: len(subsets[name][loc]) for name in train_sizes},
        }

    manifest = {
        "format": _FORMAT,
        "source": str(source),
        "source_files_sha256": source_files(source, locales),
        "locales": list(locales),
        "train_sizes": dict(train_sizes),
        "eval_per_locale": {s: eval_per_locale.get(s) for s in ("dev", "test")},
        "seed": seed,
        **({"allow_partial": True} if allow_partial else {}),  # absent by default: older manifests stay identical
        "n_labels": len(labels),
        "counts": counts,
    }
    with atomic_dir(out_dir) as tmp:
        labels.save(tmp / "labels.json")
        with open(tmp / "examples.jsonl.gz", "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            for loc in locales:
                for split in SPLITS:
                    for ex in selected[loc][split]:
                        row = {"id": ex.id, "locale": ex.locale, "split": ex.split, "intent": ex.intent,
                               "utt": ex.utt, "label": labels.id(ex.intent)}
                        gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            gz.close()
            raw.flush()
            os.fsync(raw.fileno())
        write_json(tmp / "subsets.json", subsets)
        write_json(tmp / "manifest.json", manifest)  # last: its presence marks a complete folder
    return manifest


class PreparedData:
    """The output of prepare_dataset, read back."""

    def __init__(self, out_dir: Path, labels: LabelVocab, manifest: dict, subsets: dict[str, dict[str, list[str]]],
                 rows: list[Example]):
        self.out_dir = out_dir
        self.labels = labels
        self.manifest = manifest
        self.subsets = subsets
        self.locales: tuple[str, ...] = tuple(manifest["locales"])
        self._rows = rows
        self._by_split: dict[tuple[str, str], list[Example]] = defaultdict(list)
        self._train: dict[tuple[str, str], Example] = {}
        for ex in rows:
            self._by_split[(ex.locale, ex.split)].append(ex)
            if ex.split == "train":
                self._train[(ex.locale, ex.id)] = ex

    def _locales(self, locales: Sequence[str] | str) -> tuple[str, ...]:
        locs = resolve_language_set(locales if isinstance(locales, str) else tuple(locales))
        missing = [loc for loc in locs if loc not in self.locales]
        if missing:
            raise DataError(
                f"locale(s) {', '.join(missing)} are not in the prepared data {self.out_dir} "
                f"(it has {', '.join(self.locales)}); re-run `mkd prepare` with them"
            )
        return locs

    def train(self, locales: Sequence[str] | str, subset: str) -> list[Example]:
        if subset not in self.subsets:
            raise DataError(f"no train subset {subset!r} in {self.out_dir}; available: {', '.join(self.subsets)}")
        out = []
        for loc in self._locales(locales):
            out.extend(self._train[(loc, i)] for i in self.subsets[subset][loc])
        return out

    def split(self, locales: Sequence[str] | str, split: str) -> list[Example]:
        if split not in ("dev", "test"):
            raise DataError(f"split must be 'dev' or 'test', not {split!r} (use .train() for training rows)")
        out = []
        for loc in self._locales(locales):
            out.extend(self._by_split[(loc, split)])
        return out

    def texts(self) -> list[str]:
        return [ex.utt for ex in self._rows]


def load_prepared(out_dir: str | os.PathLike) -> PreparedData:
    out_dir = Path(out_dir)
    fix = f"re-run `mkd prepare` to rebuild {out_dir}"
    missing = [f for f in _PREPARED_FILES if not (out_dir / f).is_file()]
    if missing:
        raise DataError(f"prepared data at {out_dir} is missing or incomplete (no {', '.join(missing)}); {fix}")
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
        subsets = json.loads((out_dir / "subsets.json").read_text(encoding="utf-8"))
        if manifest.get("format") != _FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {_FORMAT}")
        labels = LabelVocab.load(out_dir / "labels.json")
        rows = []
        with gzip.open(out_dir / "examples.jsonl.gz", "rb") as fh:
            for line in fh:
                d = json.loads(line)
                ex = Example(str(d["id"]), d["locale"], d["split"], d["intent"], d["utt"])
                if labels.id(ex.intent) != d["label"]:
                    raise ValueError(f"label id of row {ex.locale}/{ex.split}/{ex.id} does not match labels.json")
                rows.append(ex)
        train_ids = {(ex.locale, ex.id) for ex in rows if ex.split == "train"}
        for name, per_loc in subsets.items():
            for loc in manifest["locales"]:
                for i in per_loc[loc]:
                    if (loc, i) not in train_ids:
                        raise ValueError(f"subset {name!r} names train row {loc}/{i} that is not stored")
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, zlib.error) as exc:
        raise DataError(f"prepared data at {out_dir} is corrupt ({type(exc).__name__}: {exc}); {fix}") from None
    return PreparedData(out_dir, labels, manifest, subsets, rows)
