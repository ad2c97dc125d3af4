#!/usr/bin/env bash
# The test suite, from a fresh clone: install with the dev extras, then run pytest
# (unit and integration tests; real gRPC servers on port 0, SQLite, the real model, and a
# throwaway PostgreSQL server when its binaries are installed, e.g. Debian's postgresql).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/packaging/setup-env.sh" all,dev
# tests/packaging checks the systemd units with `systemd-analyze verify` (Debian's systemd
# package). Installed here only where it is missing and this is root with apt-get; otherwise
# that test skips and says which package to install.
if ! command -v systemd-analyze >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's systemd package for systemd-analyze" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends systemd >/dev/null; } \
    || echo "could not install systemd; the unit checks will skip" >&2
fi
cd "$root"
exec "${ALLMENDE_VENV:-$root/.venv}/bin/python" -m pytest "$@"
