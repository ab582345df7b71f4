#!/usr/bin/env bash
# Set up and run one profile of the replication through DVC (default: cpu; measured times in the README).
#   bash scripts/run.sh [cpu|smoke|paper] [extra `dvc exp run` arguments]
# The grid's cells run on parallel workers (`mkd fanout`: MKD_WORKERS, default 2, each with the profile's
# `cell_threads`; or one per GPU with MKD_GPUS=0,1,...), then `mkd fanin` brings them into DVC from its run-cache and runs
# collect and analyze. MKD_WORKERS=1, or extra `dvc exp run` arguments, run the plain `mkd exp` (one stage
# after another).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-cpu}; shift || true
bash scripts/setup.sh
export DVC_NO_ANALYTICS=1 MPLBACKEND=Agg
if [ "$profile" != paper ]; then export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}; fi
# dvc exp run needs a git commit to hang the experiment on.
git rev-parse -q --verify HEAD >/dev/null || { echo "run.sh: this folder needs at least one git commit (git commit -m init)" >&2; exit 2; }
# DVC records experiments as git refs: give it an identity when the machine has none.
export GIT_AUTHOR_NAME=${GIT_AUTHOR_NAME:-$(git config user.name || echo mkd)} GIT_AUTHOR_EMAIL=${GIT_AUTHOR_EMAIL:-$(git config user.email || echo mkd@localhost)}
export GIT_COMMITTER_NAME=$GIT_AUTHOR_NAME GIT_COMMITTER_EMAIL=$GIT_AUTHOR_EMAIL
export PATH="$PWD/.venv/bin:$PATH"
workers=${MKD_WORKERS:-2}
if [ $# -gt 0 ] || { [ "$workers" = 1 ] && [ -z "${MKD_GPUS:-}" ]; }; then
  exec mkd exp --profile "$profile" -- "$@"
fi
if [ -n "${MKD_GPUS:-}" ]; then slots=(--gpus "$MKD_GPUS"); else slots=(--workers "$workers"); fi
mkd fanout --profile "$profile" "${slots[@]}"
exec mkd fanin --profile "$profile"
