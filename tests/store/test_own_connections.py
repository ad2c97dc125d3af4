"""On PostgreSQL each thread keeps its own connection (SqlBase._own): kept between calls,
ended with its thread, and replaced when it broke or was left inside a transaction."""

from __future__ import annotations

import contextlib
import gc
import threading

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from allmende.coordinator.store.records import VolunteerRecord
from allmende.coordinator.store.sql import SqlStore
from tests.store.helpers import T0


def backend_pid(store: SqlStore) -> int:
    with store._read() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar())


def test_each_thread_keeps_one_connection_until_it_ends(pg_store: SqlStore) -> None:
    mine = backend_pid(pg_store)
    with pg_store._tx() as conn:  # transactions and reads share it
        conn.execute(text("SELECT 1"))
        assert int(conn.execute(text("SELECT pg_backend_pid()")).scalar()) == mine
    assert backend_pid(pg_store) == mine
    theirs: list[int] = []
    done = threading.Event()
    finish = threading.Event()

    def worker() -> None:
        theirs.extend([backend_pid(pg_store), backend_pid(pg_store)])
        done.set()
        finish.wait(timeout=10)

    thread = threading.Thread(target=worker)
    thread.start()
    assert done.wait(timeout=10)
    assert theirs[0] == theirs[1] != mine
    assert pg_store.engine.pool.checkedout() == 2
    finish.set()
    thread.join(timeout=10)
    gc.collect()
    assert pg_store.engine.pool.checkedout() == 1  # the worker's went back with its thread
    pg_store.release_connections()
    assert pg_store.engine.pool.checkedout() == 0


def test_a_connection_the_server_ended_is_replaced(pg_store: SqlStore, postgres_url: str) -> None:
    pid = backend_pid(pg_store)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # The call that finds it gone fails (as a pooled connection's would); the next works.
    with contextlib.suppress(DBAPIError):
        pg_store.get_volunteer("v1")
    assert pg_store.get_volunteer("v1") is not None
    assert backend_pid(pg_store) != pid
    pg_store.put_volunteer(VolunteerRecord("v9", b"\x09" * 32, "nine", "0.1", "cpu", T0))
    assert pg_store.get_volunteer("v9") is not None


def test_a_connection_left_inside_a_transaction_is_not_reused(
    pg_store: SqlStore, postgres_url: str
) -> None:
    """What a transaction left open wrote (its rollback failed, say) is never committed
    by the next call on that thread."""
    with pg_store._own() as sa:
        stuck = sa.connection.dbapi_connection
        assert stuck is not None
        cursor = stuck.cursor()
        cursor.execute("BEGIN")  # and never ended
        cursor.execute("UPDATE volunteers SET display_name = 'stuck' WHERE volunteer_id = 'v1'")
    pg_store.put_volunteer(VolunteerRecord("v9", b"\x09" * 32, "nine", "0.1", "cpu", T0))
    with psycopg.connect(postgres_url) as other:
        names = dict(other.execute("SELECT volunteer_id, display_name FROM volunteers").fetchall())
    assert names["v9"] == "nine" and names["v1"] == "name v1"
