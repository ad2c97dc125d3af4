"""A throwaway PostgreSQL server for tests: `initdb` and `pg_ctl` in a temporary folder.

The cluster starts once per test session, on the first test that asks for it, listens on
127.0.0.1 at a free port with `trust` authentication, and is stopped and deleted at the end.
Each test gets its own database, copied from a migrated template (fast: a file copy).

Binaries: $ALLMENDE_PG_BIN, else `pg_ctl` on PATH, else the newest /usr/lib/postgresql/*/bin
(Debian, Ubuntu) or /usr/pgsql-*/bin (RHEL). initdb refuses to run as root, so as root the
server runs as the `postgres` user the packages create (or `nobody`), through `runuser`.

Tests that need PostgreSQL skip when no binaries are found, unless ALLMENDE_REQUIRE_POSTGRES=1
(as in .ci/run): then they fail, so a CI machine without PostgreSQL cannot pass by skipping.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

TEMPLATE = "allmende_template"
SUPERUSER = "allmende"
_names = itertools.count()


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None."""
    candidates = []
    if os.environ.get("ALLMENDE_PG_BIN"):
        candidates.append(os.environ["ALLMENDE_PG_BIN"])
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))

    def version(path: str) -> float:
        digits = "".join(c if c.isdigit() or c == "." else " " for c in path).split()
        return float(digits[-1]) if digits else 0.0

    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin"):
        candidates.extend(sorted(glob.glob(pattern), key=version, reverse=True))
    for folder in candidates:
        if all((Path(folder) / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> str | None:
    """Who runs the server: None for ourselves, or an unprivileged account when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists")


class PostgresCluster:
    """One running server. `url(name)` addresses a database on it."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.user = _server_user()
        # Another user must reach the folder: under /tmp, not a private $TMPDIR.
        self.root = Path(tempfile.mkdtemp(prefix="allmende-pg-", dir="/tmp" if self.user else None))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr}{tail}"
            )
        return done

    def start(self, **overrides: str) -> PostgresCluster:
        """initdb, then start the server; `overrides` are extra server settings."""
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.data),
            "max_connections": "300",
            # A test server: nothing here needs to survive a crash of the machine.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            **overrides,
        }
        for attempt in range(3):
            self.port = free_port()
            options = f"-p {self.port} " + " ".join(f"-c {k}={v}" for k, v in settings.items())
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                )
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        self._create_template()
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE) as the superuser."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def _create_template(self) -> None:
        from allmende.coordinator.store import open_store

        self.execute(f"CREATE DATABASE {TEMPLATE}")
        open_store(self.url(TEMPLATE)).close()

    def new_database(self, migrated: bool = True) -> str:
        """A fresh database (at the newest schema revision, or empty); returns its URL."""
        name = f"test_{os.getpid()}_{next(_names)}"
        template = TEMPLATE if migrated else "template0"
        self.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with contextlib.suppress(Exception):
            self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    bindir = find_bindir()
    if bindir is None:
        message = (
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install them (Debian: "
            "apt-get install postgresql) or point ALLMENDE_PG_BIN at their folder"
        )
        if os.environ.get("ALLMENDE_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    cluster = PostgresCluster(bindir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database at the newest schema revision, dropped after the test."""
    url = postgres_cluster.new_database()
    try:
        yield url
    finally:
        postgres_cluster.drop_database(url)
