#!/usr/bin/env bash
# The test suite, offline, on the real MASSIVE copy (../shared/massive or $MKD_MASSIVE) and the real e5-small.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 DVC_NO_ANALYTICS=1 MPLBACKEND=Agg
# Two workers, one test module each (module fixtures build their pipelines once), one torch thread per process
# (tests/conftest.py): 617 -> 447 s on 2 cores against two 2-thread workers, measured.
exec .venv/bin/python -m pytest -n "${MKD_TEST_WORKERS:-2}" --dist loadfile "$@"
