#!/usr/bin/env bash
# Create .venv with mkd and its pinned dependencies (idempotent; a second run takes seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Re-install only when the dependency list changed.
stamp=.venv/.mkd-deps-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
# Analytics off for DVC; the Hub is unreachable on offline machines (a failed lookup stalls ~24 s).
.venv/bin/dvc config --local core.analytics false >/dev/null 2>&1 || true
