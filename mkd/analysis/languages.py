"""What is known about each evaluation locale's language, for the per-locale transfer analysis.

From maintained sources, not a hand-typed table:
- script: `langcodes` (CLDR's likely-subtags data: `ja-JP` -> Jpan, `sr-RS` -> Cyrl);
- genetic family and typological / geographic position: URIEL (Littell et al. 2017) as the `lang2vec` wheel ships
  it (its data/*.npz). lang2vec's own module is not imported: it needs `pkg_resources`, which setuptools >= 81 no
  longer has, and 1.1.2 on PyPI ships no distance table, so the distances are computed here from its vectors;
- the base model's pretraining data per language: XLM-R's CC-100 table (data/cc100_xlmr.csv, with its source).

Distances are cosine distances (1 - cosine similarity) between a language's URIEL vectors, the measure URIEL's
vectors are meant for (assumption: lang2vec's GitHub `distance()` table is not on PyPI to compare against).
No torch here: the analysis stage imports this.
"""

from __future__ import annotations

import csv
import importlib.metadata
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mkd.core.errors import DataError

CC100_FILE = Path(__file__).parent / "data" / "cc100_xlmr.csv"

# URIEL vector sets a distance is computed over: name -> (lang2vec data file, feature-name prefix). "syntactic"
# uses the kNN-predicted WALS/SSWL syntax features (complete for every language; the observed ones have gaps).
URIEL_VECTORS = {
    "genetic": ("family_features.npz", "F_"),
    "syntactic": ("feature_predictions.npz", "S_"),
    "geographic": ("geocoord_features.npz", "GC_"),
}

# Where a locale's ISO 639-3 code has an empty URIEL family vector, the code whose vector stands in for it.
# nb (Norwegian Bokmal) has no Glottolog family path in URIEL; its macrolanguage nor does.
URIEL_STAND_IN = {"nob": "nor"}

# MASSIVE locale -> the CC-100 table's row, where the language subtag alone is not it: the two Chinese rows are
# told apart by script, Bokmal is the table's Norwegian, Burmese in MASSIVE is Unicode (not Zawgyi).
CC100_CODE = {"zh-CN": "zh-Hans", "zh-TW": "zh-Hant", "nb-NO": "no"}


@dataclass(frozen=True)
class LanguageInfo:
    locale: str
    iso639_3: str
    script: str           # ISO 15924, e.g. Latn, Cyrl, Hans
    family: str           # URIEL's top-level genetic family, e.g. Indo-European
    cc100_gib: float      # the base model's pretraining data for the language (nan: not in CC-100)

    @property
    def latin_script(self) -> bool:
        return self.script == "Latn"


def _langcodes():
    try:
        import langcodes
    except ImportError:
        raise DataError("the transfer analysis needs `langcodes` (pinned in requirements.lock); run `bash scripts/setup.sh`") from None
    return langcodes


def script(locale: str) -> str:
    """The locale's likely script (langcodes' likely subtags): en-US -> Latn, zh-TW -> Hant."""
    return _langcodes().Language.get(locale).maximize().script


def iso639_3(locale: str) -> str:
    """The locale's language as an ISO 639-3 code, the key URIEL uses: de-DE -> deu, tl-PH -> fil."""
    return _langcodes().Language.get(locale).to_alpha3()


def _uriel_dir() -> Path:
    """lang2vec's data folder, found through the installed distribution, not the import system: the wheel also
    installs a script `lang2vec.py` into the environment's bin/, which shadows the package for any console
    script (`mkd`), whose sys.path starts with bin/."""
    try:
        folder = Path(importlib.metadata.distribution("lang2vec").locate_file("lang2vec")) / "data"
    except importlib.metadata.PackageNotFoundError:
        folder = None
    if folder is None or not folder.is_dir():
        raise DataError("the transfer analysis needs URIEL's data from `lang2vec` (pinned in requirements.lock)"
                        f"{f'; {folder} is missing' if folder else ''}; run `bash scripts/setup.sh`")
    return folder


