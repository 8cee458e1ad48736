#!/usr/bin/env bash
# The demo: converts PyTorch recurrent models to jaxrnn, runs them under jit, prints parity figures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/demo.py "$@"
