#!/usr/bin/env bash
# Builds the tbrm_verify Python wheel from python/ the way `pip install ./python` does (pip, with
# maturin fetched from PyPI into an isolated build environment), installs it into a fresh
# virtualenv that has nothing else, and checks its verdicts there (python/tests/check_wheel.py).
# Exits non-zero when the build, the install or a check fails.
#
# Cargo builds into target/pywheel (CARGO_TARGET_DIR overrides), apart from the workspace's own
# target folder: the extension is a workspace of its own (python/Cargo.toml) and a release build.
# PYTHON picks the interpreter the virtualenvs are made from (default: python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/pywheel}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tbrm-pywheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS

pip_quiet() {
  local venv=$1
  shift
  "$venv/bin/python" -m pip --disable-pip-version-check --no-cache-dir "$@"
}

echo "python wheel: building from python/ with $("$PY" --version 2>&1)" >&2
"$PY" -m venv "$WORK/build"
pip_quiet "$WORK/build" wheel --no-deps -q -w "$WORK/dist" "$ROOT/python"
wheel=("$WORK"/dist/tbrm_verify-*.whl)
[ -f "${wheel[0]}" ] || { echo "python wheel: no wheel was built" >&2; exit 1; }
echo "python wheel: built $(basename "${wheel[0]}") in $((SECONDS - start)) s" >&2
case "$(basename "${wheel[0]}")" in
  *-abi3-*) ;;
  *) echo "python wheel: expected an abi3 wheel" >&2; exit 1 ;;
esac

"$PY" -m venv "$WORK/test"
pip_quiet "$WORK/test" install -q --no-index "${wheel[0]}"
# From an empty folder, so `import tbrm_verify` can only find the installed wheel.
mkdir "$WORK/run"
(cd "$WORK/run" && "$WORK/test/bin/python" "$ROOT/python/tests/check_wheel.py")
echo "python wheel: done in $((SECONDS - start)) s" >&2
