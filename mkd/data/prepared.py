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
# Where a locale keeps more dev rows for model selection than the evaluation cap: {"rows": selection_dev_rows,
# "eval": {locale: [ids]}, "selection": {locale: [ids, in stratified order]}}; absent when no locale does (the
# folder is then what it always was).
_SELECTION_FILE = "selection.json"


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


def _check_request(train_sizes: Mapping[str, int | float], seed) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"seed must be an int, not {seed!r}")
    if not train_sizes:
        raise DataError("train_sizes is empty; give at least one subset, e.g. {'high': 1.0}")
    for name in train_sizes:
        if not isinstance(name, str) or not name:
            raise DataError(f"subset names must be non-empty strings, not {name!r}")


def read_massive(source: str | os.PathLike, locales: Sequence[str] | str,
                 allow_partial: bool = False) -> tuple[Path, tuple[str, ...], dict[str, dict[str, list[Example]]]]:
    """(source folder, locales, {locale: {split: [Example]}}) read and checked: checksums, the 60 intents in every
    locale, the split sizes of MASSIVE 1.1 (unless `allow_partial`). `official` downloads the release first."""
    source = download_official() if str(source) == "official" else Path(source)
    locales = resolve_language_set(locales if isinstance(locales, str) else tuple(locales))
    verify_checksums(source, locales)
    data = load_massive(source, locales, SPLITS)
    _check_intents(data)
    if not allow_partial:
        _check_split_sizes(data, source)
    return source, locales, data


