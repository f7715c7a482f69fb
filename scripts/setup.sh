#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: a project-local virtualenv with the PyTorch wheel that
# tch 0.26 is built against. Its libtorch (CPU + CUDA) is what tbrm links to.
#
# Disk matters here (a CI run once died with "No space left on device" inside pip): the wheel and
# its CUDA libraries are ~4 GB installed. So pip keeps no cache, torch's requirements are installed
# one at a time (at most one downloaded wheel on disk besides what is installed), and triton
# (~0.7 GB, only used by torch.compile, which libtorch never calls) is left out.
set -euo pipefail
TORCH_VERSION=2.13.0
NEED_MB=6000
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.tbrm-torch-$TORCH_VERSION"
[ -f "$STAMP" ] && exit 0

free_mb() { df -Pm "$1" | awk 'NR==2 {print $4}'; }
avail=$(free_mb "$ROOT")
if [ "$avail" -lt "$NEED_MB" ]; then
  echo "setup: warning: $avail MB free on the disk holding $ROOT; torch needs about 4500 MB" \
    "and the cargo build about 5000 MB more" >&2
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
# pip's log goes to a file, shown only on failure: installing one requirement at a time makes pip
# warn that torch's other requirements (and triton) are "not installed" yet, which is expected.
LOG="$VENV/setup-pip.log"
pip_install() {
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-cache-dir "$@" >>"$LOG" 2>&1 || {
    tail -n 30 "$LOG" >&2
    echo "setup: pip failed installing $* ($(free_mb "$ROOT") MB free on the disk holding $ROOT;" \
      "full log: $LOG)" >&2
    exit 1
  }
}
echo "setup: installing torch==$TORCH_VERSION into .venv (large download, once)" >&2
pip_install --no-deps "torch==$TORCH_VERSION"
# torch's own requirements for this platform, minus triton and the optional extras.
reqs=$("$VENV/bin/python" - <<'EOF'
from importlib.metadata import requires
from pip._vendor.packaging.requirements import Requirement
for line in requires("torch") or []:
    req = Requirement(line)
    if req.name == "triton":
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    print(req)
EOF
)
while IFS= read -r req; do
  [ -n "$req" ] && pip_install "$req"
done <<<"$reqs"
"$VENV/bin/python" -W ignore -c 'import torch; assert torch.__version__.split("+")[0] == "'"$TORCH_VERSION"'"' || {
  echo "setup: torch was installed but does not import; remove $VENV and rerun" >&2
  exit 1
}
touch "$STAMP"
echo "setup: done ($(free_mb "$ROOT") MB free)" >&2
