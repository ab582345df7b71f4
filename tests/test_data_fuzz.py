"""Fuzzing the MASSIVE reader: whatever a line holds, load_locale raises DataError or reads it correctly."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mkd.data import load_locale
from mkd.core.errors import DataError

BASE = [
    {"id": "1", "locale": "sw-KE", "partition": "train", "scenario": "alarm", "intent": "alarm_set", "utt": "niamshe saa tisa"},
    {"id": "2", "locale": "sw-KE", "partition": "dev", "scenario": "alarm", "intent": "alarm_query", "utt": "kengele zangu ni zipi"},
    {"id": "3", "locale": "sw-KE", "partition": "test", "scenario": "weather", "intent": "weather_query", "utt": "hali ya hewa leo"},
]
BASE_LINES = [json.dumps(r, ensure_ascii=False).encode() for r in BASE]
FIELDS = ("id", "locale", "partition", "scenario", "intent", "utt")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@st.composite
def valid_rows(draw):
    return {
        "id": draw(st.text(min_size=1, max_size=6).filter(lambda s: s.strip()).map(lambda s: "fz" + s)),
        "locale": "sw-KE",
        "partition": draw(st.sampled_from(["train", "dev", "test"])),
        "scenario": "x",
        "intent": draw(st.text(min_size=1, max_size=12).filter(lambda s: s.strip())),
        "utt": draw(st.text(min_size=1, max_size=40).filter(lambda s: s.strip())),
    }


@st.composite
def broken_rows(draw):
    row = dict(draw(valid_rows()))
    action = draw(st.sampled_from(["replace", "drop", "extra"]))
    field = draw(st.sampled_from(FIELDS))
    if action == "replace":
        row[field] = draw(json_values)
    elif action == "drop":
        row.pop(field)
    else:
        row[draw(st.text(max_size=8))] = draw(json_values)
    return json.dumps(row, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@st.composite
def truncated_rows(draw):
    text = json.dumps(draw(valid_rows()), ensure_ascii=False).encode()
    return text[: draw(st.integers(0, max(0, len(text) - 1)))]


bad_lines = st.one_of(
    st.binary(max_size=120),
    json_values.map(lambda v: json.dumps(v).encode()),
    broken_rows(),
    truncated_rows(),
    st.text(max_size=60).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"[" * 5000, b'{"a":' * 3000, b'"\\ud800"', b"NaN", b"\x00", b"\xef\xbb\xbf{}"]),
)


def _check(lines: list[bytes], gz: bool, expect_row: dict | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        body = b"\n".join(lines) + b"\n"
        name = "sw-KE.jsonl.gz" if gz else "sw-KE.jsonl"
        (Path(tmp) / name).write_bytes(gzip.compress(body) if gz else body)
        try:
            got = load_locale(Path(tmp), "sw-KE")
        except DataError as exc:
            assert "sw-KE.jsonl" in str(exc)
            assert expect_row is None, f"a valid row was rejected: {exc}"
            return
        rows = [ex for split in got.values() for ex in split]
        assert all(isinstance(getattr(ex, f), str) and getattr(ex, f) for ex in rows for f in ("id", "intent", "utt"))
        assert all(ex.utt.strip() and ex.locale == "sw-KE" for ex in rows)
        if expect_row is not None:
            assert any(ex.id == expect_row["id"] and ex.utt == expect_row["utt"] for ex in got[expect_row["partition"]])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line=bad_lines, pos=st.integers(0, 3), gz=st.booleans())
def test_random_lines_raise_only_data_error(line, pos, gz):
    lines = list(BASE_LINES)
    lines.insert(pos, line)
    _check(lines, gz, None if _looks_valid(line) is None else _looks_valid(line))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=valid_rows(), pos=st.integers(0, 3), gz=st.booleans())
def test_valid_random_rows_are_read(row, pos, gz):
    lines = list(BASE_LINES)
    lines.insert(pos, json.dumps(row, ensure_ascii=False).encode())
    _check(lines, gz, row)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(1, 200), flip=st.one_of(st.none(), st.integers(0, 10_000)))
def test_corrupt_gzip_raises_only_data_error(cut, flip):
    blob = bytearray(gzip.compress(b"\n".join(BASE_LINES * 20)))
    if flip is not None:
        blob[flip % len(blob)] ^= 0xFF
    else:
        del blob[-cut:]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sw-KE.jsonl.gz").write_bytes(bytes(blob))
        try:
            load_locale(Path(tmp), "sw-KE")
        except DataError:
            pass


def _looks_valid(line: bytes) -> dict | None:
    """An independent oracle: the row when `line` is a complete valid MASSIVE row for sw-KE, else None."""
    try:
        row = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(row, dict) or not all(k in row for k in ("id", "locale", "partition", "intent", "utt")):
        return None
    if not all(isinstance(row[k], str) for k in ("id", "locale", "partition", "intent", "utt")):
        return None
    try:
        for k in ("id", "intent", "utt"):
            row[k].encode("utf-8")
    except UnicodeEncodeError:
        return None
    ok = (row["locale"] == "sw-KE" and row["partition"] in ("train", "dev", "test") and row["id"].strip()
          and row["intent"].strip() and row["utt"].strip() and row["id"] not in ("1", "2", "3"))
    return row if ok else None
