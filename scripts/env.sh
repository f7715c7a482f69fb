# Source this file: it points cargo's libtorch build (tch / torch-sys) at the project's
# virtualenv. It installs nothing; scripts/setup.sh does that.
TBRM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VIRTUAL_ENV="$TBRM_ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
