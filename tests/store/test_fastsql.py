"""The fast path for prebuilt statements (store/fastsql.py) answers exactly as SQLAlchemy
would, on every backend: same rows, same column names, same errors, same transaction."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.fastsql import Rows, prebuilt
from allmende.coordinator.store.sql import SqlStore, open_store
from allmende.coordinator.store.statements import COUNT_LEASE, REPUTATION, Q
from tests.store.helpers import T0, add_volunteers, make_job


def test_prebuilt_reads_match_sqlalchemy_row_for_row(store: SqlStore) -> None:
    unit_id = make_job(store)[0]
    job_id = "job-a"
    cases = [
        (Q.volunteer, {"volunteer_id": "v2"}),
        (Q.job, {"job_id": job_id}),
        (Q.unit, {"unit_id": unit_id}),
        (Q.running_jobs, {"fetch_urls": 0}),
    ]
    for statement, params in cases:
        with store._read() as conn:
            fast = conn.execute(statement, params)
            assert isinstance(fast, Rows), f"{statement} left the fast path"
            got = fast.all()
            want = conn.sa.execute(statement, params).all()
        assert got, f"{statement} found nothing"
        assert [tuple(r) for r in got] == [tuple(r) for r in want]
        assert [r._fields for r in got] == [tuple(r._fields) for r in want]


def test_reputation_bump_adds_resets_and_creates_in_one_statement(store: SqlStore) -> None:
    with store._tx() as conn:
        store._bump(conn, "v1", "embed-text", T0, consecutive_valid=1, valid=1, credit=40)
        store._bump(conn, "v1", "embed-text", T0 + 1, consecutive_valid=1, valid=1, credit=2)
    rep = store.get_reputation("v1")["embed-text"]
    assert (rep.consecutive_valid, rep.valid, rep.credit) == (2, 2, 42)
    with store._tx() as conn:
        store._bump(conn, "v1", "embed-text", T0 + 2, consecutive_valid=-1, disagreements=1)
        store._bump(conn, "v2", "embed-text", T0 + 2, consecutive_valid=-1, faults=1)
    rep = store.get_reputation("v1")["embed-text"]
    assert (rep.consecutive_valid, rep.valid, rep.disagreements) == (0, 2, 1)
    fresh = store.get_reputation("v2")["embed-text"]
    assert (fresh.consecutive_valid, fresh.faults, fresh.valid) == (0, 1, 0)
    with store._read() as conn:
        rows = conn.execute(REPUTATION, {"volunteer_id": "v1"}).all()
    assert [row.updated_ms for row in rows] == [T0 + 2]


def orphan_lease(lease_id: str) -> dict[str, object]:
    """A lease of a unit that does not exist: its foreign key refuses it."""
    return {
        "lease_id": lease_id,
        "unit_id": "no-such-unit",
        "volunteer_id": "v1",
        "state": "active",
        "created_ms": T0,
        "deadline_ms": T0 + 1,
        "reason": "",
        "address": "",
        "unit_sha256": None,
        "composition": None,
        "gold_ids": "",
    }


def test_a_refused_statement_raises_sqlalchemys_error_and_rolls_back(store: SqlStore) -> None:
    with pytest.raises(IntegrityError), store._tx() as conn:
        conn.execute(Q.add_event, {"ts_ms": T0, "kind": "k", "message": "m"})
        conn.execute(Q.add_lease, orphan_lease("l1"))  # foreign key
    with store._read() as conn:
        assert conn.execute(select(t.events.c.kind).where(t.events.c.kind == "k")).all() == []
        assert conn.execute(Q.lease, {"lease_id": "l1"}).first() is None


def test_statements_the_fast_path_cannot_run_go_through_sqlalchemy(store: SqlStore) -> None:
    v = t.volunteers
    expanding = prebuilt(select(v.c.volunteer_id).where(v.c.volunteer_id.in_(["v1", "v3"])))
    with store._read() as conn:
        result = conn.execute(expanding)
        assert not isinstance(result, Rows)
        assert sorted(result.scalars().all()) == ["v1", "v3"]


def test_kept_connections_see_every_commit_and_close_with_the_store(shared_url: str) -> None:
    """A SQLite file store keeps one connection per reading thread: each read must still see
    what other threads committed since (no snapshot left open on a kept connection)."""
    store = open_store(shared_url)
    add_volunteers(store)
    seen: list[bool] = []
    asked, answered = threading.Event(), threading.Event()

    def reader() -> None:
        for _ in range(2):
            asked.wait(timeout=10)
            asked.clear()
            record = store.get_volunteer("v1")
            assert record is not None
            seen.append(record.banned)
            store.recent_events(5)  # a statement SQLAlchemy runs, on the same connection
            answered.set()

    thread = threading.Thread(target=reader)
    thread.start()
    asked.set()
    assert answered.wait(timeout=10)
    answered.clear()
    store.set_banned("v1", True, "test", T0)
    asked.set()
    assert answered.wait(timeout=10)
    thread.join(timeout=10)
    assert seen == [False, True]
    store.close()
    reopened = open_store(shared_url)
    assert reopened.get_volunteer("v1") is not None
    reopened.close()


# ------------------------------------------------------------------ deferred writes


def _events(store: SqlStore, kind: str) -> list[str]:
    with store._read() as conn:
        return list(
            conn.execute(select(t.events.c.message).where(t.events.c.kind == kind)).scalars()
        )


def test_deferred_writes_keep_their_order_and_commit_with_the_transaction(
    store: SqlStore,
) -> None:
    with store._tx() as conn:
        conn.defer(Q.add_event, {"ts_ms": T0, "kind": "deferred", "message": "first"})
        conn.defer(COUNT_LEASE, {"b_volunteer": "v1", "day": 7})
        # A later read in the same transaction sees them: they went first.
        seen = conn.execute(Q.volunteer, {"volunteer_id": "v1"}).first()
        assert (seen.quota_day, seen.leased_today) == (7, 1)
        conn.defer(Q.add_event, {"ts_ms": T0, "kind": "deferred", "message": "second"})
        # A statement SQLAlchemy runs also comes after them.
        messages = conn.execute(
            select(t.events.c.message).where(t.events.c.kind == "deferred")
        ).scalars()
        assert sorted(messages) == ["first", "second"]
        conn.defer(Q.add_event, {"ts_ms": T0, "kind": "deferred", "message": "last"})
    assert sorted(_events(store, "deferred")) == ["first", "last", "second"]


def test_deferred_writes_of_a_failed_transaction_are_undone(store: SqlStore) -> None:
    with pytest.raises(RuntimeError), store._tx() as conn:
        conn.defer(Q.add_event, {"ts_ms": T0, "kind": "undone", "message": "sent"})
        conn.execute(Q.volunteer, {"volunteer_id": "v1"}).first()
        conn.defer(Q.add_event, {"ts_ms": T0, "kind": "undone", "message": "held"})
        raise RuntimeError("the use case failed")
    assert _events(store, "undone") == []


def test_a_deferred_write_the_database_refuses_fails_the_commit_and_changes_nothing(
    store: SqlStore,
) -> None:
    with pytest.raises(IntegrityError), store._tx() as conn:
        conn.defer(Q.add_event, {"ts_ms": T0, "kind": "refused", "message": "before"})
        conn.defer(
            Q.add_lease, orphan_lease("l-orphan")
        )  # foreign key: raised at the latest by the commit
        conn.defer(Q.add_event, {"ts_ms": T0, "kind": "refused", "message": "after"})
    assert _events(store, "refused") == []
    with store._read() as conn:
        assert conn.execute(Q.lease, {"lease_id": "l-orphan"}).first() is None
    # The connection went back to the pool in a usable state.
    with store._tx() as conn:
        conn.defer(Q.add_event, {"ts_ms": T0, "kind": "refused", "message": "next"})
    assert _events(store, "refused") == ["next"]


def test_deferred_writes_reach_postgresql_only_with_the_next_statement(
    postgres_url: str,
) -> None:
    """Held back, not sent: until the transaction's next statement, another session can
    still lock the row a deferred update will write."""
    store = open_store(postgres_url)
    add_volunteers(store)
    other = store.engine.connect()
    try:
        probe = "SELECT 1 FROM volunteers WHERE volunteer_id = 'v1' FOR UPDATE NOWAIT"
        with store._tx() as conn:
            conn.defer(COUNT_LEASE, {"b_volunteer": "v1", "day": 9})
            with other.begin():
                other.exec_driver_sql(probe)  # not yet written: the lock is free
            conn.execute(Q.job, {"job_id": "none"}).first()
            with pytest.raises(OperationalError), other.begin():
                other.exec_driver_sql(probe)  # now the update holds it
        with store._read() as conn:
            assert conn.execute(Q.volunteer, {"volunteer_id": "v1"}).first().quota_day == 9
    finally:
        other.close()
        store.close()


def test_statements_run_together_answer_in_order_each_after_the_last(store: SqlStore) -> None:
    with store._tx() as conn:
        conn.defer(COUNT_LEASE, {"b_volunteer": "v2", "day": 3})
        missing, v1, v2 = conn.execute_all(
            [
                (Q.volunteer, {"volunteer_id": "nobody"}),
                (Q.volunteer, {"volunteer_id": "v1"}),
                (Q.volunteer, {"volunteer_id": "v2"}),
            ]
        )
        assert missing.first() is None
        assert v1.first().volunteer_id == "v1"
        assert v2.first().quota_day == 3  # the deferred write went before them


def test_a_postgresql_transaction_that_ran_nothing_or_failed_leaves_a_clean_connection(
    postgres_url: str,
) -> None:
    """The BEGIN travels with a transaction's first statement: a transaction that ran none
    sends nothing, and one that failed is rolled back before its connection is reused."""
    store = open_store(postgres_url)
    add_volunteers(store)
    try:
        with store._tx():
            pass
        with pytest.raises(RuntimeError), store._tx() as conn:
            conn.defer(COUNT_LEASE, {"b_volunteer": "v1", "day": 4})
            conn.execute(Q.volunteer, {"volunteer_id": "v1"}).first()
            raise RuntimeError("the use case failed")
        for _ in range(3):  # whichever pooled connection comes next is outside a transaction
            with store._tx() as conn:
                row = conn.execute(Q.volunteer, {"volunteer_id": "v1"}).first()
                assert row.quota_day != 4
                status = conn.execute(text("SELECT txid_current_if_assigned()"))
                assert status.scalar() is None  # nothing written yet in this transaction
    finally:
        store.close()
