"""Schema migrations: bring a coordinator database to the revision this code expects.

Alembic runs the revisions in `migrations/versions/` on a connection the store already holds,
inside one transaction (both SQLite and PostgreSQL have transactional DDL, so a failed
migration leaves the database as it was). Coordinators starting together on one PostgreSQL
database queue on an advisory lock; on SQLite the write transaction itself is the lock.

A database written before Alembic was used (tables and `meta.schema = 1`, no
`alembic_version`) is adopted as the baseline revision and upgraded from there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

from allmende.coordinator.store import schema as t
from allmende.protocol.errors import FailedPrecondition

if TYPE_CHECKING:  # Alembic itself is imported only when a migration is due
    from alembic.config import Config

log = logging.getLogger("allmende.coordinator.store")

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"
# pg_advisory_xact_lock(classid, objid): "Allm" and a number for "schema migration".
_LOCK = (0x416C6C6D, 1)


def current_revision(conn: Connection) -> str | None:
    """The database's Alembic revision, or None when it has none (new, or pre-Alembic)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return str(value) if value is not None else None


def upgrade(conn: Connection, target: str = "head") -> str:
    """Migrate the database behind `conn` (in a transaction the caller commits) to `target`.

    Returns the revision reached. Cheap when the database is already current: Alembic is
    imported only when there is something to do.
    """
    _lock(conn)
    have = current_revision(conn)
    if target == "head" and have == t.REVISION:
        return have
    from alembic import command
    from alembic.util.exc import CommandError

    config = _config(conn)
    if have is None and _is_pre_alembic(conn):
        log.warning("adopting a database written before migrations as revision %s", BASELINE)
        command.stamp(config, BASELINE)
    try:
        command.upgrade(config, target)
    except CommandError as exc:
        raise FailedPrecondition(
            f"database schema revision {have!r} is unknown to this coordinator, which knows "
            f"revisions up to {t.REVISION!r}; a newer allmende wrote it, so upgrade ({exc})"
        ) from None
    reached = current_revision(conn) or ""
    if reached != have:
        log.info("database migrated from revision %s to %s", have, reached)
    return reached


def downgrade(conn: Connection, target: str) -> str:
    """Undo revisions down to `target` (for tests and for rolling a release back)."""
    from alembic import command

    _lock(conn)
    command.downgrade(_config(conn), target)
    return current_revision(conn) or ""


def _config(conn: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": _LOCK[0], "b": _LOCK[1]})


def _is_pre_alembic(conn: Connection) -> bool:
    """True for a database the first release created (with `create_all`), refused if partial."""
    inspector = inspect(conn)
    if not inspector.has_table("jobs"):
        return False
    version = conn.execute(text("SELECT value FROM meta WHERE key = 'schema'")).scalar()
    columns = {c["name"] for c in inspector.get_columns("jobs")}
    columns |= {c["name"] for c in inspector.get_columns("volunteers")}
    if version != "1" or not {"priority", "banned", "last_seen_ms"} <= columns:
        raise FailedPrecondition(
            f"the database has coordinator tables but no migration history (schema {version!r}),"
            " and they differ from the first release's; start from a new database"
        )
    return True