@lru_cache(maxsize=None)
def _uriel(kind: str) -> tuple[dict[str, int], np.ndarray, tuple[str, ...]]:
    """({iso639_3: row}, vectors [languages x features], feature names) of one URIEL_VECTORS set."""
    if kind not in URIEL_VECTORS:
        raise DataError(f"unknown URIEL distance {kind!r}; one of {', '.join(URIEL_VECTORS)}")
    file, prefix = URIEL_VECTORS[kind]
    with np.load(_uriel_dir() / file, allow_pickle=False) as data:
        feats = [str(f) for f in data["feats"]]
        keep = [i for i, f in enumerate(feats) if f.startswith(prefix)]
        vectors = data["data"][:, keep, 0].astype(np.float64)
        langs = {str(code): i for i, code in enumerate(data["langs"])}
    return langs, vectors, tuple(feats[i] for i in keep)


def uriel_vector(kind: str, code: str) -> np.ndarray:
    """A language's URIEL vector of `kind` (an empty family vector falls back to URIEL_STAND_IN)."""
    langs, vectors, _ = _uriel(kind)
    if code not in langs:
        raise DataError(f"URIEL has no language {code!r}")
    v = vectors[langs[code]]
    if not v.any() and code in URIEL_STAND_IN:
        return uriel_vector(kind, URIEL_STAND_IN[code])
    return v


def family(code: str) -> str:
    """The top-level genetic family: of the language's URIEL family memberships, the one most languages share."""
    langs, vectors, names = _uriel("genetic")
    v = uriel_vector("genetic", code)
    members = np.flatnonzero(v)
    if members.size == 0:
        return "unknown"
    sizes = vectors[:, members].sum(axis=0)
    return names[members[int(np.argmax(sizes))]].removeprefix("F_")


def distance(kind: str, a: str, b: str) -> float:
    """Cosine distance between two languages' URIEL vectors of `kind` (0: the same position)."""
    u, v = uriel_vector(kind, a), uriel_vector(kind, b)
    norm = float(np.linalg.norm(u) * np.linalg.norm(v))
    if norm == 0.0:
        return math.nan
    return max(0.0, 1.0 - float(u @ v) / norm)


def distance_to(kind: str, locale: str, training_locales: Sequence[str]) -> float:
    """A locale's distance to its nearest training language (0 for a training locale itself)."""
    code = iso639_3(locale)
    return min(distance(kind, code, iso639_3(t)) for t in training_locales)


@lru_cache(maxsize=1)
def cc100_table() -> dict[str, dict]:
    """{code: {"language", "tokens_m", "size_gib"}} of data/cc100_xlmr.csv."""
    with open(CC100_FILE, encoding="utf-8") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        return {r["code"]: {"language": r["language"], "tokens_m": float(r["tokens_m"]), "size_gib": float(r["size_gib"])}
                for r in rows}


def cc100_gib(locale: str) -> float:
    """CC-100 GiB of the locale's language (nan where XLM-R's table has no row for it)."""
    row = cc100_table().get(CC100_CODE.get(locale, locale.split("-")[0]))
    return row["size_gib"] if row else math.nan


def language_info(locale: str) -> LanguageInfo:
    code = iso639_3(locale)
    return LanguageInfo(locale=locale, iso639_3=code, script=script(locale), family=family(code), cc100_gib=cc100_gib(locale))


def language_table(locales: Sequence[str], training_locales: Mapping[str, Sequence[str]]):
    """One row per locale: code, script, family, CC-100 GiB, and per training language set its URIEL distances
    (`<set>_<kind>`) to the nearest training language and whether it is one (`<set>_trained`)."""
    import pandas as pd

    rows = []
    for locale in locales:
        info = language_info(locale)
        row = {"locale": locale, "iso639_3": info.iso639_3, "script": info.script, "latin_script": info.latin_script,
               "family": info.family, "cc100_gib": info.cc100_gib}
        for name, trained in training_locales.items():
            row[f"{name}_trained"] = locale in trained
            for kind in URIEL_VECTORS:
                row[f"{name}_{kind}"] = distance_to(kind, locale, trained)
        rows.append(row)
    return pd.DataFrame(rows)
