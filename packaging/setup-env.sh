#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install Allmende into it.
# Usage: packaging/setup-env.sh EXTRAS   e.g. "all" or "all,dev"
set -euo pipefail
extras="${1:-all}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ALLMENDE_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# The CPU build of torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
# On a machine with a GPU, install the CUDA build you want before running this script.
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  "${pip[@]}" "torch==2.13.0"
fi
"${pip[@]}" -e "$root[$extras]"
