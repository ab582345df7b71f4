#!/usr/bin/env bash
# Create .venv with mkd and its pinned dependencies (idempotent; a second run takes seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Re-install only when the dependency list or the lock changed. The lock (requirements.lock) pins every package
# to the versions that made the committed results, so a fresh clone computes the same numbers.
stamp=.venv/.mkd-deps-$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing mkd and its pinned dependencies into .venv (log: .venv/pip.log)" >&2
  # pip byte-compiles here (143 s; 70 s with --no-compile, measured): kept, because machines that set
  # PYTHONDONTWRITEBYTECODE (as the ones that made the committed results do) would otherwise compile torch and transformers again in every
  # process (importing torch, transformers, DVC and the analysis stack: 16 s instead of 7-8 s, every time).
  .venv/bin/python -m pip install -q -c requirements.lock -e '.[test]' > .venv/pip.log 2>&1 || { tail -40 .venv/pip.log >&2; exit 1; }
  touch "$stamp"
fi
# Analytics off for DVC; the Hub is unreachable on offline machines (a failed lookup stalls ~24 s).
.venv/bin/dvc config --local core.analytics false >/dev/null 2>&1 || true
