#!/usr/bin/env bash
# The main job, from a fresh clone: install, then run a local coordinator on the embedded
# default (SQLite), two volunteers and a job from the bundled corpus, ending with a pulled,
# verified dataset in ./allmende-demo/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/packaging/setup-env.sh" all
exec "${ALLMENDE_VENV:-$root/.venv}/bin/allmende" demo "$@"
