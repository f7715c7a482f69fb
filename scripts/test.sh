#!/usr/bin/env bash
# The test command: set-up (virtualenv + torch wheel) if needed, then every test of the workspace.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
cargo test --workspace "$@"
