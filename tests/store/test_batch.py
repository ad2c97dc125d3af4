"""`SqlBase.batch()` (store/sql_base.py). On SQLite (file and memory) the store's write
transactions and reads on one thread are joined into one transaction, committed once: each
write transaction is a savepoint, undone alone when it fails; reads see the batch's writes;
an error that leaves the block undoes all of it; a nested batch joins the outer one. On
PostgreSQL batch() is a pass-through: each write transaction commits on its own, as outside
a batch. The writes are the store's own (volunteers, jobs, leases, results), not
hand-written SQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from allmende.coordinator.domain.jobs import InputRecord, JobRequest, plan_job, resolve_settings
from allmende.coordinator.store import fastsql
from allmende.coordinator.store import schema as t
from allmende.coordinator.store.records import (
    NewItem,
    NewJob,
    NewUnit,
    ResultRecord,
    UnitRecord,
    Verdict,
    VolunteerRecord,
)
from allmende.coordinator.store.sql import SqlStore, open_store
from allmende.coordinator.store.statements import Q
from allmende.protocol.models import DEFAULT_MODEL, ModelRegistry
from tests.store.helpers import (
    KEY,
    LEASE_S,
    T0,
    add_volunteers,
    lease,
    make_job,
    slots_out_of_step,
    submit,
)


class JudgeFailed(RuntimeError):
    pass


def failing_judge(unit: UnitRecord, results: list[ResultRecord]) -> Verdict:
    """Raised after submit_result wrote the result and closed the lease."""
    raise JudgeFailed(f"no verdict for {unit.unit_id} ({len(results)} result(s))")


def newcomer(volunteer_id: str) -> VolunteerRecord:
    return VolunteerRecord(
        volunteer_id, volunteer_id.encode().ljust(32, b"-"), volunteer_id, "0.1", "cpu", T0
    )


def planned(job_id: str) -> tuple[NewJob, list[NewUnit], list[NewItem]]:
    """A job as make_job plans it, not yet stored."""
    req = JobRequest(model=DEFAULT_MODEL, unit_size=2, redundancy=2, lease_seconds=LEASE_S)
    settings = resolve_settings(req, ModelRegistry())
    records = [InputRecord(f"{job_id}-{i}", f"{job_id} text {i}", i + 1) for i in range(4)]
    return plan_job(job_id, req, settings, records, KEY, T0)


def clash(store: SqlStore) -> None:
    """create_job for a new job whose units clash with job-a's: the jobs row is written,
    then the units insert fails in the database (on PostgreSQL, aborting the transaction
    or the savepoint it ran in)."""
    job, units, items = planned("job-a")
    store.create_job(replace(job, job_id="job-clash"), units, items)


def results_of(store: SqlStore) -> list[tuple[str, str]]:
    r = t.results
    with store.engine.connect() as conn:
        rows = conn.execute(select(r.c.lease_id, r.c.volunteer_id).order_by(r.c.lease_id))
        return [(row.lease_id, row.volunteer_id) for row in rows]


def job_rows(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.jobs)).scalar_one())


@contextmanager
def commits(store: SqlStore) -> Iterator[list[object]]:
    """The database transactions the store commits while the block runs."""
    seen: list[object] = []

    def on_commit(conn: Any) -> None:
        seen.append(conn)

    event.listen(store.engine, "commit", on_commit)
    try:
        yield seen
    finally:
        event.remove(store.engine, "commit", on_commit)


# The backends that batch: direct parametrisation of the conftest's db_url / shared_url.
on_sqlite = pytest.mark.parametrize("db_url", ["sqlite-file", "sqlite-memory"], indirect=True)
on_sqlite_file = pytest.mark.parametrize("shared_url", ["sqlite-file"], indirect=True)


# ------------------------------------------------------------------ savepoints (SQLite)


@on_sqlite
def test_a_failing_write_is_undone_alone_and_the_rest_commits_once(store: SqlStore) -> None:
    make_job(store)
    first, second = lease(store, "v1"), lease(store, "v2")
    assert first is not None and second is not None
    assert first[1] == second[1]  # two replicas of the first unit
    with commits(store) as committed, store.batch():
        store.put_volunteer(newcomer("b1"))
        with pytest.raises(JudgeFailed):
            submit(store, *first, "v1", judge=failing_judge)
        with pytest.raises(IntegrityError):
            clash(store)  # and the transaction goes on after a database error
        assert submit(store, *second, "v2").status == "pending"
        store.put_volunteer(newcomer("b2"))
        assert committed == []
    assert len(committed) == 1
    for vid in ("b1", "b2"):
        assert store.get_volunteer(vid) is not None
    # the failed submission left no result and its lease open; the clashing job is gone
    assert results_of(store) == [(second[0], "v2")]
    lease_1, lease_2 = store.get_lease(first[0]), store.get_lease(second[0])
    assert lease_1 is not None and lease_1.state == "active"
    assert lease_2 is not None and lease_2.state == "submitted"
    assert store.get_job("job-clash") is None and job_rows(store) == 1
    assert slots_out_of_step(store) == {}
    # the lease the failure left open still takes its result
    assert submit(store, *first, "v1").status == "accepted"


# ------------------------------------------------------------------ an error leaving the block


@on_sqlite
@pytest.mark.parametrize("failure", ["raised in the block", "in python", "in the database"])
def test_an_error_leaving_the_batch_undoes_all_of_it(store: SqlStore, failure: str) -> None:
    """Raised by the block itself, or by a write transaction (its savepoint undone) and not
    caught: everything the batch wrote before it is undone too, and nothing is committed."""
    make_job(store)
    first, second = lease(store, "v1"), lease(store, "v2")
    assert first is not None and second is not None
    taken: list[str] = []
    with commits(store) as committed:
        with (
            pytest.raises((ValueError, JudgeFailed, IntegrityError)),
            store.batch(),
        ):
            store.put_volunteer(newcomer("b1"))
            assert submit(store, *second, "v2").status == "pending"
            got = lease(store, "v3")
            assert got is not None
            taken.append(got[0])
            if failure == "in python":
                submit(store, *first, "v1", judge=failing_judge)
            elif failure == "in the database":
                clash(store)
            else:
                raise ValueError("leaving the block")
            pytest.fail("the failure did not raise")
        assert committed == []
    assert store.get_volunteer("b1") is None
    assert taken and store.get_lease(taken[0]) is None
    assert results_of(store) == []
    lease_2 = store.get_lease(second[0])
    assert lease_2 is not None and lease_2.state == "active"
    record = store.get_volunteer("v3")
    assert record is not None and record.leased_today == 0
    assert job_rows(store) == 1
    assert slots_out_of_step(store) == {}
    # and the store works on as before
    assert submit(store, *first, "v1").status == "pending"


# ------------------------------------------------------------------ reads


@on_sqlite
def test_reads_in_a_batch_see_its_writes(store: SqlStore) -> None:
    unit_ids = make_job(store)
    with commits(store) as committed, store.batch():
        store.put_volunteer(newcomer("b1"))
        record = store.get_volunteer("b1")
        assert record is not None and record.display_name == "b1"
        taken = lease(store, "b1")
        assert taken is not None and taken[1] == unit_ids[0]
        got = store.get_lease(taken[0])
        assert got is not None and (got.volunteer_id, got.state) == ("b1", "active")
        assert submit(store, *taken, "b1").status == "pending"
        got = store.get_lease(taken[0])
        assert got is not None and got.state == "submitted"
        # a second lease in the batch sees the first: never the same unit twice
        again = lease(store, "b1")
        assert again is not None and again[1] == unit_ids[1]
        assert committed == []  # what the reads saw was not yet committed
    assert results_of(store) == [(taken[0], "b1")]


@on_sqlite_file
def test_other_connections_see_a_batch_only_when_it_ends(shared_url: str) -> None:
    store = open_store(shared_url)
    other = open_store(shared_url)  # as another coordinator process would
    try:
        add_volunteers(store)
        make_job(store)
        from_thread: list[Any] = []

        def look() -> None:  # another thread of the same store is not in the batch
            from_thread.append(store.get_volunteer("b1"))

        with store.batch():
            store.put_volunteer(newcomer("b1"))
            taken = lease(store, "v1")
            assert taken is not None
            assert store.get_volunteer("b1") is not None
            reader = threading.Thread(target=look)
            reader.start()
            reader.join(timeout=10)
            assert from_thread == [None]
            assert other.get_volunteer("b1") is None
            assert other.get_lease(taken[0]) is None
        look()
        assert from_thread[-1] is not None
        assert other.get_volunteer("b1") is not None
        got = other.get_lease(taken[0])
        assert got is not None and got.state == "active"
    finally:
        other.close()
        store.close()


# ------------------------------------------------------------------ nesting


@on_sqlite
def test_a_nested_batch_joins_the_outer_one(store: SqlStore) -> None:
    make_job(store)
    first = lease(store, "v1")
    assert first is not None
    with commits(store) as committed:
        with store.batch():
            store.put_volunteer(newcomer("b1"))
            with store.batch():  # joins: its writes are the outer batch's savepoints
                store.put_volunteer(newcomer("b2"))
                with pytest.raises(JudgeFailed):
                    submit(store, *first, "v1", judge=failing_judge)
            assert committed == []  # the nested block's end committed nothing
            assert store.get_volunteer("b2") is not None
        assert len(committed) == 1
    assert store.get_volunteer("b1") is not None and store.get_volunteer("b2") is not None
    assert results_of(store) == []
    # an error leaving the outer block undoes what the nested one wrote
    with pytest.raises(ValueError), store.batch():
        with store.batch():
            store.put_volunteer(newcomer("b3"))
        raise ValueError("leaving the outer block")
    assert store.get_volunteer("b3") is None
    # after a batch, writes are their own transactions again
    with commits(store) as committed:
        store.put_volunteer(newcomer("b4"))
        store.put_volunteer(newcomer("b5"))
    assert len(committed) == 2


# ------------------------------------------------------------------ PostgreSQL: a pass-through


def test_on_postgresql_a_batch_is_a_pass_through(postgres_url: str) -> None:
    """Each write transaction in the block commits when its own call returns, visible to
    other connections at once; a failing one is undone alone; an error leaving the block,
    or a nested block, undoes nothing that was written before it."""
    store = open_store(postgres_url)
    other = open_store(postgres_url)  # as another coordinator process would
    try:
        add_volunteers(store)
        make_job(store)
        first = lease(store, "v1")
        assert first is not None
        # Committed at once: another coordinator sees each write while the block runs.
        with pytest.raises(ValueError, match="leaving"), store.batch():
            store.put_volunteer(newcomer("b1"))
            assert other.get_volunteer("b1") is not None
            taken = lease(store, "v2")
            assert taken is not None
            got = other.get_lease(taken[0])
            assert got is not None and got.state == "active"
            with pytest.raises(JudgeFailed):  # undone alone, as outside a batch
                submit(store, *first, "v1", judge=failing_judge)
            with store.batch():  # nested: a pass-through too
                store.put_volunteer(newcomer("b2"))
            assert other.get_volunteer("b2") is not None
            raise ValueError("leaving the block")
        for vid in ("b1", "b2"):
            assert store.get_volunteer(vid) is not None
        got = store.get_lease(taken[0])
        assert got is not None and got.state == "active"
        assert results_of(store) == []
        lease_1 = store.get_lease(first[0])
        assert lease_1 is not None and lease_1.state == "active"
        assert slots_out_of_step(store) == {}
        assert submit(store, *first, "v1").status == "pending"
    finally:
        other.close()
        store.close()


# ------------------------------------------------------------------ the fast path's parameters


def test_fast_path_parameters_are_sqlalchemys_for_the_statements_a_batch_runs(
    store: SqlStore,
) -> None:
    """Each plan computes its statement's parameters itself (store/fastsql.py `sources`);
    they must be exactly what SQLAlchemy's construct_params makes of the same input."""
    make_job(store)
    with store.batch():
        store.put_volunteer(newcomer("b1"))
        for volunteer in ("v1", "v2"):
            taken = lease(store, volunteer)
            assert taken is not None
            submit(store, *taken, volunteer)
        store.get_volunteer("b1")
    dialect = store.engine.dialect.name
    used = [Q.volunteer, Q.lease_answered, Q.add_result, Q.lease_submitted, Q.update_unit]
    plans = {
        (statement_id, keys): plan
        for (statement_id, name, keys), plan in fastsql._PLANS.items()
        if name == dialect and plan is not None
    }
    for statement in used:
        mine = [p for (sid, _), p in plans.items() if sid == id(statement)]
        assert mine, f"{statement} did not run on the fast path"
        assert all(p.checked and p.sources is not None for p in mine), statement
    for (_, keys), plan in plans.items():
        # a plan whose first run disagreed with SQLAlchemy falls back to it: none may
        assert not (plan.checked and plan.sources is None), plan.sql
        if plan.sources is None:
            continue
        params = {key: f"value of {key}" for key in keys}
        ours = {
            name: params[key] if key is not None else const for name, key, const in plan.sources
        }
        assert ours == plan.compiled.construct_params(params, _check=True), plan.sql