def _write_prepared(out_dir, labels: LabelVocab, locales: Sequence[str], selected: Mapping[str, Mapping[str, list[Example]]],
                    subsets: Mapping[str, Mapping[str, list[str]]], manifest: dict, extra: Mapping[str, Any] = {}) -> None:
    """A prepared folder, all at once or not at all: labels.json, examples.jsonl.gz (each selected row once, with
    its label id), subsets.json ({name: {locale: [ids]}}), manifest.json (last: it marks a complete folder)."""
    with atomic_dir(out_dir) as tmp:
        labels.save(tmp / "labels.json")
        with open(tmp / "examples.jsonl.gz", "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            for loc in locales:
                for split in SPLITS:
                    for ex in selected[loc].get(split, ()):
                        row = {"id": ex.id, "locale": ex.locale, "split": ex.split, "intent": ex.intent,
                               "utt": ex.utt, "label": labels.id(ex.intent)}
                        gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            gz.close()
            raw.flush()
            os.fsync(raw.fileno())
        write_json(tmp / "subsets.json", subsets)
        for name, content in extra.items():
            write_json(tmp / name, content)
        write_json(tmp / "manifest.json", manifest)


def _select_train(rows: list[Example], train_sizes: Mapping[str, int | float], seed: int, locale: str,
                  subsets: dict[str, dict[str, list[str]]]) -> list[Example]:
    """The locale's nested subsets of `rows` (seeded) into `subsets`; returns the rows any of them holds."""
    keep: set[str] = set()
    for name, chosen in nested_subsets(rows, train_sizes, seed).items():
        subsets[name][locale] = [ex.id for ex in chosen]
        keep.update(ex.id for ex in chosen)
    return [ex for ex in rows if ex.id in keep]


def prepare_dataset(source: str | os.PathLike, locales: Sequence[str] | str, train_sizes: Mapping[str, int | float],
                    seed: int, out_dir: str | os.PathLike,
                    eval_per_locale: Mapping[str, int | None] | None = None, allow_partial: bool = False,
                    massive: tuple | None = None, selection_dev_rows: int | None = None,
                    selection_sets: Sequence[Sequence[str]] = ()) -> dict:
    """Read the locales, check them, select nested train subsets and capped dev/test, write `out_dir` atomically.

    out_dir gets labels.json, examples.jsonl.gz (each selected row once, with its label id), subsets.json
    ({name: {locale: [ids]}}) and manifest.json, all at once or not at all. Returns the manifest.
    eval_per_locale: {"dev": n | None, "test": n | None}; a cap keeps a stratified seeded subset whose ids are
    the same in every locale (seed from (seed, split)), so per-locale scores stay comparable.
    allow_partial: accept locales with fewer rows than MASSIVE 1.1 has (else DataError naming them).
    massive: what `read_massive` returned, when the caller has read it already.
    selection_dev_rows, selection_sets: model selection on a language set (one of selection_sets) reads at least
    selection_dev_rows dev rows, spread evenly over its locales (`selection_per_locale`); where that is more than
    the dev cap (a set of one locale needs more than 30 rows to select on), the locale keeps the extra rows: the
    next ones of the same stratified order, so the evaluation's rows are among them. Split "selection" of the
    folder reads, for the locales asked, each locale's share of selection_dev_rows.
    """
    selection_rows = {loc: max(selection_per_locale(selection_dev_rows, ls) for ls in selection_sets if loc in ls)
                      for ls in selection_sets for loc in ls} if selection_dev_rows else {}
    _check_request(train_sizes, seed)
    eval_per_locale = dict(eval_per_locale or {})
    for split, cap in eval_per_locale.items():
        if split not in ("dev", "test"):
            raise DataError(f"eval_per_locale: unknown split {split!r}; use 'dev' and/or 'test'")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise DataError(f"eval_per_locale[{split!r}] must be a positive int or None, not {cap!r}")
    source, locales, data = massive or read_massive(source, locales, allow_partial)
    labels = LabelVocab(MASSIVE_INTENTS)

    subsets: dict[str, dict[str, list[str]]] = {name: {} for name in train_sizes}
    selected: dict[str, dict[str, list[Example]]] = {}
    counts: dict[str, dict[str, Any]] = {}
    selection: dict[str, Any] = {"rows": selection_dev_rows, "eval": {}, "selection": {}}
    for loc in locales:
        splits = data[loc]
        chosen = {"train": _select_train(splits["train"], train_sizes, seed, loc, subsets)}
        for split in ("dev", "test"):
            rows = splits[split]
            cap = eval_per_locale.get(split)
            if cap is not None and cap < len(rows):
                order = stratified_order(rows, seed_for(seed, split))
                keep = {ex.id for ex in order[:cap]}
                more = selection_rows.get(loc, 0) if split == "dev" else 0
                if more > cap:
                    selection["eval"][loc] = [ex.id for ex in rows if ex.id in keep]
                    selection["selection"][loc] = [ex.id for ex in order[:more]]
                    keep = set(selection["selection"][loc])
                rows = [ex for ex in rows if ex.id in keep]
            chosen[split] = rows
        selected[loc] = chosen
        counts[loc] = {
            "available": {s: len(splits[s]) for s in SPLITS},
            "dev": len(selection["eval"].get(loc, chosen["dev"])),
            **({"selection_dev": len(selection["selection"][loc])} if loc in selection["selection"] else {}),
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
    _write_prepared(out_dir, labels, locales, selected, subsets, manifest,
                    {_SELECTION_FILE: selection} if selection["selection"] else {})
    return manifest


def selection_per_locale(selection_dev_rows: int | None, locales: Sequence[str]) -> int:
    """The dev rows of each locale that model selection on the set `locales` reads (at least selection_dev_rows in
    all, evenly spread; 0: just the evaluation's)."""
    return -(-selection_dev_rows // len(locales)) if selection_dev_rows else 0


def draw_seed(data_seed: int, grid_seed: int, per_seed: bool) -> int:
    """The seed of grid seed `grid_seed`'s training rows: data.seed + grid seed where every seed draws its own
    (seed 0 then draws the subsets data.seed draws: the teacher's ordering), else data.seed for all."""
    return data_seed + grid_seed if per_seed else data_seed


def prepare_draws(massive: tuple, locales: Sequence[str], train_sizes: Mapping[str, int | float],
                  seeds: Mapping[int, int], out_dir: str | os.PathLike) -> dict[int, dict]:
    """Per grid seed, its own nested, intent-stratified training subsets of `locales`: out_dir/s<seed>/ is a
    prepared folder (load_prepared reads it) holding only those train rows. seeds: {grid seed: draw seed}. The
    evaluation rows and the teacher's rows stay in the main prepared folder, fixed for every seed. All seeds'
    folders are written at once or not at all. Returns {grid seed: manifest}."""
    _, _, data = massive
    labels = LabelVocab(MASSIVE_INTENTS)
    manifests = {}
    with atomic_dir(out_dir) as tmp:
        for grid_seed, seed in seeds.items():
            _check_request(train_sizes, seed)
            subsets: dict[str, dict[str, list[str]]] = {name: {} for name in train_sizes}
            selected = {loc: {"train": _select_train(data[loc]["train"], train_sizes, seed, loc, subsets)}
                        for loc in locales}
            manifests[grid_seed] = {"format": _FORMAT, "locales": list(locales), "train_sizes": dict(train_sizes),
                                    "grid_seed": grid_seed, "seed": seed, "n_labels": len(labels),
                                    "counts": {loc: {name: len(subsets[name][loc]) for name in train_sizes}
                                               for loc in locales}}
            _write_prepared(tmp / f"s{grid_seed}", labels, locales, selected, subsets, manifests[grid_seed])
    return manifests


class PreparedData:
    """The output of prepare_dataset, read back."""

    def __init__(self, out_dir: Path, labels: LabelVocab, manifest: dict, subsets: dict[str, dict[str, list[str]]],
                 rows: list[Example], selection: dict | None = None):
        self.out_dir = out_dir
        self.selection = selection or {"rows": None, "eval": {}, "selection": {}}
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
        """The rows of `split`: dev or test (the evaluation's), or selection (the dev rows model selection on the
        set `locales` reads: the evaluation's dev rows, and more where the set's share of selection_dev_rows per
        locale is more than those and prepare kept them)."""
        if split not in ("dev", "test", "selection"):
            raise DataError(f"split must be 'dev', 'test' or 'selection', not {split!r} (use .train() for training rows)")
        locs = self._locales(locales)
        share = selection_per_locale(self.selection["rows"], locs)
        out = []
        for loc in locs:
            rows = self._by_split[(loc, "test" if split == "test" else "dev")]
            if split != "test" and loc in self.selection["eval"]:
                evaluation = self.selection["eval"][loc]
                more = self.selection["selection"][loc][:share] if split == "selection" else []
                keep = set(more if len(more) > len(evaluation) else evaluation)
                rows = [ex for ex in rows if ex.id in keep]
            out.extend(rows)
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
        selection = (json.loads((out_dir / _SELECTION_FILE).read_text(encoding="utf-8"))
                     if (out_dir / _SELECTION_FILE).is_file() else None)
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
    return PreparedData(out_dir, labels, manifest, subsets, rows, selection)
