#!/usr/bin/env bash
# Creates .venv and installs the project. Idempotent: a complete .venv is detected by a
# stamp file that records the hash of the inputs, so a second run costs well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.setup-complete
inputs_hash=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [[ -f $STAMP && "$(cat "$STAMP")" == "$inputs_hash" ]]; then
  exit 0
fi

step() { echo "==> setup: $1"; CURRENT_STEP="$1"; }
trap 'echo "setup FAILED at step: ${CURRENT_STEP:-?}. Fix the error above and re-run the same command (safe to repeat); to start clean: rm -rf .venv" >&2' ERR

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "setup FAILED: $PY not found. Install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

step "create virtualenv ($PY -m venv $VENV)"
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
export PIP_CONSTRAINT="$PWD/constraints.txt"

step "upgrade pip and build tools"
"${PIP[@]}" install -q --upgrade pip setuptools wheel setuptools_scm

step "install torch==2.13.0 (CPU build)"
"${PIP[@]}" install -q torch==2.13.0

step "build pufferlib-core 3.0.17 from source against the installed torch"
# The published wheel is compiled against torch 2.9 and fails with 'undefined symbol'
# under any other torch, so build it here without isolation and without a cached wheel.
if ! "$VENV/bin/python" -c "import pufferlib, pufferlib.vector" >/dev/null 2>&1; then
  "${PIP[@]}" install -q numpy
  "${PIP[@]}" install -q --no-build-isolation --no-binary pufferlib-core --no-cache-dir pufferlib-core==3.0.17
fi

step "install this project with its test extra (editable)"
"${PIP[@]}" install -q -e '.[test]'

step "check imports"
"$VENV/bin/python" -c "import torch, pufferlib, pufferlib.vector, ray, wandb; assert torch.__version__.startswith('2.13.0'), torch.__version__"

echo "$inputs_hash" > "$STAMP"
echo "==> setup: done ($VENV)"
