#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: a project-local virtualenv with the PyTorch wheel that
# tch 0.26 is built against. Its libtorch (CPU + CUDA) is what tbrm links to.
set -euo pipefail
TORCH_VERSION=2.13.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  echo "setup: creating $ROOT/.venv" >&2
  "$PY" -m venv "$ROOT/.venv"
fi
have=$("$ROOT/.venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
if [ "$have" != "$TORCH_VERSION" ]; then
  echo "setup: installing torch==$TORCH_VERSION into .venv (large download, once)" >&2
  "$ROOT/.venv/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
fi
