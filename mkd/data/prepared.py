"""`mkd prepare`: read and check the locales, select the subsets, write the prepared folder; and read it back."""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from mkd.core.atomic import atomic_dir, write_json
from mkd.core.errors import DataError

from .labels import LabelVocab
from .reader import load_massive
from .schema import MASSIVE_INTENTS, MASSIVE_SPLIT_SIZES, SPLITS, Example, resolve_language_set
from .source import download_official, source_files, verify_checksums
from .subsets import nested_subsets, seed_for, stratified_order

_FORMAT = 1
_PREPARED_FILES = ("labels.json", "examples.jsonl.gz", "subsets.json", "manifest.json")


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
                keep = {ex.id for ex in stratified_order(rows, seed_for(seed, split))[:cap]}
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
