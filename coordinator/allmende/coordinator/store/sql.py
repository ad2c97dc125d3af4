"""The SQL store: one implementation of `Store` over SQLAlchemy Core, for SQLite and PostgreSQL.

SQLite (the embedded default) runs in WAL mode and takes its write lock at the start of each
transaction (BEGIN IMMEDIATE), so read-then-write sequences cannot deadlock or interleave.

PostgreSQL (psycopg 3, READ COMMITTED) lets several coordinator processes share one database,
so the same methods take row locks where the SQLite write lock used to be enough:

- a lease locks the unit it hands out (`FOR NO KEY UPDATE SKIP LOCKED`: concurrent leases
  pass over each other's units instead of queueing), and inserts the lease only if the unit,
  seen in a snapshot taken after the lock, is still free for that volunteer;
- a result locks its unit before it reads the other replicas, so two replicas arriving at
  once on two coordinators are judged one after the other, never each without the other;
- deciding a unit looks for another open unit of the job that nobody holds (FOR SHARE SKIP
  LOCKED); only when there is none does it lock the job row and count the units left open.

Locks are always taken units first, then leases, then jobs, so writers cannot deadlock.
They are FOR NO KEY UPDATE locks: foreign-key checks take KEY SHARE locks on the rows they
reference (a unit's job, for one), and FOR UPDATE would conflict with those.
`units.busy` (replica slots taken) is kept by database triggers; see schema.py.

The store is `SqlStore`, composed of one mixin per concern over `SqlBase` (sql_base.py:
transactions, reads, events): jobs_sql.py, volunteers_sql.py, leasing_sql.py, results_sql.py,
datasets_sql.py (assimilation), admin_sql.py, lookup_sql.py (ids by prefix), trust_sql.py,
gold_sql.py (gold rows), nonces_sql.py (signed requests' nonces), models_sql.py (served
models) and verdicts_sql.py (what volunteers are told of their results). The data path's
statements are built once in statements.py; engines and their SQLite settings are made in
engine.py.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from allmende.coordinator.store import migrate
from allmende.coordinator.store import schema as t
from allmende.coordinator.store.admin_sql import COORDINATOR_META, AdminQueries
from allmende.coordinator.store.datasets_sql import DatasetQueries
from allmende.coordinator.store.engine import backend_of, make_engine, safe_url
from allmende.coordinator.store.gold_sql import GoldQueries
from allmende.coordinator.store.jobs_sql import JobQueries
from allmende.coordinator.store.leasing_sql import LeaseQueries
from allmende.coordinator.store.lookup_sql import LookupQueries
from allmende.coordinator.store.models_sql import ModelQueries
from allmende.coordinator.store.nonces_sql import NonceQueries
from allmende.coordinator.store.results_sql import ResultQueries
from allmende.coordinator.store.trust_sql import TrustQueries
from allmende.coordinator.store.verdicts_sql import VerdictQueries
from allmende.coordinator.store.volunteers_sql import VolunteerQueries
from allmende.protocol.errors import FailedPrecondition

log = logging.getLogger("allmende.coordinator.store")

__all__ = ["SqlStore", "backend_of", "make_engine", "open_store", "safe_url"]


class SqlStore(
    DatasetQueries,
    JobQueries,
    VolunteerQueries,
    LeaseQueries,
    ResultQueries,
    AdminQueries,
    LookupQueries,
    TrustQueries,
    GoldQueries,
    NonceQueries,
    VerdictQueries,
    ModelQueries,
):
    """`Store` over SQLAlchemy Core. Each public method is one transaction."""

    def __init__(self, engine: Engine, serialise_writes: bool = False) -> None:
        super().__init__(engine, serialise_writes)
        # Jobs claimed by this process (DatasetQueries.claim_job; SQLite only).
        self._claims = set()
        self._claims_lock = threading.Lock()
        try:
            with self._tx() as conn:
                self.revision = migrate.upgrade(conn.sa)
        except BaseException:
            self.release_connections()
            engine.dispose()
            raise

    def close(self) -> None:
        try:
            self.flush_nonces()
        except Exception:  # closing anyway; a claim lost here only reopens an answered call
            log.exception("writing the last claimed nonces failed")
        self.release_connections()
        self.engine.dispose()

    # ------------------------------------------------------------------ the coordinator

    def bound_coordinator(self) -> str | None:
        """The fingerprint of the coordinator key this database serves, once bound."""
        m = t.meta
        with self._read() as conn:
            value = conn.execute(select(m.c.value).where(m.c.key == COORDINATOR_META)).scalar()
        return None if value is None else str(value)

    def bind_coordinator(self, fingerprint: str) -> None:
        """Tie the database to one coordinator key, or refuse a different one.

        Units are signed with the key of the coordinator that planned them and volunteers pin
        one fingerprint, so replicas on one database must share one data folder (key, admin
        token, datasets); a second `coordinator init` pointed at the same database would not.
        """
        m = t.meta
        dialect_insert = postgresql.insert if self.postgres else sqlite.insert
        with self._tx() as conn:
            conn.execute(
                dialect_insert(m)
                .values(key=COORDINATOR_META, value=fingerprint)
                .on_conflict_do_nothing(index_elements=[m.c.key])
            )
            have = conn.execute(select(m.c.value).where(m.c.key == COORDINATOR_META)).scalar_one()
        if have != fingerprint:
            raise FailedPrecondition(
                f"this database serves the coordinator with key {have[:16]}..., not this data "
                f"folder's {fingerprint[:16]}...: coordinators sharing a database must share "
                "one data folder (its key, admin token and datasets)"
            )

    # ------------------------------------------------------------------ events

    def add_event(
        self,
        now_ms: int,
        kind: str,
        message: str,
        job_id: str = "",
        unit_id: str = "",
        volunteer_id: str = "",
    ) -> None:
        with self._tx() as conn:
            self._event(conn, now_ms, kind, message, job_id, unit_id, volunteer_id)

    def recent_events(self, limit: int) -> list[tuple[int, str, str, str, str, str]]:
        e = t.events
        with self._read() as conn:
            rows = conn.execute(
                select(e.c.ts_ms, e.c.kind, e.c.job_id, e.c.unit_id, e.c.volunteer_id, e.c.message)
                .order_by(e.c.event_id.desc())
                .limit(limit)
            ).all()
        return [tuple(r) for r in reversed(rows)]


def open_store(url: str, pool_size: int = 24) -> SqlStore:
    """Open the store at a database URL, creating or migrating its schema to this code's.

    `sqlite:///PATH` (or `sqlite://` in memory) is the embedded default; `postgresql://...`
    lets several coordinator processes serve from one database. `pool_size` is the number
    of database connections kept (up to twice that under load): one per RPC worker thread.
    """
    try:
        return SqlStore(make_engine(url, pool_size), serialise_writes=backend_of(url) == "sqlite")
    except DBAPIError as exc:  # unreachable server, wrong credentials, unwritable file
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise FailedPrecondition(f"cannot open the database {safe_url(url)}: {reason}") from None
