"""Building blocks of the store tests: jobs planned with the real `plan_job` (so units carry
real signed blobs), leases, results and judges."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from sqlalchemy import func, select

from allmende.coordinator.domain.jobs import InputRecord, JobRequest, plan_job, resolve_settings
from allmende.coordinator.store import schema as t
from allmende.coordinator.store.records import (
    NewResult,
    ResultRecord,
    UnitRecord,
    Verdict,
    VolunteerRecord,
)
from allmende.coordinator.store.sql import SqlStore
from allmende.protocol.models import DEFAULT_MODEL, ModelRegistry
from allmende.protocol.signing import SigningKey

T0 = 1_700_000_000_000
LEASE_S = 60
KEY = SigningKey.generate()
VOLUNTEERS = ["v1", "v2", "v3", "v4"]

_ids = itertools.count()


def add_volunteers(store: SqlStore, names: list[str] = VOLUNTEERS) -> None:
    for n, vid in enumerate(names):
        store.put_volunteer(
            VolunteerRecord(vid, bytes([n % 256]) * 32, f"name {vid}", "0.1", "cpu", T0)
        )


def make_job(
    store: SqlStore,
    job_id: str = "job-a",
    texts: int = 4,
    unit_size: int = 2,
    redundancy: int = 2,
    created_ms: int = T0,
) -> list[str]:
    """Create a job; return its unit ids in order."""
    req = JobRequest(
        model=DEFAULT_MODEL, unit_size=unit_size, redundancy=redundancy, lease_seconds=LEASE_S
    )
    settings = resolve_settings(req, ModelRegistry())
    records = [InputRecord(f"{job_id}-{i}", f"{job_id} text {i}", i + 1) for i in range(texts)]
    job, units, items = plan_job(job_id, req, settings, records, KEY, created_ms)
    store.create_job(job, units, items)
    return [u.unit_id for u in units]


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


Judge = Callable[[UnitRecord, list[ResultRecord]], Verdict]


def submit(
    store: SqlStore,
    lease_id: str,
    unit_id: str,
    volunteer: str,
    now: int = T0 + 1,
    judge: Judge = accept_at_target,
) -> Verdict:
    result = NewResult(
        f"res-{next(_ids)}",
        unit_id,
        lease_id,
        volunteer,
        b"env",
        b"sig",
        f"payload of {volunteer}".encode(),
        now,
    )
    return store.submit_result(result, judge)


def slots_out_of_step(store: SqlStore) -> dict[str, tuple[int, int]]:
    """Units whose `busy` differs from a count of their active leases and counted results:
    unit id -> (busy, counted). Empty when the triggers did their job."""
    u, le, r = t.units, t.leases, t.results
    leases = (
        select(func.count())
        .where(le.c.unit_id == u.c.unit_id, le.c.state == "active")
        .scalar_subquery()
    )
    results = (
        select(func.count())
        .where(r.c.unit_id == u.c.unit_id, r.c.state != "invalid")
        .scalar_subquery()
    )
    with store.engine.connect() as conn:
        rows = conn.execute(select(u.c.unit_id, u.c.busy, leases + results)).all()
    return {unit: (busy, counted) for unit, busy, counted in rows if busy != counted}
