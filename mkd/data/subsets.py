"""Seeds, and the nested, intent-stratified low-resource train subsets."""

from __future__ import annotations

import math
import random
import zlib
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

from mkd.core.errors import DataError

from .schema import Example


def seed_for(*parts: Any) -> int:
    """A seed from parts, stable across processes and platforms (crc32, never Python's salted hash())."""
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode("utf-8"))


def _id_key(ex: Example) -> tuple[int, int, str]:
    return (0, int(ex.id), ex.id) if ex.id.isdigit() else (1, 0, ex.id)


def stratified_order(rows: Sequence[Example], seed: int) -> list[Example]:
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
        order = stratified_order(rows, seed_for(seed, locale))
        for name, size in sizes.items():
            out[name].extend(order[: _size_count(name, size, len(order), locale)])
    return out
