"""mkd.data on the real MASSIVE 1.1 copy: reading, sources, errors, subsets, prepared data."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest

import mkd.data.prepared as prepared
import mkd.data.source as source
from mkd.data import (
    ALL_LOCALES,
    LANGUAGE_SETS,
    MASSIVE_INTENTS,
    Example,
    LabelVocab,
    load_locale,
    load_massive,
    load_prepared,
    nested_subsets,
    prepare_dataset,
    resolve_language_set,
    resolve_source,
    seed_for,
    verify_checksums,
)
from mkd.core.errors import DataError

SMOKE = ("en-US", "de-DE", "sw-KE")


@pytest.fixture(scope="module")
def smoke(massive_dir):
    return load_massive(massive_dir, SMOKE)


@pytest.fixture(scope="module")
def stats(massive_dir):
    return json.loads((massive_dir / "STATS.json").read_text())


def _lines(massive_dir: Path, locale: str) -> list[str]:
    with gzip.open(massive_dir / f"{locale}.jsonl.gz", "rt", encoding="utf-8") as fh:
        return fh.read().splitlines()


def _write_plain(folder: Path, locale: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{locale}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _official_line(line: str) -> str:
    """A row in the official tarball's shape: same fields plus the ones the offline copy dropped."""
    row = json.loads(line)
    row.update(annot_utt=row["utt"], worker_id="7", slot_method=[], judgments=[])
    return json.dumps(row, ensure_ascii=False)


def _make_tarball(massive_dir: Path, path: Path, locales, prefix: str = "1.1/data") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in (("1.1/LICENSE", "CC BY 4.0\n"),):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
        for loc in locales:
            body = ("\n".join(_official_line(x) for x in _lines(massive_dir, loc)) + "\n").encode("utf-8")
            info = tarfile.TarInfo(f"{prefix}/{loc}.jsonl")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


# ------------------------------------------------------------------------------------ language sets

def test_all_locales_are_the_files_of_massive(massive_dir):
    on_disk = sorted(p.name[: -len(".jsonl.gz")] for p in massive_dir.glob("*.jsonl.gz"))
    assert list(ALL_LOCALES) == on_disk and len(ALL_LOCALES) == 52
    assert list(ALL_LOCALES) == sorted(ALL_LOCALES)


def test_language_sets():
    assert resolve_language_set("all") == ALL_LOCALES
    assert resolve_language_set("en") == ("en-US",)
    assert resolve_language_set("smoke") == SMOKE
    assert len(resolve_language_set("cpu8")) == 8 and set(LANGUAGE_SETS["cpu8"]) <= set(ALL_LOCALES)
    assert resolve_language_set(["sw-KE", "en-US"]) == ("sw-KE", "en-US")


def test_unknown_language_set_and_locale():
    with pytest.raises(DataError) as e:
        resolve_language_set("cpu9")
    assert "cpu8" in str(e.value) and "smoke" in str(e.value)
    with pytest.raises(DataError) as e:
        resolve_language_set(["en-US", "de-De"])
    msg = str(e.value)
    assert "'de-De'" in msg and "Did you mean 'de-DE'" in msg and "zh-TW" in msg and "af-ZA" in msg
    with pytest.raises(DataError):
        load_locale(Path("."), "xx-XX")


# ------------------------------------------------------------------------------------------ reading

def test_counts_match_stats(smoke, stats):
    for loc in SMOKE:
        for split in ("train", "dev", "test"):
            assert len(smoke[loc][split]) == stats[loc][split]
        assert len({ex.intent for rows in smoke[loc].values() for ex in rows}) == stats[loc]["n_intents"] == 60
    ex = smoke["de-DE"]["train"][0]
    assert isinstance(ex, Example) and ex.locale == "de-DE" and ex.split == "train" and ex.utt


def test_same_ids_and_labels_across_locales(smoke):
    for split in ("train", "dev", "test"):
        ref = {ex.id: ex.intent for ex in smoke["en-US"][split]}
        for loc in SMOKE[1:]:
            assert {ex.id: ex.intent for ex in smoke[loc][split]} == ref


def test_split_selection(massive_dir):
    only = load_locale(massive_dir, "sw-KE", splits=("dev",))
    assert list(only) == ["dev"] and len(only["dev"]) == 2033


def test_tarball_gives_the_same_examples(massive_dir, smoke, tmp_path):
    tar = _make_tarball(massive_dir, tmp_path / "amazon-massive-dataset-1.1.tar.gz", ["de-DE", "en-US"])
    assert load_locale(tar, "en-US") == smoke["en-US"]
    both = load_massive(tar, ["en-US", "de-DE"])
    assert list(both) == ["en-US", "de-DE"]
    assert both["de-DE"] == smoke["de-DE"] and both["en-US"] == smoke["en-US"]
    with pytest.raises(DataError, match="sw-KE"):
        load_locale(tar, "sw-KE")


