"""What every part of the SQL store builds on: its engine, transactions, reads and event log.

`SqlStore` (sql.py) is composed of mixins, one per concern (jobs_sql.py, leasing_sql.py and
the rest), and each of them is a `SqlBase`; this module also turns the rows they read into
records.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from allmende.coordinator.store.engine import READ_INFO, WRITE_INFO
from allmende.coordinator.store.fastsql import Conn
from allmende.coordinator.store.nonce_statements import NONCE_INSERT
from allmende.coordinator.store.records import JobRecord, JobSettings, UnitRecord
from allmende.coordinator.store.statements import Q
from allmende.protocol.errors import Unavailable

log = logging.getLogger("allmende.coordinator.store")
# SQLSTATEs of transactions PostgreSQL aborted to resolve a conflict: deadlock_detected,
# serialization_failure.
_CONFLICTS = frozenset({"40P01", "40001"})
_BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"
_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE: no transaction open on the connection


class SqlBase:
    """An engine, and the write transactions, single reads and events every query runs in."""

    def __init__(self, engine: Engine, serialise_writes: bool = False) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.batch_is_one_transaction = not self.postgres  # see batch()
        # SQLite allows one writer; a process-wide lock keeps threads from queueing in
        # SQLite's busy handler, which is slower and unfair.
        self._write_lock = threading.Lock() if serialise_writes else None
        # Single-statement reads skip the transaction: autocommit on PostgreSQL (no BEGIN
        # and ROLLBACK round trips), no BEGIN on SQLite.
        self._reader = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self.postgres else engine
        )
        # A SQLite file keeps its connections: one for the writer (there is only ever one at
        # a time) and one per reading thread. Checking a connection out of the pool and back
        # cost more than most of the statements run on it.
        self._hold = serialise_writes and engine.url.database not in (None, "", ":memory:")
        self._held: list[Connection] = []
        self._held_lock = threading.Lock()
        self._writer: Connection | None = None
        self._readers = threading.local()
        self._batch = threading.local()  # .conn: see batch()
        # PostgreSQL: each thread keeps a connection in autocommit mode (see _own).
        self._own_local = threading.local()
        self._owned: weakref.WeakSet[_Owned] = weakref.WeakSet()
        # SQLite: nonces of signed requests claimed, written with the next write transaction
        # (nonces_sql.py): {(volunteer_id, nonce): expires_ms}
        self._pending_nonces: dict[tuple[str, str], int] = {}
        self._nonce_lock = threading.Lock()

    def _keep(self, conn: Connection) -> Connection:
        with self._held_lock:
            self._held.append(conn)
        return conn

    def release_connections(self) -> None:
        """Close the connections kept for the writer and the reading threads (SQLite), and
        each thread's own (PostgreSQL)."""
        with self._held_lock:
            held, self._held = self._held, []
            owned, self._owned = list(self._owned), weakref.WeakSet()
        self._writer = None
        self._readers = threading.local()
        self._own_local = threading.local()
        for conn in held:
            conn.close()
        for own in owned:
            own.close()

    @contextmanager
    def _own(self) -> Iterator[Connection]:
        """PostgreSQL: this thread's own connection, in autocommit mode, kept between calls.
        A checkout from SQLAlchemy's pool and back (the isolation level set and reset each
        time) cost more CPU than some of the calls made on it; under load CPU is what the
        coordinator's threads queue for.

        A connection that broke, or that was left in a transaction, is replaced. A call
        made while the thread's connection is in use (a read inside a transaction) gets one
        from the pool. The connection is closed when its thread ends, or by
        release_connections()."""
        local = self._own_local
        if getattr(local, "busy", False):
            with self._reader.connect() as sa:
                yield sa
            return
        own: _Owned | None = getattr(local, "own", None)
        if own is None or not own.usable():
            if own is not None:
                own.close()
            own = local.own = _Owned(self._reader.connect())
            with self._held_lock:
                self._owned.add(own)
        local.busy = True
        try:
            yield own.conn
        finally:
            local.busy = False

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run what this thread writes and reads in the block as one transaction, committed
        once at the end (one commit for a call that leases or submits several units).

        Each write transaction inside is a savepoint: one that fails is undone alone and its
        error raised, the others stay. Reads in the block see its writes. An error that
        leaves the block undoes everything in it.

        On SQLite only. On PostgreSQL each write keeps its own transaction: one holding the
        locks of several units, their job and reputation rows until the end of a batch
        deadlocks with the batches of other sessions and coordinators."""
        if self.postgres or getattr(self._batch, "conn", None) is not None:  # or in one
            yield
            return
        with self._tx() as conn:
            self._batch.conn = conn
            try:
                yield
            finally:
                self._batch.conn = None

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        """One write transaction: committed when the block ends, rolled back on error.

        A transaction PostgreSQL rolled back to break a deadlock or a serialisation
        conflict with another coordinator changed nothing: it is reported as Unavailable,
        which clients retry. Inside `batch()` it is part of the batch's transaction."""
        outer: Conn | None = getattr(self._batch, "conn", None)
        if outer is not None:
            with outer.savepoint():
                yield outer
            return
        try:
            if self.postgres:
                # In autocommit mode, so that psycopg sends no BEGIN of its own: the Conn
                # sends it with the first statement, saving a round trip per transaction.
                with self._own() as sa:
                    conn = Conn(sa, begin=_BEGIN)
                    try:
                        yield conn
                        conn.commit()
                    except BaseException:
                        conn.rollback()
                        raise
                return
            if self._write_lock is None:
                with self.engine.begin() as sa:
                    conn = Conn(sa)
                    written = self._write_nonces(conn)
                    yield conn
                    conn.commit()
                self._nonces_written(written)
                return
            with self._write_lock:
                if self._hold:
                    if self._writer is None:
                        self._writer = self._keep(self.engine.connect())
                    with self._write_transaction(self._writer) as conn:
                        written = self._write_nonces(conn)
                        yield conn
                    self._nonces_written(written)
                    return
                with self.engine.connect() as fresh, self._write_transaction(fresh) as conn:
                    written = self._write_nonces(conn)
                    yield conn
                self._nonces_written(written)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) in _CONFLICTS:
                log.warning("transaction rolled back by the database: %s", exc.orig)
                raise Unavailable(
                    "the database rolled back a conflict with another request; try again"
                ) from exc
            raise

    def _write_nonces(self, conn: Conn) -> dict[tuple[str, str], int]:
        """SQLite: insert the nonces claimed since the last write transaction into this one,
        so that they commit with the effects of the requests that carried them (a request
        that changed anything is never replayable after a crash). Returns what it wrote,
        which stays pending until the commit (a rollback leaves it for the next one)."""
        with self._nonce_lock:
            pending = dict(self._pending_nonces)
        if pending:
            conn.execute(
                NONCE_INSERT,
                [{"volunteer_id": v, "nonce": n, "expires_ms": e} for (v, n), e in pending.items()],
            )
        return pending

    def _nonces_written(self, written: dict[tuple[str, str], int]) -> None:
        if written:
            with self._nonce_lock:
                for key in written:
                    self._pending_nonces.pop(key, None)

    @staticmethod
    @contextmanager
    def _write_transaction(conn: Connection) -> Iterator[Conn]:
        conn.info[WRITE_INFO] = True  # SQLite: BEGIN IMMEDIATE (engine.py)
        try:
            with conn.begin():
                held = Conn(conn)
                yield held
                held.commit()
        finally:
            conn.info.pop(WRITE_INFO, None)

    @contextmanager
    def _read(self) -> Iterator[Conn]:
        """A connection for one read statement, outside any transaction (inside `batch()`,
        the batch's own, which sees what the batch wrote)."""
        outer: Conn | None = getattr(self._batch, "conn", None)
        if outer is not None:
            yield outer
            return
        if self._hold:
            conn = getattr(self._readers, "conn", None)
            if conn is None:
                conn = self._readers.conn = self._keep(self._reader.connect())
                conn.info[READ_INFO] = True
            try:
                yield Conn(conn)
            finally:
                if conn.in_transaction():  # SQLAlchemy's own bookkeeping; no BEGIN was sent
                    conn.rollback()
            return
        if self.postgres:
            with self._own() as conn:
                yield Conn(conn)
            return
        with self._reader.connect() as conn:
            conn.info[READ_INFO] = True
            try:
                yield Conn(conn)
            finally:
                conn.info.pop(READ_INFO, None)

    def _event(
        self,
        conn: Conn,
        now_ms: int,
        kind: str,
        message: str,
        job_id: str = "",
        unit_id: str = "",
        volunteer_id: str = "",
    ) -> None:
        conn.defer(
            Q.add_event,
            {
                "ts_ms": now_ms,
                "kind": kind,
                "message": message,
                "job_id": job_id,
                "unit_id": unit_id,
                "volunteer_id": volunteer_id,
            },
        )


