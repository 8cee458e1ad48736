#!/usr/bin/env bash
# Create ./.venv (once) with jaxrnn and its test dependencies. torch is installed first, pinned to
# its CPU build (set TORCH_INDEX_URL, e.g. to PyTorch's CPU wheel index, where your pip would
# otherwise fetch a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.jaxrnn-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    .venv/bin/python -m pip install -q torch==2.13.0 --index-url "$TORCH_INDEX_URL"
  else
    .venv/bin/python -m pip install -q torch==2.13.0
  fi
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$stamp"
fi
