#!/usr/bin/env bash
# The test suite, offline, on the real MASSIVE copy (../shared/massive or $MKD_MASSIVE) and the real e5-small.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 DVC_NO_ANALYTICS=1 MPLBACKEND=Agg
exec .venv/bin/python -m pytest "$@"
