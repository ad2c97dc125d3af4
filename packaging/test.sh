#!/usr/bin/env bash
# The test suite, from a fresh clone: install with the dev extras, then run pytest
# (unit and integration tests; real gRPC servers on port 0, SQLite, the real model, and a
# throwaway PostgreSQL server when its binaries are installed, e.g. Debian's postgresql).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/packaging/setup-env.sh" all,dev
cd "$root"
exec "${ALLMENDE_VENV:-$root/.venv}/bin/python" -m pytest "$@"