class _Owned:
    """A thread's own PostgreSQL connection (SqlBase._own), closed with its thread."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._finalizer = weakref.finalize(self, _close_quietly, conn)

    def usable(self) -> bool:
        """Open, not invalidated, and outside any transaction."""
        if self.conn.closed or self.conn.invalidated:
            return False
        raw: Any = self.conn.connection.dbapi_connection
        return raw is not None and raw.info.transaction_status == _IDLE

    def close(self) -> None:
        self._finalizer()


def _close_quietly(conn: Connection) -> None:
    with suppress(Exception):  # a connection that broke may fail to close cleanly
        conn.close()


def _settings(row: Any) -> JobSettings:
    return JobSettings(
        kind=row.kind,
        model=row.model,
        model_sha256=row.model_sha256,
        dims=row.dims,
        redundancy=row.redundancy,
        unit_size=row.unit_size,
        tau=row.tau,
        max_replicas=row.max_replicas,
        lease_seconds=row.lease_seconds,
        result_dtype=row.result_dtype,
        gold_fraction=row.gold_fraction,
        rule=row.rule,
        license=row.license,
    )


def job_record(row: Any) -> JobRecord:
    return JobRecord(
        job_id=row.job_id,
        name=row.name,
        state=row.state,
        settings=_settings(row),
        source_name=row.source_name,
        items=row.items,
        unique_items=row.unique_items,
        created_ms=row.created_ms,
        completed_ms=row.completed_ms,
        reason=row.reason,
        priority=row.priority,
        fetch_rows=row.fetch_rows,
        url_items=row.url_items,
    )


def unit_record(row: Any) -> UnitRecord:
    return UnitRecord(
        unit_id=row.unit_id,
        job_id=row.job_id,
        seq=row.seq,
        rows=row.rows,
        state=row.state,
        target=row.target,
        blob=row.blob,
        settings=_settings(row),
        quorum=row.quorum,
    )
