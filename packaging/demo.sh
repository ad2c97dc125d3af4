#!/usr/bin/env bash
# The main job, from a fresh clone: install, then run a local coordinator on the embedded
# default (SQLite), two volunteers and a job from the bundled corpus, ending with a pulled,
# verified dataset in ./allmende-demo/. Flags go to `allmende demo`: --headless, --kind
# filter-text (a bundled multilingual corpus), --kind clip-filter (bundled photographs and a
# CLIP the coordinator serves; --clip-model DIR for a real CLIP folder), --dir, --input.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/packaging/setup-env.sh" all
exec "${ALLMENDE_VENV:-$root/.venv}/bin/allmende" demo "$@"
