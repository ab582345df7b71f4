#!/usr/bin/env bash
# Set up and run one profile of the replication through DVC (default: cpu, ~97 min on 2 cores, measured).
#   bash scripts/run.sh [cpu|smoke|paper] [extra `dvc exp run` arguments]
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
PATH="$PWD/.venv/bin:$PATH" exec mkd exp --profile "$profile" "$@"