def test_a_second_read_comes_from_the_arrow_cache_and_new_bytes_are_read_and_checked(massive_dir, smoke, tmp_path, monkeypatch, caplog):
    """load_massive keeps each locale read whole as a `datasets` Arrow folder named by the SHA-256 of its file;
    the next read of the same bytes parses nothing, edited bytes are parsed and checked again."""
    import mkd.data.reader as reader
    from mkd.data import arrow_cache

    monkeypatch.setenv("MKD_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "massive"
    folder.mkdir()
    for loc in ("en-US", "sw-KE"):
        shutil.copy(massive_dir / f"{loc}.jsonl.gz", folder)
    assert load_massive(folder, ["en-US", "sw-KE"]) == {loc: smoke[loc] for loc in ("en-US", "sw-KE")}
    entries = sorted(p.name for p in (arrow_cache.cache_dir() / "massive-arrow-1").iterdir())
    digest = hashlib.sha256((folder / "en-US.jsonl.gz").read_bytes()).hexdigest()
    assert entries[0] == f"en-US-{digest[:32]}" and entries[1].startswith("sw-KE-") and len(entries) == 2

    real_parse = reader._parse_blob
    parsed = []
    monkeypatch.setattr(reader, "_parse_blob", lambda blob, name, *a: parsed.append(name) or real_parse(blob, name, *a))
    warm = load_massive(folder, ["sw-KE", "en-US"])
    assert parsed == [] and list(warm) == ["sw-KE", "en-US"] and warm["sw-KE"] == smoke["sw-KE"]
    assert load_massive(folder, ["en-US"], ("dev",))["en-US"] == {"dev": smoke["en-US"]["dev"]}
    assert parsed == [str(folder / "en-US.jsonl.gz")]  # a subset of the splits: read, not cached
    parsed.clear()

    # an edited file: other bytes, another entry; its fault is found as on a first read
    lines = _lines(massive_dir, "sw-KE")
    (folder / "sw-KE.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines[:5] + ["{oops"] + lines[5:]) + "\n").encode()))
    with pytest.raises(DataError, match=r"sw-KE.jsonl.gz, line 6: malformed JSON"):
        load_massive(folder, ["en-US", "sw-KE"])
    (folder / "sw-KE.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines[1:]) + "\n").encode()))
    edited = load_massive(folder, ["sw-KE"])["sw-KE"]  # the edited file's rows, not the cached ones
    assert sum(map(len, edited.values())) == sum(map(len, smoke["sw-KE"].values())) - 1
    assert parsed == [str(folder / "sw-KE.jsonl.gz")] * 2
    assert edited == load_locale(folder, "sw-KE")

    # a damaged entry is a miss: read again, replaced, and the result is the reader's
    parsed.clear()
    entry = arrow_cache.cache_dir() / "massive-arrow-1" / entries[0]
    for arrow in entry.glob("*.arrow"):
        arrow.write_bytes(b"not arrow")
    with caplog.at_level("WARNING"):
        assert load_massive(folder, ["en-US"])["en-US"] == smoke["en-US"]
    assert "ignoring unreadable MASSIVE cache" in caplog.text and parsed == [str(folder / "en-US.jsonl.gz")]
    parsed.clear()
    assert load_massive(folder, ["en-US"])["en-US"] == smoke["en-US"] and parsed == []


def test_a_full_cache_disk_costs_speed_not_the_read(massive_dir, smoke, tmp_path, monkeypatch, caplog):
    import errno

    import datasets

    from mkd.data import arrow_cache

    def no_room(self, path, *a, **k):
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setenv("MKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", no_room)
    with caplog.at_level("WARNING"):
        assert load_massive(massive_dir, ["sw-KE"])["sw-KE"] == smoke["sw-KE"]
    assert "could not cache MASSIVE rows" in caplog.text and "No space left on device" in caplog.text
    assert list((arrow_cache.cache_dir() / "massive-arrow-1").iterdir()) == []  # nothing half-written stays


def test_tarball_with_other_prefix(massive_dir, smoke, tmp_path):
    tar = _make_tarball(massive_dir, tmp_path / "m.tar.gz", ["sw-KE"], prefix="massive/1.1/data")
    assert load_locale(tar, "sw-KE", ("test",))["test"] == smoke["sw-KE"]["test"]


def test_plain_jsonl_folder_and_official_layout(massive_dir, smoke, tmp_path):
    _write_plain(tmp_path / "plain", "en-US", _lines(massive_dir, "en-US"))
    assert load_locale(tmp_path / "plain", "en-US") == smoke["en-US"]
    # an extracted official tarball: <root>/1.1/data/<locale>.jsonl
    _write_plain(tmp_path / "extracted" / "1.1" / "data", "sw-KE", [_official_line(x) for x in _lines(massive_dir, "sw-KE")])
    assert load_locale(tmp_path / "extracted", "sw-KE") == smoke["sw-KE"]


def test_missing_locale_file(tmp_path):
    with pytest.raises(DataError, match="en-US.jsonl.gz"):
        load_locale(tmp_path, "en-US")


# ------------------------------------------------------------------------------------------ sources

def test_resolve_source(massive_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MKD_MASSIVE", raising=False)
    assert resolve_source(massive_dir) == massive_dir.resolve()
    with pytest.raises(DataError) as e:
        resolve_source(tmp_path / "nowhere")
    assert "nowhere" in str(e.value) and "MKD_MASSIVE" in str(e.value) and "data.massive" in str(e.value)
    with pytest.raises(DataError, match="MKD_MASSIVE"):
        resolve_source(None)
    not_tar = tmp_path / "x.txt"
    not_tar.write_text("hello")
    with pytest.raises(DataError, match="not a tar"):
        resolve_source(not_tar)
    # the environment wins over the spec
    monkeypatch.setenv("MKD_MASSIVE", str(massive_dir))
    assert resolve_source(tmp_path / "nowhere") == massive_dir.resolve()
    monkeypatch.setenv("MKD_MASSIVE", str(tmp_path / "gone"))
    with pytest.raises(DataError, match="MKD_MASSIVE"):
        resolve_source(massive_dir)


def test_official_download_offline(massive_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MKD_MASSIVE", raising=False)
    tar = _make_tarball(massive_dir, tmp_path / "upstream.tar.gz", ["sw-KE"])
    digest = hashlib.sha256(tar.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    monkeypatch.setenv("MKD_CACHE", str(cache))
    monkeypatch.setattr(source, "OFFICIAL_URL", tar.resolve().as_uri())

    # wrong checksum: DataError naming both, and nothing left in the cache
    monkeypatch.setattr(source, "OFFICIAL_SHA256", "0" * 64)
    with pytest.raises(DataError) as e:
        resolve_source("official")
    assert "0" * 64 in str(e.value) and digest in str(e.value)
    assert not cache.exists() or list(cache.iterdir()) == []

    monkeypatch.setattr(source, "OFFICIAL_SHA256", digest)
    got = resolve_source("official")
    assert got == cache / source.OFFICIAL_FILENAME and got.read_bytes() == tar.read_bytes()
    assert [p.name for p in cache.iterdir()] == [source.OFFICIAL_FILENAME]
    assert len(load_locale(got, "sw-KE", ("dev",))["dev"]) == 2033

    # cached: no second fetch
    real_fetch = source._fetch

    def no_fetch(url, dest):
        raise AssertionError("fetched again")

    monkeypatch.setattr(source, "_fetch", no_fetch)
    assert resolve_source("official") == got

    # an unreachable URL is a DataError too
    monkeypatch.setattr(source, "_fetch", real_fetch)
    monkeypatch.setattr(source, "OFFICIAL_URL", (tmp_path / "absent.tar.gz").as_uri())
    with pytest.raises(DataError, match="could not download"):
        source.download_official(cache_dir=tmp_path / "cache2")
    assert not (tmp_path / "cache2" / source.OFFICIAL_FILENAME).exists()


class _Upstream:
    """A localhost HTTP server standing in for the release's URL: serves `body`, or cuts it off halfway."""

    def __init__(self, body: bytes):
        import http.server
        import threading

        self.body, self.cut, self.requests = body, False, 0
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                upstream.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(upstream.body)))
                self.end_headers()
                self.wfile.write(upstream.body[: len(upstream.body) // 2] if upstream.cut else upstream.body)
                if upstream.cut:
                    self.wfile.flush()
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/amazon-massive-dataset-1.1.tar.gz"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_auto_uses_the_shared_copy_else_downloads_the_release_once_over_http(massive_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MKD_MASSIVE", raising=False)
    tar = _make_tarball(massive_dir, tmp_path / "upstream.tar.gz", ["sw-KE"])
    good = tar.read_bytes()
    cache = tmp_path / "cache"
    monkeypatch.setenv("MKD_CACHE", str(cache))
    monkeypatch.setattr(source, "OFFICIAL_SHA256", hashlib.sha256(good).hexdigest())
    # a checkout with ../shared/massive beside it: auto takes that copy, downloads nothing
    (tmp_path / "shared" / "massive").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert resolve_source("auto") == (tmp_path / "shared" / "massive").resolve()
    # a fresh machine: no ../shared, so auto fetches the release
    (tmp_path / "shared" / "massive").rmdir()
    upstream = _Upstream(good[:1000] + bytes([good[1000] ^ 1]) + good[1001:])  # corrupt in transit
    monkeypatch.setattr(source, "OFFICIAL_URL", upstream.url)
    try:
        with pytest.raises(DataError, match="checksum mismatch"):
            resolve_source("auto")
        assert not cache.exists() or list(cache.iterdir()) == [], "nothing half-written is kept"
        upstream.body, upstream.cut = good, True  # the connection drops halfway through
        with pytest.raises(DataError, match="could not download MASSIVE 1.1"):
            resolve_source("auto")
        assert not cache.exists() or list(cache.iterdir()) == []
        upstream.cut = False  # a retry that works
        got = resolve_source("auto")
        assert got == cache / source.OFFICIAL_FILENAME and got.read_bytes() == good
        assert len(load_locale(got, "sw-KE", ("test",))["test"]) == 2974
        requests = upstream.requests
        assert resolve_source("auto") == got and upstream.requests == requests  # cached: fetched once
    finally:
        upstream.close()


def test_official_checksum_constant_is_a_sha256():
    assert source.OFFICIAL_SHA256 is None or (len(source.OFFICIAL_SHA256) == 64 and int(source.OFFICIAL_SHA256, 16) >= 0)


# ------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda row: "{bad json", "malformed JSON"),
        (lambda row: json.dumps({k: v for k, v in row.items() if k != "intent"}), "missing field"),
        (lambda row: json.dumps({**row, "utt": 42}), "'utt' must be a string"),
        (lambda row: json.dumps({**row, "utt": "   "}), "empty utt"),
        (lambda row: json.dumps({**row, "locale": "de-DE"}), "locale field"),
        (lambda row: json.dumps({**row, "partition": "validation"}), "unknown partition"),
        (lambda row: json.dumps([row]), "JSON object"),
    ],
)
def test_malformed_line_names_file_and_line(massive_dir, tmp_path, edit, expected):
    lines = _lines(massive_dir, "en-US")[:300]
    lines[4] = edit(json.loads(lines[4]))
    path = _write_plain(tmp_path, "en-US", lines)
    with pytest.raises(DataError) as e:
        load_locale(tmp_path, "en-US")
    msg = str(e.value)
    assert str(path) in msg and "line 5" in msg and expected in msg


def test_malformed_line_in_gz_and_invalid_utf8(massive_dir, tmp_path):
    lines = [x.encode() for x in _lines(massive_dir, "en-US")[:100]]
    lines[9] = b'{"id": "\xff\xfe"}'
    path = tmp_path / "en-US.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    with pytest.raises(DataError, match=r"en-US\.jsonl\.gz, line 10: not valid UTF-8"):
        load_locale(tmp_path, "en-US")


def test_truncated_gz(massive_dir, tmp_path):
    blob = (massive_dir / "en-US.jsonl.gz").read_bytes()
    (tmp_path / "en-US.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as e:
        load_locale(tmp_path, "en-US")
    assert "en-US.jsonl.gz" in str(e.value) and "truncated" in str(e.value)


def test_truncated_tarball(massive_dir, tmp_path):
    tar = _make_tarball(massive_dir, tmp_path / "t.tar.gz", ["en-US"])
    blob = tar.read_bytes()
    tar.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_locale(tar, "en-US")


def test_missing_split(massive_dir, tmp_path):
    lines = [x for x in _lines(massive_dir, "en-US") if json.loads(x)["partition"] != "dev"]
    _write_plain(tmp_path, "en-US", lines)
    assert len(load_locale(tmp_path, "en-US", ("train",))["train"]) == 11514
    with pytest.raises(DataError, match="no rows of split 'dev'"):
        load_locale(tmp_path, "en-US")


def test_duplicate_id_in_a_split(massive_dir, tmp_path):
    lines = _lines(massive_dir, "en-US")[:50]
    _write_plain(tmp_path, "en-US", lines + [lines[0]])
    with pytest.raises(DataError, match="line 51: duplicate id"):
        load_locale(tmp_path, "en-US", ("test",))


def test_the_same_id_in_train_and_test_is_refused(massive_dir, tmp_path):
    lines = _lines(massive_dir, "en-US")
    train = next(x for x in lines if json.loads(x)["partition"] == "train")
    test_row = {**json.loads(train), "partition": "test"}
    _write_plain(tmp_path, "en-US", lines + [json.dumps(test_row, ensure_ascii=False)])
    with pytest.raises(DataError, match="trained on and tested on"):
        load_locale(tmp_path, "en-US")


def test_a_byte_order_mark_is_read_past(massive_dir, smoke, tmp_path):
    path = _write_plain(tmp_path, "en-US", _lines(massive_dir, "en-US"))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_locale(tmp_path, "en-US") == smoke["en-US"]


def test_two_copies_of_a_locale_are_refused_not_chosen_between(massive_dir, tmp_path):
    shutil.copy(massive_dir / "en-US.jsonl.gz", tmp_path / "en-US.jsonl.gz")
    _write_plain(tmp_path, "en-US", _lines(massive_dir, "en-US")[:100])
    with pytest.raises(DataError, match="two copies of locale 'en-US'"):
        load_locale(tmp_path, "en-US")


def test_label_vocab(smoke, tmp_path):
    vocab = LabelVocab.from_examples(ex for rows in smoke["en-US"].values() for ex in rows)
    assert len(vocab) == 60 and vocab.intents == MASSIVE_INTENTS
    assert [vocab.id(i) for i in vocab.intents] == list(range(60)) and vocab.intent(vocab.id("alarm_set")) == "alarm_set"
    with pytest.raises(DataError) as e:
        vocab.id("alarm_sett")
    assert "alarm_sett" in str(e.value) and "alarm_set" in str(e.value) and "mkd prepare" in str(e.value)
    vocab.save(tmp_path / "labels.json")
    assert LabelVocab.load(tmp_path / "labels.json") == vocab
    (tmp_path / "bad.json").write_text('{"intents": 3}')
    with pytest.raises(DataError, match="bad.json"):
        LabelVocab.load(tmp_path / "bad.json")


def test_checksum_mismatch(massive_dir, tmp_path):
    for name in ("SHA256SUMS", "en-US.jsonl.gz", "de-DE.jsonl.gz"):
        shutil.copy(massive_dir / name, tmp_path / name)
    verify_checksums(tmp_path, ["en-US", "de-DE"])  # intact copies pass; other locales are not asked for
    with pytest.raises(DataError, match="missing"):
        verify_checksums(tmp_path)  # every listed file: sw-KE etc. are not here
    blob = bytearray((tmp_path / "de-DE.jsonl.gz").read_bytes())
    blob[1000] ^= 0x01
    (tmp_path / "de-DE.jsonl.gz").write_bytes(bytes(blob))
    expected = next(line.split()[0] for line in (massive_dir / "SHA256SUMS").read_text().splitlines() if "de-DE" in line)
    actual = hashlib.sha256(bytes(blob)).hexdigest()
    verify_checksums(tmp_path, ["en-US"])
    with pytest.raises(DataError) as e:
        verify_checksums(tmp_path, ["en-US", "de-DE"])
    msg = str(e.value)
    assert "de-DE.jsonl.gz" in msg and expected in msg and actual in msg
    with pytest.raises(DataError, match="checksum mismatch"):
        prepare_dataset(tmp_path, ["de-DE"], {"all": 1.0}, 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_real_copy_passes_its_checksums(massive_dir):
    verify_checksums(massive_dir, SMOKE)


def test_locale_with_missing_intents(massive_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(massive_dir / "de-DE.jsonl.gz", src / "de-DE.jsonl.gz")
    lines = [x for x in _lines(massive_dir, "en-US") if json.loads(x)["intent"] not in ("qa_stock", "iot_coffee")]
    _write_plain(src, "en-US", lines)
    with pytest.raises(DataError) as e:
        prepare_dataset(src, ["de-DE", "en-US"], {"low": 100}, 0, tmp_path / "out")
    msg = str(e.value)
    assert "en-US" in msg and "iot_coffee" in msg and "qa_stock" in msg and "de-DE lacks" not in msg
    assert not (tmp_path / "out").exists()


def test_a_locale_cut_at_a_line_boundary_is_refused_unless_a_subset_is_asked_for(massive_dir, tmp_path):
    # No SHA256SUMS beside the files and every intent still present: only the row counts tell it is partial.
    src = tmp_path / "src"
    lines = _lines(massive_dir, "en-US")
    _write_plain(src, "en-US", lines[:9074 + 2033 + 2974])  # the file's first rows, cut between two lines
    with pytest.raises(DataError) as e:
        prepare_dataset(src, ["en-US"], {"low": 100}, 0, tmp_path / "out")
    msg = str(e.value)
    assert "not the whole MASSIVE 1.1" in msg and "en-US" in msg and "data.allow_partial" in msg
    assert not (tmp_path / "out").exists()
    manifest = prepare_dataset(src, ["en-US"], {"low": 100}, 0, tmp_path / "out", allow_partial=True)
    assert manifest["allow_partial"] is True
    assert sum(manifest["counts"]["en-US"]["available"].values()) == 9074 + 2033 + 2974


# ------------------------------------------------------------------------------------------ subsets

def test_seed_for_is_stable_across_processes():
    code = "from mkd.data import seed_for; print(seed_for(13, 'en-US', 2))"
    outs = {
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": h},
                       capture_output=True, text=True, check=True).stdout.strip()
        for h in ("1", "2")
    }
    assert outs == {str(seed_for(13, "en-US", 2))}
    assert seed_for(1, 2) != seed_for(12) and seed_for(0) != seed_for(1)


def test_nested_subsets(smoke):
    train = smoke["en-US"]["train"] + smoke["sw-KE"]["train"]
    sizes = {"tiny": 60, "low": 600, "frac": 0.25, "high": 1.0}
    subs = nested_subsets(train, sizes, seed=0)
    per_loc = {name: Counter(ex.locale for ex in rows) for name, rows in subs.items()}
    assert per_loc["tiny"] == {"en-US": 60, "sw-KE": 60}
    assert per_loc["low"] == {"en-US": 600, "sw-KE": 600}
    assert per_loc["frac"] == {"en-US": round(0.25 * 11514), "sw-KE": round(0.25 * 11514)}
    assert sorted(e.id for e in subs["high"] if e.locale == "en-US") == sorted(e.id for e in smoke["en-US"]["train"])
    keys = {name: {(e.locale, e.id) for e in rows} for name, rows in subs.items()}
    assert all(len(keys[n]) == len(subs[n]) for n in subs)  # no repeats
    assert keys["tiny"] < keys["low"] < keys["frac"] < keys["high"]  # nested

    # stratified: every intent as soon as there are 60 rows; shares close to the full train split
    for loc in ("en-US", "sw-KE"):
        assert len({e.intent for e in subs["tiny"] if e.locale == loc}) == 60
    full = Counter(e.intent for e in smoke["en-US"]["train"])
    low = Counter(e.intent for e in subs["low"] if e.locale == "en-US")
    frac = Counter(e.intent for e in subs["frac"] if e.locale == "en-US")
    for intent, n in full.items():
        assert abs(low[intent] - 600 * n / 11514) <= 2
        assert abs(frac[intent] - 0.25 * n) <= 2

    # seeded, independent of the input order, different with another seed
    again = nested_subsets(list(reversed(train)), sizes, seed=0)
    assert {n: {(e.locale, e.id) for e in r} for n, r in again.items()} == keys
    other = nested_subsets(train, sizes, seed=1)
    assert {(e.locale, e.id) for e in other["low"]} != keys["low"]
    # per-locale orderings differ (seed derived from (seed, locale))
    assert [e.id for e in subs["low"] if e.locale == "en-US"] != [e.id for e in subs["low"] if e.locale == "sw-KE"]


def test_nested_subsets_sizes_not_monotone_and_errors(smoke):
    train = smoke["de-DE"]["train"]
    subs = nested_subsets(train, {"big": 500, "small": 50}, seed=3)
    assert {e.id for e in subs["small"]} < {e.id for e in subs["big"]}
    with pytest.raises(DataError, match="11514"):
        nested_subsets(train, {"huge": 11515}, seed=0)
    for bad in (0, -1, 1.5, 0.0, "10", True):
        with pytest.raises(DataError):
            nested_subsets(train, {"x": bad}, seed=0)


# ------------------------------------------------------------------------------------------ prepare

def test_prepare_and_load_round_trip(massive_dir, tmp_path):
    out = tmp_path / "prepared"
    manifest = prepare_dataset(massive_dir, ["en-US", "sw-KE"], {"low": 120, "high": 1.0}, 7, out, {"dev": 300, "test": None})
    assert sorted(p.name for p in out.iterdir()) == ["examples.jsonl.gz", "labels.json", "manifest.json", "subsets.json"]
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["locales"] == ["en-US", "sw-KE"]
    assert manifest["counts"]["sw-KE"]["subsets"] == {"low": 120, "high": 11514}
    assert manifest["counts"]["en-US"]["dev"] == 300 and manifest["counts"]["en-US"]["test"] == 2974
    sums = dict(line.split()[::-1] for line in (massive_dir / "SHA256SUMS").read_text().splitlines())
    assert manifest["source_files_sha256"] == {f"{loc}.jsonl.gz": sums[f"{loc}.jsonl.gz"] for loc in ("en-US", "sw-KE")}

    prep = load_prepared(out)
    assert len(prep.labels) == 60 and prep.labels.intents == MASSIVE_INTENTS
    low = prep.train(["sw-KE", "en-US"], "low")
    assert len(low) == 240 and [e.locale for e in low] == ["sw-KE"] * 120 + ["en-US"] * 120
    assert low == prep.train(["sw-KE", "en-US"], "low")
    expected = nested_subsets(load_locale(massive_dir, "en-US", ("train",))["train"], {"low": 120}, 7)["low"]
    assert prep.train(["en-US"], "low") == expected
    assert {e.id for e in prep.train("en-US", "low")} < {e.id for e in prep.train("en-US", "high")}
    dev_en, dev_sw = prep.split(["en-US"], "dev"), prep.split(["sw-KE"], "dev")
    assert len(dev_en) == 300 and [e.id for e in dev_en] == [e.id for e in dev_sw]  # parallel ids
    # stratified cap: every intent of the full dev split (en-US dev has 59: no audio_volume_other)
    full_dev = load_locale(massive_dir, "en-US", ("dev",))["dev"]
    assert {e.intent for e in dev_en} == {e.intent for e in full_dev}
    assert len(prep.split(["en-US", "sw-KE"], "test")) == 2 * 2974
    assert len(prep.texts()) == 2 * (11514 + 300 + 2974)
    with pytest.raises(DataError, match="de-DE"):
        prep.train(["de-DE"], "low")
    with pytest.raises(DataError, match="available: high, low"):
        prep.train(["en-US"], "mid")

    # same inputs, same bytes
    prepare_dataset(massive_dir, ["en-US", "sw-KE"], {"low": 120, "high": 1.0}, 7, tmp_path / "again", {"dev": 300, "test": None})
    for name in ("examples.jsonl.gz", "subsets.json", "labels.json"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_each_grid_seed_draws_its_own_nested_rows_and_seed_0_draws_the_fixed_ones(massive_dir, tmp_path):
    """Seeds re-draw the training rows: two seeds' subsets differ, each stays nested (low inside high) and
    stratified (every intent in low, 1 row each at 60), while the teacher's fixed rows and the evaluation rows
    (the main folder) are one for all; seed s draws with data.seed + s, so seed 0 draws the fixed rows."""
    from mkd.data import draw_seed, prepare_draws, read_massive

    locales, sizes = ["en-US", "sw-KE"], {"low": 60, "high": 600}
    massive = read_massive(massive_dir, locales)
    prepare_dataset(None, locales, sizes, 0, tmp_path / "data", {"dev": 30, "test": 30}, massive=massive)
    fixed = load_prepared(tmp_path / "data")
    manifests = prepare_draws(massive, locales, sizes, {s: draw_seed(0, s, True) for s in (0, 1, 2)}, tmp_path / "draws")
    assert sorted(manifests) == [0, 1, 2] and manifests[2]["seed"] == 2
    draws = {s: load_prepared(tmp_path / "draws" / f"s{s}") for s in (0, 1, 2)}
    ids = {(s, res, loc): [e.id for e in d.train([loc], res)] for s, d in draws.items() for res in sizes for loc in locales}
    for s in (0, 1, 2):
        for loc in locales:
            low, high = ids[s, "low", loc], ids[s, "high", loc]
            assert len(low) == 60 and len(high) == 600 and set(low) < set(high)
            assert len({e.intent for e in draws[s].train([loc], "low")}) == 60   # 1 row per intent
    for a, b in ((0, 1), (0, 2), (1, 2)):
        for loc in locales:
            assert len(set(ids[a, "high", loc]) & set(ids[b, "high", loc])) < 200   # ~600 * 600 / 11,514 = 31 expected
            assert ids[a, "low", loc] != ids[b, "low", loc]
    assert all(fixed.train([loc], res) == draws[0].train([loc], res) for loc in locales for res in sizes)
    assert draws[1].split(locales, "dev") == [] and len(fixed.split(locales, "dev")) == 60   # evaluation rows: main folder only

    # data.draw_per_seed false: every seed trains on data.seed's rows, as before seeds re-drew them
    prepare_draws(massive, locales, sizes, {s: draw_seed(0, s, False) for s in (0, 1)}, tmp_path / "same")
    same = [load_prepared(tmp_path / "same" / f"s{s}") for s in (0, 1)]
    assert same[0].train(locales, "high") == same[1].train(locales, "high") == fixed.train(locales, "high")


def test_model_selection_reads_more_dev_rows_where_a_set_has_few_locales(massive_dir, tmp_path):
    """selection_dev_rows: model selection on a set reads at least that many dev rows spread over its locales
    (split "selection"), the evaluation's rows among them; a locale keeps what its most demanding set needs and a
    larger set reads only its own share; split "dev" stays the capped evaluation rows, the same as without."""
    locales, caps = ["en-US", "sw-KE"], {"dev": 30, "test": 30}
    prepare_dataset(massive_dir, locales, {"low": 60}, 0, tmp_path / "plain", caps)
    plain = load_prepared(tmp_path / "plain")
    manifest = prepare_dataset(massive_dir, locales, {"low": 60}, 0, tmp_path / "more", caps,
                               selection_dev_rows=240, selection_sets=[("en-US",), ("en-US", "sw-KE")])
    more = load_prepared(tmp_path / "more")
    assert more.split(locales, "dev") == plain.split(locales, "dev")
    assert more.split(locales, "test") == plain.split(locales, "test")
    alone = more.split(["en-US"], "selection")                            # one locale: all 240 of its rows
    assert len(alone) == 240 and {e.id for e in plain.split(["en-US"], "dev")} < {e.id for e in alone}
    assert len({e.intent for e in alone}) == 59                           # stratified: en-US dev has 59 intents
    both = more.split(locales, "selection")                               # two locales: 120 each
    assert [sum(e.locale == loc for e in both) for loc in locales] == [120, 120]
    assert {e.id for e in plain.split(["sw-KE"], "dev")} < {e.id for e in both if e.locale == "sw-KE"}
    assert {e.id for e in both if e.locale == "en-US"} < {e.id for e in alone}
    assert plain.split(["en-US"], "selection") == plain.split(["en-US"], "dev")
    assert manifest["counts"]["en-US"]["dev"] == 30 and manifest["counts"]["en-US"]["selection_dev"] == 240
    assert manifest["counts"]["sw-KE"]["selection_dev"] == 120 and not (tmp_path / "plain" / "selection.json").exists()
    # a set whose share is within the cap selects on the evaluation's rows: nothing extra is kept
    prepare_dataset(massive_dir, locales, {"low": 60}, 0, tmp_path / "enough", caps,
                    selection_dev_rows=40, selection_sets=[tuple(locales)])
    assert not (tmp_path / "enough" / "selection.json").exists()
    assert load_prepared(tmp_path / "enough").split(locales, "selection") == plain.split(locales, "dev")


def test_prepare_failure_leaves_no_output(massive_dir, tmp_path, monkeypatch):
    real = prepared.write_json

    def failing(target, obj):
        if Path(target).name == "manifest.json":
            raise OSError("disk full")
        real(target, obj)

    monkeypatch.setattr(prepared, "write_json", failing)
    out = tmp_path / "prepared"
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(massive_dir, ["sw-KE"], {"low": 60}, 0, out)
    assert list(tmp_path.iterdir()) == []

    # an existing prepared folder stays as it was
    monkeypatch.setattr(prepared, "write_json", real)
    prepare_dataset(massive_dir, ["sw-KE"], {"low": 60}, 0, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(prepared, "write_json", failing)
    with pytest.raises(OSError):
        prepare_dataset(massive_dir, ["sw-KE"], {"low": 90}, 1, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


def test_load_prepared_missing_or_half_written(massive_dir, tmp_path):
    with pytest.raises(DataError, match="mkd prepare"):
        load_prepared(tmp_path / "nothing")
    out = tmp_path / "prepared"
    prepare_dataset(massive_dir, ["sw-KE"], {"low": 60}, 0, out)
    (out / "manifest.json").unlink()
    with pytest.raises(DataError, match="mkd prepare"):
        load_prepared(out)
    prepare_dataset(massive_dir, ["sw-KE"], {"low": 60}, 0, out)
    blob = (out / "examples.jsonl.gz").read_bytes()
    (out / "examples.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="mkd prepare"):
        load_prepared(out)


def test_prepare_rejects_bad_arguments(massive_dir, tmp_path):
    for kwargs in ({"train_sizes": {}}, {"train_sizes": {"x": 20000}}, {"eval_per_locale": {"train": 5}},
                   {"eval_per_locale": {"dev": 0}}, {"locales": ["en-GB"]}):
        args = {"source": massive_dir, "locales": ["sw-KE"], "train_sizes": {"low": 60}, "seed": 0,
                "out_dir": tmp_path / "out", **kwargs}
        with pytest.raises(DataError):
            prepare_dataset(**args)
        assert not (tmp_path / "out").exists()


def test_prepare_from_tarball(massive_dir, tmp_path):
    tar = _make_tarball(massive_dir, tmp_path / "amazon-massive-dataset-1.1.tar.gz", ["sw-KE"])
    manifest = prepare_dataset(tar, ["sw-KE"], {"low": 60}, 0, tmp_path / "out", {"dev": 100, "test": 100})
    assert manifest["source_files_sha256"] == {tar.name: hashlib.sha256(tar.read_bytes()).hexdigest()}
    prep = load_prepared(tmp_path / "out")
    assert len(prep.train("sw-KE", "low")) == 60 and len(prep.split("sw-KE", "test")) == 100


def test_a_mirror_named_by_environment_is_downloaded_and_must_name_its_checksum(massive_dir, tmp_path, monkeypatch):
    """MKD_MASSIVE_URL + MKD_MASSIVE_SHA256: a mirror of the release (CI serves one from localhost)."""
    monkeypatch.delenv("MKD_MASSIVE", raising=False)
    monkeypatch.setenv("MKD_CACHE", str(tmp_path / "cache"))
    good = _make_tarball(massive_dir, tmp_path / "mirror.tar.gz", ["sw-KE"]).read_bytes()
    upstream = _Upstream(good)
    try:
        monkeypatch.setenv("MKD_MASSIVE_URL", upstream.url)
        with pytest.raises(DataError, match="set MKD_MASSIVE_SHA256 to the 64-hex-digit SHA-256"):
            resolve_source("official")
        assert upstream.requests == 0, "nothing is fetched before the checksum is known"
        monkeypatch.setenv("MKD_MASSIVE_SHA256", hashlib.sha256(good).hexdigest().upper())
        got = resolve_source("official")
        assert got.read_bytes() == good and upstream.requests == 1
        from mkd.pipeline.stages.validate import source_fingerprint

        params = {"data": {"massive": "official", "language_sets": {}}, "grid": {"language_sets": ["en"]},
                  "teacher": {"language_set": "en"}}
        monkeypatch.setattr("mkd.pipeline.stages.validate.prepared_locales", lambda p: ["sw-KE"])
        assert source_fingerprint(params) == f"official release, sha256 {hashlib.sha256(good).hexdigest()}"
    finally:
        upstream.close()
