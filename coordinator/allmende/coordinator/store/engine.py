"""Engines for the SQL store: database URLs, SQLite's settings and locking, PostgreSQL's driver.

SQLite runs in WAL mode and takes its write lock at the start of each write transaction
(BEGIN IMMEDIATE): the store flags a connection (`WRITE_INFO` or `READ_INFO` in its `info`)
before it begins, and this module's "begin" listener issues the BEGIN that flag asks for.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from allmende.protocol.errors import InvalidArgument

# Connection.info flags, set by SqlBase._tx and SqlBase._read (sql_base.py).
WRITE_INFO = "allmende_write"
READ_INFO = "allmende_read"


def _wal(cursor: Any) -> None:
    """Switch to WAL mode. Switching needs a moment alone with the database file, and SQLite
    answers "database is locked" at once, without waiting, while another process opening
    the same new file holds it: try again for a while."""
    for attempt in range(200):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 199:
                raise
            time.sleep(0.05)


def _sqlite_engine(url: str, pool_size: int) -> Engine:
    memory = url in ("sqlite://", "sqlite:///:memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if memory:
        kwargs["poolclass"] = StaticPool
    else:  # readers run side by side in WAL mode: one connection per RPC thread
        kwargs.update(pool_size=pool_size, max_overflow=pool_size)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        if not memory:
            _wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front; readers get a deferred snapshot; a single
        # read needs no transaction at all (one statement is atomic in autocommit mode).
        if conn.info.get(READ_INFO):
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get(WRITE_INFO) else "BEGIN")

    return engine


def _postgres_engine(url: str, pool_size: int) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidArgument("database", "a URL such as postgresql://USER@HOST/DB") from None
    # psycopg 3 is the driver we ship; SQLAlchemy would otherwise pick psycopg2.
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername != "postgresql+psycopg":
        raise InvalidArgument(
            "database", f"postgresql:// (psycopg 3), got driver {parsed.drivername!r}"
        )
    return create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=3600,
        connect_args={"application_name": "allmende-coordinator"},
    )


def backend_of(url: str) -> str:
    """'sqlite' or 'postgresql' for a database URL; InvalidArgument for anything else."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    raise InvalidArgument(
        "database",
        f"a sqlite:///PATH or postgresql://USER@HOST/DB URL, got {scheme or url!r}",
    )


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("://", 1)[0] + "://..."


def make_engine(url: str, pool_size: int = 24) -> Engine:
    """The SQLAlchemy engine for a database URL, configured as the store uses it."""
    if backend_of(url) == "sqlite":
        return _sqlite_engine(url, pool_size)
    return _postgres_engine(url, pool_size)
