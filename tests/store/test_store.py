"""The shared store suite: every test runs against a SQLite file, an in-memory SQLite and a
PostgreSQL database (tests/store/conftest.py); a few need a database that two stores share,
as two coordinator processes would, and run on a SQLite file and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from sqlalchemy import select, text

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.records import ResultRecord, UnitRecord, Verdict, VolunteerRecord
from allmende.coordinator.store.sql import SqlStore, open_store
from allmende.protocol.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from allmende.protocol.wire import open_unit
from tests.store.helpers import (
    KEY,
    LEASE_S,
    T0,
    accept_at_target,
    add_volunteers,
    lease,
    make_job,
    slots_out_of_step,
    submit,
)

# ------------------------------------------------------------------ jobs


def test_create_and_get_job(store: SqlStore) -> None:
    units = make_job(store, texts=5, unit_size=2)
    job = store.get_job("job-a")
    assert job is not None
    assert job.state == "running"
    assert job.items == 5
    assert job.settings.redundancy == 2
    assert [j.job_id for j in store.list_jobs()] == ["job-a"]
    assert store.get_job("nope") is None
    counts = store.job_counts("job-a", T0)
    assert counts.units_total == 3 == len(units)
    assert counts.units_accepted == 0
    unit = store.get_unit(units[0])
    assert unit is not None
    assert unit.state == "open"
    assert unit.target == 2
    assert unit.rows == 2
    assert unit.settings == job.settings


def test_create_job_twice_is_refused_and_changes_nothing(store: SqlStore) -> None:
    make_job(store)
    with pytest.raises(AlreadyExists):
        make_job(store, texts=9)
    job = store.get_job("job-a")
    assert job is not None and job.items == 4
    assert store.job_counts("job-a", T0).units_total == 2


def test_open_store_refuses_other_urls() -> None:
    with pytest.raises(InvalidArgument) as err:
        open_store("mysql://localhost/db")
    assert err.value.field == "database"


def test_state_survives_reopening(shared_url: str) -> None:
    first = open_store(shared_url)
    first.put_volunteer(VolunteerRecord("v1", b"\x00" * 32, "", "", "", T0))
    make_job(first)
    grant = lease(first, "v1")
    first.close()
    again = open_store(shared_url)
    try:
        job = again.get_job("job-a")
        assert job is not None and job.state == "running"
        assert grant is not None
        record = again.get_lease(grant[0])
        assert record is not None and record.state == "active"
    finally:
        again.close()


# ------------------------------------------------------------------ leases


def test_lease_gives_units_in_order_with_a_deadline(store: SqlStore) -> None:
    units = make_job(store)
    grant = store.lease_unit("v1", "L1", T0)
    assert grant is not None
    assert grant.unit_id == units[0]
    assert grant.deadline_ms == T0 + LEASE_S * 1000
    assert open_unit(grant.blob, grant.signature, KEY.public_key).unit_id == units[0]
    record = store.get_lease("L1")
    assert record is not None
    assert (record.unit_id, record.volunteer_id, record.state) == (units[0], "v1", "active")
    assert store.get_lease("nope") is None


def test_a_submission_reads_its_volunteer_and_lease_together(store: SqlStore) -> None:
    units = make_job(store)
    assert store.lease_unit("v1", "L1", T0) is not None
    volunteer, found = store.get_volunteer_and_lease("v1", "L1")
    assert volunteer == store.get_volunteer("v1")
    assert found == store.get_lease_and_unit("L1")
    assert found is not None and found[1].unit_id == units[0]
    assert store.get_volunteer_and_lease("nobody", "L1") == (None, found)
    assert store.get_volunteer_and_lease("v1", "nope") == (volunteer, None)


def test_last_seen_times_are_written_together_and_never_move_back(store: SqlStore) -> None:
    store.touch_volunteers({"v2": T0 + 500, "v1": T0 + 900})
    store.touch_volunteers({"v1": T0 + 100})  # an older note, flushed late elsewhere
    seen = {v.volunteer_id: v.last_seen_ms for v in store.volunteer_stats(T0 + 1000)}
    assert (seen["v1"], seen["v2"], seen["v3"]) == (T0 + 900, T0 + 500, T0)
    store.touch_volunteers({})


def test_a_volunteer_never_holds_the_same_unit_twice(store: SqlStore) -> None:
    units = make_job(store, texts=4, unit_size=2, redundancy=3)
    got = [lease(store, "v1") for _ in range(3)]
    assert [g[1] for g in got if g] == units
    assert got[2] is None  # two units, both already held by v1


def test_replicas_go_to_distinct_volunteers_up_to_the_target(store: SqlStore) -> None:
    units = make_job(store, texts=2, unit_size=2, redundancy=2)
    a = lease(store, "v1")
    b = lease(store, "v2")
    assert a is not None and b is not None
    assert a[1] == b[1] == units[0]
    assert lease(store, "v3") is None  # the target of 2 is held


def test_older_jobs_are_served_first(store: SqlStore) -> None:
    make_job(store, "job-new", created_ms=T0 + 5)
    old_units = make_job(store, "job-old", created_ms=T0)
    grant = lease(store, "v1")
    assert grant is not None and grant[1] == old_units[0]


def test_expired_lease_is_reissued(store: SqlStore) -> None:
    units = make_job(store, texts=2, unit_size=2, redundancy=1)
    first = lease(store, "v1")
    assert first is not None
    deadline = T0 + LEASE_S * 1000
    assert lease(store, "v2", now=deadline - 1) is None
    again = lease(store, "v2", now=deadline + 1)
    assert again is not None and again[1] == units[0]


def test_expired_lease_may_go_back_to_the_same_volunteer(store: SqlStore) -> None:
    units = make_job(store, texts=2, unit_size=2, redundancy=1)
    assert lease(store, "v1") is not None
    again = lease(store, "v1", now=T0 + LEASE_S * 1000 + 1)
    assert again is not None and again[1] == units[0]


def test_release_frees_a_slot(store: SqlStore) -> None:
    units = make_job(store, texts=2, unit_size=2, redundancy=2)
    a = lease(store, "v1")
    assert a is not None and lease(store, "v2") is not None
    assert lease(store, "v3") is None
    store.release_lease(a[0], "volunteer quit", T0 + 10)
    record = store.get_lease(a[0])
    assert record is not None and record.state == "released"
    c = lease(store, "v3", now=T0 + 11)
    assert c is not None and c[1] == units[0]
    # releasing again, or an unknown lease, changes nothing
    store.release_lease(a[0], "again", T0 + 12)
    store.release_lease("unknown", "x", T0 + 12)
    assert lease(store, "v4", now=T0 + 13) is None


def test_no_lease_after_submitting(store: SqlStore) -> None:
    units = make_job(store, texts=2, unit_size=2, redundancy=3)
    a = lease(store, "v1")
    assert a is not None
    assert submit(store, a[0], a[1], "v1").status == "pending"
    # Even after every other lease would have expired, v1 is not given the unit again.
    assert lease(store, "v1", now=T0 + 10 * LEASE_S * 1000) is None
    other = lease(store, "v2")
    assert other is not None and other[1] == units[0]


def test_no_lease_for_an_accepted_unit(store: SqlStore) -> None:
    make_job(store, texts=2, unit_size=2, redundancy=1)
    a = lease(store, "v1")
    assert a is not None
    assert submit(store, a[0], a[1], "v1").status == "accepted"
    assert lease(store, "v2") is None


def test_work_remaining(store: SqlStore) -> None:
    assert not store.work_remaining("v1", T0)  # no jobs at all
    make_job(store, texts=2, unit_size=2, redundancy=2)
    assert store.work_remaining("v1", T0)
    a = lease(store, "v1")
    b = lease(store, "v2")
    assert a is not None and b is not None
    # v1 holds the only unit: nothing for it; v3 could get it if a lease lapses.
    assert not store.work_remaining("v1", T0)
    assert store.work_remaining("v3", T0)
    assert lease(store, "v3") is None
    # once v1's lease lapses, v1 could take the unit again
    assert store.work_remaining("v1", T0 + LEASE_S * 1000 + 1)
    submit(store, a[0], a[1], "v1")
    assert not store.work_remaining("v1", T0 + LEASE_S * 1000 + 1)
    submit(store, b[0], b[1], "v2")
    assert not store.work_remaining("v3", T0)  # the unit is accepted: nothing left


def test_concurrent_leasing_never_exceeds_the_target(store: SqlStore) -> None:
    units = make_job(store, texts=6, unit_size=1, redundancy=2)
    volunteers = [f"c{i}" for i in range(8)]
    for vid in volunteers:
        store.put_volunteer(VolunteerRecord(vid, b"\x09" * 32, "", "", "", T0))
    grants: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(vid: str) -> None:
        # On PostgreSQL "nothing" can mean "rows locked by another lease right now" (SKIP
        # LOCKED): only several empty answers in a row mean nothing is left.
        empty = 0
        while empty < 20:
            got = lease(store, vid)
            if got is None:
                empty += 1
                time.sleep(0.005)
                continue
            empty = 0
            with lock:
                grants.append((vid, got[1]))

    threads = [threading.Thread(target=worker, args=(v,)) for v in volunteers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    per_unit = {u: [v for v, got in grants if got == u] for u in units}
    for holders in per_unit.values():
        assert len(holders) == 2
        assert len(set(holders)) == 2
    assert len(grants) == 12


# ------------------------------------------------------------------ results


def test_submit_result_runs_the_judge_inside_with_every_result(store: SqlStore) -> None:
    make_job(store, texts=2, unit_size=2, redundancy=2)
    a = lease(store, "v1")
    b = lease(store, "v2")
    assert a is not None and b is not None
    seen: list[list[tuple[str, bytes]]] = []

    def judge(unit: UnitRecord, results: list[ResultRecord]) -> Verdict:
        seen.append([(r.volunteer_id, r.payload) for r in results])
        assert unit.unit_id == a[1]
        return accept_at_target(unit, results)

    assert submit(store, a[0], a[1], "v1", now=T0 + 1, judge=judge).status == "pending"
    assert submit(store, b[0], b[1], "v2", now=T0 + 2, judge=judge).status == "accepted"
    assert seen == [
        [("v1", b"payload of v1")],
        [("v1", b"payload of v1"), ("v2", b"payload of v2")],
    ]
    unit = store.get_unit(a[1])
    assert unit is not None and unit.state == "accepted"
    lease_record = store.get_lease(a[0])
    assert lease_record is not None and lease_record.state == "submitted"
    counts = store.job_counts("job-a", T0 + 3)
    assert counts.units_accepted == 1
    assert counts.results_received == 2
    assert counts.volunteers == 2
    assert counts.min_agreement == pytest.approx(0.9995)


def test_a_judge_that_raises_leaves_nothing_stored(store: SqlStore) -> None:
    make_job(store, texts=2, unit_size=2, redundancy=1)
    a = lease(store, "v1")
    assert a is not None

    def broken(unit: UnitRecord, results: list[ResultRecord]) -> Verdict:
        assert len(results) == 1  # the new result was visible inside the transaction
        raise RuntimeError("judge crashed")

    with pytest.raises(RuntimeError, match="judge crashed"):
        submit(store, a[0], a[1], "v1", judge=broken)
    record = store.get_lease(a[0])
    assert record is not None and record.state == "active"
    assert store.job_counts("job-a", T0 + 2).results_received == 0
    unit = store.get_unit(a[1])
    assert unit is not None and unit.state == "open"
    # and the same result can be submitted again, as if the first attempt never happened
    assert submit(store, a[0], a[1], "v1").status == "accepted"
    job = store.get_job("job-a")
    assert job is not None and job.state == "assimilating"


def test_submit_errors_change_nothing(store: SqlStore) -> None:
    make_job(store, texts=4, unit_size=2, redundancy=2)
    a = lease(store, "v1")
    assert a is not None
    with pytest.raises(NotFound):
        submit(store, "no-such-lease", a[1], "v1")
    with pytest.raises(PermissionDenied):
        submit(store, a[0], a[1], "v2")  # someone else's lease
    other_unit = lease(store, "v1")
    assert other_unit is not None
    with pytest.raises(PermissionDenied):
        submit(store, a[0], other_unit[1], "v1")  # the lease is for another unit
    assert store.job_counts("job-a", T0).results_received == 0
    submit(store, a[0], a[1], "v1")
    with pytest.raises(FailedPrecondition):
        submit(store, a[0], a[1], "v1")  # the lease was used
    assert store.job_counts("job-a", T0).results_received == 1


def test_released_lease_cannot_submit(store: SqlStore) -> None:
    make_job(store, texts=2, unit_size=2, redundancy=1)
    a = lease(store, "v1")
    assert a is not None
    store.release_lease(a[0], "gave up", T0 + 1)
    with pytest.raises(FailedPrecondition):
        submit(store, a[0], a[1], "v1")


def test_second_result_from_one_volunteer_is_refused(store: SqlStore) -> None:
    make_job(store, texts=2, unit_size=2, redundancy=2)
    a = lease(store, "v1")
    assert a is not None
    late = T0 + LEASE_S * 1000 + 1
    b = lease(store, "v1", now=late)  # v1's first lease lapsed; it gets the unit again
    assert b is not None and b[1] == a[1]
    submit(store, b[0], b[1], "v1", now=late + 1)
    with pytest.raises(AlreadyExists):
        submit(store, a[0], a[1], "v1", now=late + 2)


def test_result_for_a_unit_already_accepted_is_refused(store: SqlStore) -> None:
    make_job(store, texts=2, unit_size=2, redundancy=1)
    a = lease(store, "v1")
    assert a is not None
    b = lease(store, "v2", now=T0 + LEASE_S * 1000 + 1)  # v1's lease lapsed
    assert b is not None and b[1] == a[1]
    assert submit(store, b[0], b[1], "v2", now=T0 + LEASE_S * 1000 + 2).status == "accepted"
    with pytest.raises(FailedPrecondition, match="accepted"):
        submit(store, a[0], a[1], "v1", now=T0 + LEASE_S * 1000 + 3)


def test_rejected_result_frees_its_slot_and_raised_target_adds_one(store: SqlStore) -> None:
    units = make_job(store, texts=2, unit_size=2, redundancy=1)
    a = lease(store, "v1")
    assert a is not None

    def reject(unit: UnitRecord, results: list[ResultRecord]) -> Verdict:
        return Verdict("rejected", "bad rows", invalid=(results[-1].result_id,))

    assert submit(store, a[0], a[1], "v1", judge=reject).status == "rejected"
    counts = store.job_counts("job-a", T0 + 2)
    assert counts.results_rejected == 1
    b = lease(store, "v2", now=T0 + 2)
    assert b is not None and b[1] == units[0]

    def want_more(unit: UnitRecord, results: list[ResultRecord]) -> Verdict:
        return Verdict("pending", "disagree", new_target=unit.target + 1)

    submit(store, b[0], b[1], "v2", now=T0 + 3, judge=want_more)
    unit = store.get_unit(units[0])
    assert unit is not None and unit.target == 2
    c = lease(store, "v3", now=T0 + 4)
    assert c is not None and c[1] == units[0]
    assert lease(store, "v4", now=T0 + 4) is None


def test_job_becomes_assimilating_when_the_last_unit_is_accepted(store: SqlStore) -> None:
    units = make_job(store, texts=6, unit_size=2, redundancy=2)
    leases = {vid: [lease(store, vid) for _ in units] for vid in ("v1", "v2")}
    for n, unit_id in enumerate(units):
        job = store.get_job("job-a")
        assert job is not None and job.state == "running"
        for vid in ("v1", "v2"):
            got = leases[vid][n]
            assert got is not None and got[1] == unit_id
            submit(store, got[0], got[1], vid)
    job = store.get_job("job-a")
    assert job is not None and job.state == "assimilating"
    assert store.jobs_in_state("assimilating") == ["job-a"]
    assert store.job_counts("job-a", T0).units_accepted == 3
    dataset = list(store.dataset_units("job-a"))
    assert [d.unit_id for d in dataset] == units
    assert all(d.payload == b"payload of v1" and d.replicas == 2 for d in dataset)
    items = list(store.dataset_items("job-a"))
    assert [i.item_id for i in items] == [f"job-a-{i}" for i in range(6)]


def test_job_fails_when_a_unit_fails(store: SqlStore) -> None:
    units = make_job(store, texts=4, unit_size=2, redundancy=1)
    first = lease(store, "v1")
    second = lease(store, "v1")
    assert first is not None and second is not None

    def fail(unit: UnitRecord, results: list[ResultRecord]) -> Verdict:
        return Verdict("failed", "no quorum")

    submit(store, first[0], first[1], "v1", judge=fail)
    job = store.get_job("job-a")
    assert job is not None and job.state == "running"  # a unit is still open
    submit(store, second[0], second[1], "v1")
    job = store.get_job("job-a")
    assert job is not None and job.state == "failed"
    assert store.job_counts("job-a", T0).failed_units == [(units[0], "no quorum")]


# ------------------------------------------------------------------ replica slots and expiry


def test_priority_then_age_decides_which_job_is_leased(store: SqlStore) -> None:
    old_units = make_job(store, "job-old", created_ms=T0)
    urgent_units = make_job(store, "job-urgent", created_ms=T0 + 5)
    make_job(store, "job-paused", created_ms=T0 - 5)
    with store.engine.begin() as conn:
        conn.execute(t.jobs.update().where(t.jobs.c.job_id == "job-urgent").values(priority=5))
        conn.execute(t.jobs.update().where(t.jobs.c.job_id == "job-paused").values(state="paused"))
    got = [lease(store, "v1") for _ in range(3)]
    assert [g[1] for g in got if g] == [*urgent_units, old_units[0]]


def test_an_expired_lease_is_swept_and_refused_once_its_unit_was_leased_again(
    store: SqlStore,
) -> None:
    """Issue 15: a result after the deadline, once the unit went to someone else, is
    refused and leaves the unit as it was (it used to count while the unit was open)."""
    units = make_job(store, texts=2, unit_size=2, redundancy=2)
    late = lease(store, "v1")
    assert late is not None
    after = T0 + LEASE_S * 1000 + 1
    other = lease(store, "v2", now=after)  # sweeps v1's lease: its slot goes to v3
    fresh = lease(store, "v3", now=after)
    assert other is not None and fresh is not None
    record = store.get_lease(late[0])
    assert record is not None and record.state == "expired"
    assert lease(store, "v4", now=after) is None  # v2 and v3 hold both slots
    with pytest.raises(FailedPrecondition, match="leased again"):
        submit(store, late[0], late[1], "v1", now=after + 1)
    assert store.get_lease(late[0]).state == "expired"  # type: ignore[union-attr]
    assert submit(store, other[0], other[1], "v2", now=after + 2).status == "pending"
    assert submit(store, fresh[0], fresh[1], "v3", now=after + 3).status == "accepted"
    unit = store.get_unit(units[0])
    assert unit is not None and unit.state == "accepted"
    assert slots_out_of_step(store) == {}


def test_an_expired_lease_may_still_deliver_while_nobody_else_got_its_unit(
    store: SqlStore,
) -> None:
    make_job(store, texts=2, unit_size=2, redundancy=2)
    late = lease(store, "v1")
    other = lease(store, "v2")
    assert late is not None and other is not None
    after = T0 + LEASE_S * 1000 + 1
    assert submit(store, other[0], other[1], "v2", now=T0 + 5).status == "pending"
    assert lease(store, "v3", now=T0 + 6) is None  # both slots taken, none expired yet
    assert submit(store, late[0], late[1], "v1", now=after).status == "accepted"
    assert slots_out_of_step(store) == {}


def test_busy_follows_every_writer_of_leases_and_results(store: SqlStore) -> None:
    """`units.busy` is kept by triggers, so writers outside the data path (job control,
    bans, repairs) keep it right too."""
    units = make_job(store, texts=4, unit_size=2, redundancy=2)
    held = [lease(store, vid) for vid in ("v1", "v2", "v3", "v4")]
    assert all(held) and slots_out_of_step(store) == {}

    def reject_last(unit: UnitRecord, results: list[ResultRecord]) -> Verdict:
        return Verdict("rejected", "bad", invalid=(results[-1].result_id,))

    first = held[0]
    assert first is not None
    submit(store, first[0], first[1], "v1", judge=reject_last)
    store.release_lease(held[1][0], "quit", T0 + 2)  # type: ignore[index]
    assert slots_out_of_step(store) == {}
    # as a ban would: every active lease of v3 cancelled by a plain UPDATE
    le = t.leases
    with store.engine.begin() as conn:
        conn.execute(
            le.update()
            .where(le.c.volunteer_id == "v3", le.c.state == "active")
            .values(state="cancelled", reason="banned")
        )
        conn.execute(le.delete().where(le.c.volunteer_id == "v4"))
    assert slots_out_of_step(store) == {}
    with store.engine.connect() as conn:
        busy = dict(conn.execute(select(t.units.c.unit_id, t.units.c.busy)).all())
    assert busy == {units[0]: 0, units[1]: 0}
    # every slot is free again: two volunteers can take each unit
    assert {g[1] for g in (lease(store, "v2"), lease(store, "v3")) if g} == {units[0]}


# ------------------------------------------------------------------ two stores, one database


def two_stores(url: str) -> tuple[SqlStore, SqlStore]:
    """Two stores on one database, as two coordinator processes would have."""
    first = open_store(url)
    add_volunteers(first)
    return first, open_store(url)


def test_two_stores_never_lease_a_unit_beyond_its_target(shared_url: str) -> None:
    a, b = two_stores(shared_url)
    try:
        units = make_job(a, texts=30, unit_size=1, redundancy=2)
        volunteers = [f"c{i}" for i in range(10)]
        add_volunteers(a, volunteers)
        grants: list[tuple[str, str]] = []
        lock = threading.Lock()

        def worker(store: SqlStore, vid: str) -> None:
            # With SKIP LOCKED, "nothing" can also mean "rows locked by the other store
            # right now": only several empty answers in a row mean nothing is left.
            empty = 0
            while empty < 20:
                got = lease(store, vid)
                if got is None:
                    empty += 1
                    time.sleep(0.005)
                    continue
                empty = 0
                with lock:
                    grants.append((vid, got[1]))

        threads = [
            threading.Thread(target=worker, args=(a if n % 2 else b, vid))
            for n, vid in enumerate(volunteers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(grants) == 2 * len(units)
        for unit in units:
            holders = [vid for vid, got in grants if got == unit]
            assert len(holders) == len(set(holders)) == 2
        assert slots_out_of_step(a) == {}
    finally:
        a.close()
        b.close()


def slow_accept(unit: UnitRecord, results: list[ResultRecord]) -> Verdict:
    time.sleep(0.2)  # widens the window in which another store could judge without us
    return accept_at_target(unit, results)


def test_replicas_submitted_at_once_to_two_stores_are_judged_together(shared_url: str) -> None:
    a, b = two_stores(shared_url)
    try:
        units = make_job(a, texts=4, unit_size=2, redundancy=2)
        # v1/v2 hold both replicas of units[0]; v3/v4 both of units[1] (the job's last)
        held = {vid: [lease(a, vid), lease(a, vid)] for vid in ("v1", "v2")}
        assert [g[1] for g in held["v1"] if g] == units
        verdicts: dict[str, str] = {}

        def send(store: SqlStore, vid: str, index: int) -> None:
            got = held[vid][index]
            assert got is not None
            verdicts[f"{vid}/{index}"] = submit(
                store, got[0], got[1], vid, judge=slow_accept
            ).status

        for index in (0, 1):  # unit by unit: both replicas at once, through two stores
            threads = [
                threading.Thread(target=send, args=(a, "v1", index)),
                threading.Thread(target=send, args=(b, "v2", index)),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
        for index in (0, 1):
            assert sorted([verdicts[f"v1/{index}"], verdicts[f"v2/{index}"]]) == [
                "accepted",
                "pending",
            ]
        job = b.get_job("job-a")
        assert job is not None and job.state == "assimilating"
    finally:
        a.close()
        b.close()


def test_the_last_units_decided_at_once_by_two_stores_finish_the_job(shared_url: str) -> None:
    a, b = two_stores(shared_url)
    try:
        units = make_job(a, texts=4, unit_size=2, redundancy=1)
        first, second = lease(a, "v1"), lease(a, "v2")
        assert first is not None and second is not None
        assert {first[1], second[1]} == set(units)
        threads = [
            threading.Thread(target=submit, args=(a, *first, "v1"), kwargs={"judge": slow_accept}),
            threading.Thread(target=submit, args=(b, *second, "v2"), kwargs={"judge": slow_accept}),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert a.jobs_in_state("assimilating") == ["job-a"]
    finally:
        a.close()
        b.close()


def test_a_volunteer_registering_with_two_stores_at_once_is_one_row(shared_url: str) -> None:
    a, b = two_stores(shared_url)
    try:
        record = VolunteerRecord("twin", b"\x07" * 32, "twin", "0.1", "cpu", T0)
        barrier = threading.Barrier(8)

        def register(store: SqlStore) -> None:
            barrier.wait()
            store.put_volunteer(record)

        threads = [threading.Thread(target=register, args=(s,)) for s in (a, b) * 4]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert a.get_volunteer("twin") is not None
        events = [e for e in a.recent_events(100) if e[1] == "volunteer.registered"]
        assert len([e for e in events if e[4] == "twin"]) == 1
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------ claims


def claim_from_thread(store: SqlStore, job_id: str, state: str) -> object:
    """What a claim attempt from another thread gets while this one may hold the job."""
    seen: list[object] = []

    def attempt() -> None:
        with store.claim_job(job_id, state) as got:
            seen.append(got)

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join(timeout=30)
    return seen[0]


def test_a_job_is_claimed_by_one_holder_at_a_time(store: SqlStore) -> None:
    make_job(store, texts=2, unit_size=2, redundancy=1)
    with store.claim_job("job-a", "running") as job:
        assert job is not None and job.job_id == "job-a"
        assert claim_from_thread(store, "job-a", "running") is None
    assert claim_from_thread(store, "job-a", "running") is not None  # released
    with store.claim_job("job-a", "assimilating") as job:
        assert job is None  # not in that state
    with store.claim_job("no-such-job", "running") as job:
        assert job is None


def test_a_claim_holds_across_stores_and_ends_with_its_process(postgres_url: str) -> None:
    a, b = two_stores(postgres_url)
    try:
        make_job(a, texts=2, unit_size=2, redundancy=1)
        got = lease(a, "v1")
        assert got is not None
        submit(a, *got, "v1")
        with a.claim_job("job-a", "assimilating") as job:
            assert job is not None
            with b.claim_job("job-a", "assimilating") as rival:
                assert rival is None
            a.complete_job("job-a", b"{}", b"sig", T0 + 5)
        with b.claim_job("job-a", "assimilating") as rival:
            assert rival is None  # the first holder finished it
        # a holder whose process dies mid-claim leaves the job claimable: its session ends
        holder = open_store(postgres_url)
        claim = holder.claim_job("job-a", "complete")
        assert claim.__enter__() is not None
        assert claim_from_thread(b, "job-a", "complete") is None
        with a.engine.begin() as conn:  # what the server does when a client's socket closes
            ended = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
                )
            ).all()
        assert len(ended) == 1
        deadline = time.monotonic() + 10
        while claim_from_thread(b, "job-a", "complete") is None:
            assert time.monotonic() < deadline, "the dead holder's claim was never released"
            time.sleep(0.05)
        with contextlib.suppress(Exception):  # its connection is gone
            claim.__exit__(None, None, None)
        holder.close()
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------ the coordinator key


def test_a_database_is_bound_to_one_coordinator_key(store: SqlStore) -> None:
    assert store.bound_coordinator() is None
    store.bind_coordinator("a" * 64)
    store.bind_coordinator("a" * 64)  # the same key again: fine
    assert store.bound_coordinator() == "a" * 64
    with pytest.raises(FailedPrecondition, match="share one data folder"):
        store.bind_coordinator("b" * 64)
    assert store.bound_coordinator() == "a" * 64
