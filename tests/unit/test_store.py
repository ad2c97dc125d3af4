"""The shared store suite: every test runs against a SQLite file and an in-memory SQLite.

Jobs are planned with the real `plan_job`, so units carry real signed blobs.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from allmende.coordinator.domain.jobs import InputRecord, JobRequest, plan_job, resolve_settings
from allmende.coordinator.store.records import (
    NewResult,
    ResultRecord,
    UnitRecord,
    Verdict,
    VolunteerRecord,
)
from allmende.coordinator.store.sql import SqlStore, open_store
from allmende.protocol.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from allmende.protocol.models import DEFAULT_MODEL, ModelRegistry
from allmende.protocol.signing import SigningKey
from allmende.protocol.wire import open_unit

T0 = 1_700_000_000_000
LEASE_S = 60
KEY = SigningKey.generate()
VOLUNTEERS = ["v1", "v2", "v3", "v4"]


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    url = "sqlite:///" + str(tmp_path / "x.db") if request.param == "file" else "sqlite://"
    s = open_store(url)
    for n, vid in enumerate(VOLUNTEERS):
        s.put_volunteer(VolunteerRecord(vid, bytes([n]) * 32, f"name {vid}", "0.1", "cpu", T0))
    yield s
    s.close()


def make_job(store: SqlStore, job_id: str = "job-a", texts: int = 4, unit_size: int = 2,
             redundancy: int = 2, created_ms: int = T0) -> list[str]:
    """Create a job; return its unit ids in order."""
    req = JobRequest(model=DEFAULT_MODEL, unit_size=unit_size, redundancy=redundancy,
                     lease_seconds=LEASE_S)
    settings = resolve_settings(req, ModelRegistry())
    records = [InputRecord(f"{job_id}-{i}", f"{job_id} text {i}", i + 1) for i in range(texts)]
    job, units, items = plan_job(job_id, req, settings, records, KEY, created_ms)
    store.create_job(job, units, items)
    return [u.unit_id for u in units]


_ids = itertools.count()


def lease(store: SqlStore, volunteer: str, now: int = T0) -> tuple[str, str] | None:
    """Lease a unit for a volunteer; (lease id, unit id) or None."""
    lease_id = f"lease-{next(_ids)}"
    grant = store.lease_unit(volunteer, lease_id, now)
    if grant is None:
        return None
    assert grant.lease_id == lease_id
    return lease_id, grant.unit_id


def accept_at_target(unit: UnitRecord, results: list[ResultRecord]) -> Verdict:
    """A judge that accepts a unit once it has `target` results, all agreeing."""
    if len(results) < unit.target:
        return Verdict("pending", "waiting")
    ids = tuple(r.result_id for r in results)
    return Verdict("accepted", valid=ids, agreement=0.9995, canonical=ids[0])


def submit(store: SqlStore, lease_id: str, unit_id: str, volunteer: str, now: int = T0 + 1,
           judge: Callable[[UnitRecord, list[ResultRecord]], Verdict] = accept_at_target,
           ) -> Verdict:
    result = NewResult(f"res-{next(_ids)}", unit_id, lease_id, volunteer, b"env", b"sig",
                       f"payload of {volunteer}".encode(), now)
    return store.submit_result(result, judge)


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


def test_file_store_keeps_state_across_reopen(tmp_path: Path) -> None:
    url = "sqlite:///" + str(tmp_path / "x.db")
    first = open_store(url)
    first.put_volunteer(VolunteerRecord("v1", b"\x00" * 32, "", "", "", T0))
    make_job(first)
    grant = lease(first, "v1")
    first.close()
    again = open_store(url)
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
        while (got := lease(store, vid)) is not None:
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
    assert seen == [[("v1", b"payload of v1")],
                    [("v1", b"payload of v1"), ("v2", b"payload of v2")]]
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
