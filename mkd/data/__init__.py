"""MASSIVE 1.1: language sets, the source, reading and validation, label vocabulary, nested subsets, prepared data.

Sources: a folder of `<locale>.jsonl[.gz]` files (the offline copy, or an extracted official tarball), the
official tarball itself, or "official" (downloaded once into the cache and checksum-checked).

One module per concern; the names callers use are re-exported here:
  schema    locales, splits, intents, the Example row, language sets
  source    where the data is (folder, tarball, the official download) and its SHA-256 checks
  reader    the JSONL / tarball reader; every fault in the data is a DataError naming file and line
  arrow_cache  locales the reader checked, kept as `datasets` Arrow folders keyed by their bytes' SHA-256
  labels    the label vocabulary
  subsets   seeds and the nested, intent-stratified train subsets
  prepared  `mkd prepare`'s output folder: written atomically, read back
"""

from .labels import LabelVocab
from .prepared import PreparedData, draw_seed, load_prepared, prepare_dataset, prepare_draws, read_massive
from .reader import load_locale, load_massive
from .schema import (ALL_LOCALES, LANGUAGE_SETS, MASSIVE_INTENTS, MASSIVE_SPLIT_SIZES, SPLITS, Example,
                     resolve_language_set)
from .source import (OFFICIAL_FILENAME, OFFICIAL_SHA256, OFFICIAL_URL, SHARED_COPY, download_official, official_release,
                     locate_source, resolve_source, source_files, verify_checksums)
from .subsets import nested_subsets, seed_for

__all__ = [
    "ALL_LOCALES", "LANGUAGE_SETS", "MASSIVE_INTENTS", "MASSIVE_SPLIT_SIZES", "SPLITS", "Example",
    "resolve_language_set",
    "OFFICIAL_FILENAME", "OFFICIAL_SHA256", "OFFICIAL_URL", "SHARED_COPY", "download_official", "official_release", "locate_source",
    "resolve_source", "source_files", "verify_checksums",
    "load_locale", "load_massive",
    "LabelVocab",
    "nested_subsets", "seed_for",
    "PreparedData", "draw_seed", "load_prepared", "prepare_dataset", "prepare_draws", "read_massive",
]
