"""Leasing in the SQL store: handing out units, sweeping expired leases, releasing leases.

A mixin of `SqlStore` (see sql.py, whose docstring gives the lock order these methods keep on
PostgreSQL). It builds on `TrustQueries` (trust_sql.py), which applies adaptive replication
and the daily quota to each lease.
"""

from __future__ import annotations

from typing import Any

from allmende.coordinator.store.base import Admit, Compose
from allmende.coordinator.store.fastsql import Conn
from allmende.coordinator.store.lease_candidates import FREE_UNIT, FREE_UNIT_FIRST_JOB, LOCK_KEY
from allmende.coordinator.store.records import (
    HeldLease,
    LeaseCandidate,
    LeaseGrant,
    LeasePlan,
    LeaseRecord,
    UnitRecord,
    VolunteerRecord,
)
from allmende.coordinator.store.sql_base import unit_record
from allmende.coordinator.store.statements import STANDING, Q
from allmende.coordinator.store.trust_sql import TrustQueries
from allmende.coordinator.store.volunteers_sql import standing_of, volunteer_record

# Candidates a PostgreSQL lease tries, each in a transaction of its own, before it gives up.
_LEASE_TRIES = 8
# `held_cap` when none is given.
_NO_CAP = 2**31 - 1


def _lease_record(row: Any, state: str) -> LeaseRecord:
    return LeaseRecord(
        row.lease_id,
        row.unit_id,
        row.volunteer_id,
        state,
        row.deadline_ms,
        row.unit_sha256,
        row.composition or b"",
        _gold_ids(row.gold_ids or ""),
    )


def _held(row: Any) -> HeldLease:
    blob: bytes | None
    signature: bytes | None
    if row.unit_blob is not None:
        blob, signature = bytes(row.unit_blob), bytes(row.unit_signature or b"")
    elif row.unit_sha256 is None:  # handed out as the unit itself, uncomposed
        blob, signature = bytes(row.plain_blob), bytes(row.plain_signature)
    else:
        blob = signature = None
    sha = None if row.unit_sha256 is None else bytes(row.unit_sha256)
    return HeldLease(row.lease_id, row.unit_id, row.deadline_ms, sha, blob, signature)


def _gold_ids(stored: str, shared_only: bool = False) -> tuple[int, ...]:
    """A lease's gold row ids as stored: the unit's shared ones, then after ';' the lease's
    own (see LeasePlan.shared)."""
    shared, _, own = stored.partition(";")
    ids = shared if shared_only else f"{shared},{own}"
    return tuple(int(g) for g in ids.split(",") if g)


def _sweep_due(jobs: list[Any], now_ms: int) -> bool:
    """Whether a live lease has passed its deadline (the job list says when the first falls
    due), so that expired leases are swept before a unit is chosen."""
    return bool(jobs) and jobs[0].next_due is not None and jobs[0].next_due <= now_ms


def _candidate_params(
    volunteer_id: str,
    now_ms: int,
    address: str,
    distinct: bool,
    block_share: float,
    held_cap: int | None,
    tried: list[str] | None = None,
) -> dict[str, Any]:
    """FREE_UNIT's parameters but the job (PostgreSQL's also name the units tried)."""
    params: dict[str, Any] = {
        "volunteer": volunteer_id,
        "active": "active",
        "now": now_ms,
        "address": address,
        "distinct": int(distinct),
        "block_share": float(block_share),
        "held_cap": _NO_CAP if held_cap is None else held_cap,
    }
    if tried is not None:
        params["tried"] = tried
    return params


def _plan(row: Any, job: Any, now_ms: int, compose: Compose | None) -> tuple[LeasePlan | None, int]:
    """The candidate composed for this lease (None without `compose`), and its deadline."""
    deadline = now_ms + job.lease_seconds * 1000
    if compose is None:
        return None, deadline
    candidate = LeaseCandidate(
        unit_id=row.unit_id,
        job_id=job.job_id,
        kind=job.kind,
        blob=row.blob,
        rows=row.rows,
        busy=row.busy,
        quorum=row.quorum or job.redundancy,
        redundancy=job.redundancy,
        gold_fraction=job.gold_fraction,
        deadline_ms=deadline,
        gold_ids=_gold_ids(row.gold_ids or "", shared_only=True),
    )
    return compose(candidate), deadline


def _lease_values(address: str, plan: LeasePlan | None) -> dict[str, Any]:
    return {
        "address": address,
        "unit_sha256": plan.unit_sha256 if plan else None,
        "composition": plan.composition if plan else None,
        "gold_ids": _stored_gold_ids(plan) if plan else "",
        "unit_blob": plan.blob if plan else None,
        "unit_signature": plan.signature if plan else None,
    }


def _stored_gold_ids(plan: LeasePlan) -> str:
    shared = len(plan.gold_ids) if plan.shared < 0 else plan.shared
    text = ",".join(map(str, plan.gold_ids[:shared]))
    own = plan.gold_ids[shared:]
    return f"{text};{','.join(map(str, own))}" if own else text


def _grant(lease_id: str, row: Any, deadline: int, plan: LeasePlan | None) -> LeaseGrant:
    if plan is None:
        return LeaseGrant(lease_id, row.unit_id, deadline, row.blob, row.signature)
    return LeaseGrant(lease_id, row.unit_id, deadline, plan.blob, plan.signature)


class LeaseQueries(TrustQueries):
    def _expire_leases(self, conn: Conn, now_ms: int) -> None:
        """Move leases past their deadline to 'expired', freeing their slots (`busy`)."""
        due = conn.execute(Q.due, {"now": now_ms}).scalars().all()
        if not due:
            return
        units = sorted(set(due))
        if self.postgres:
            # Unit first (the lock order); a unit someone else holds is swept next time.
            units = list(conn.execute(Q.lock_units_skip, {"units": units}).scalars())
        if units:
            conn.execute(Q.expire, {"units": units, "now": now_ms})

    def lease_unit(
        self,
        volunteer_id: str,
        lease_id: str,
        now_ms: int,
        compose: Compose | None = None,
        address: str = "",
        day: int = 0,
        admit: Admit | None = None,
        distinct: bool = True,
        block_share: float = 1.0,
        held_cap: int | None = None,
        fetch_urls: bool = False,
    ) -> LeaseGrant | None:
        """Lease the first unit with a free replica slot: highest priority job first, then
        the oldest job, then unit order. Never two live leases of one unit to one volunteer,
        never a unit the volunteer has already sent a result for. Unless `address` (the
        volunteer's address block) is '': never a unit another volunteer of the same block
        holds or answered (with `distinct`), and never a slot of a job in which the block
        already holds `block_share` of the slots (units times redundancy) in unexpired
        leases, unless it holds none. With `held_cap`, nothing if the volunteer already
        holds that many unexpired leases.

        `admit`, when given, first judges the volunteer's standing (with the unexpired
        leases it holds), read in the same transaction: it raises to refuse the volunteer,
        or returns False to lease nothing.
        `compose` turns the chosen unit into what this lease hands out (rows in a per-lease
        order, gold rows mixed in, signed); without it the unit goes out as planned. A plan
        marked `solo` (adaptive replication) makes this volunteer's result alone decide a
        unit nobody else holds yet. `day` counts the lease towards the volunteer's quota.
        Jobs whose rows include URLs are passed over unless `fetch_urls` (the volunteer
        opted in to fetching them)."""
        if self.postgres:
            params = _candidate_params(
                volunteer_id, now_ms, address, distinct, block_share, held_cap, []
            )
            params["fetch_urls"] = int(fetch_urls)
            return self._lease_postgres(params, lease_id, compose, day, admit)
        with self._tx() as conn:
            if admit is not None:
                standing = conn.execute(
                    STANDING, {"volunteer_id": volunteer_id, "now": now_ms}
                ).all()
                if not admit(*standing_of(standing)):
                    return None
            jobs = conn.execute(Q.running_jobs, {"fetch_urls": int(fetch_urls)}).all()
            if _sweep_due(jobs, now_ms):
                self._expire_leases(conn, now_ms)
            params = _candidate_params(
                volunteer_id, now_ms, address, distinct, block_share, held_cap
            )
            for job in jobs:
                row = conn.execute(FREE_UNIT["sqlite"], {**params, "job": job.job_id}).first()
                if row is None:
                    continue
                plan, deadline = _plan(row, job, now_ms, compose)
                conn.execute(
                    Q.add_lease,
                    {
                        "lease_id": lease_id,
                        "unit_id": row.unit_id,
                        "volunteer_id": volunteer_id,
                        "state": "active",
                        "created_ms": now_ms,
                        "deadline_ms": deadline,
                        "reason": "",
                        **_lease_values(address, plan),
                    },
                )
                for statement, values in self._lease_writes(row, job, plan, volunteer_id, day):
                    conn.defer(statement, values)
                return _grant(lease_id, row, deadline, plan)
        return None

    def _lease_postgres(
        self,
        params: dict[str, Any],
        lease_id: str,
        compose: Compose | None,
        day: int,
        admit: Admit | None,
    ) -> LeaseGrant | None:
        """`lease_unit` on PostgreSQL (`params`: the candidate query's, `tried` among them),
        in two round trips when nothing gets in the way: the advisory locks on the volunteer
        and its address block, the standing, the job list and the first job's candidate
        (locked; units other sessions hold are skipped) in the first; the lease's insert,
        its writes and the COMMIT in the second. Under load each round trip also waits for
        the GIL to come back, which costs more than the trip itself.

        The locks serialise one volunteer's (and one block's) lease transactions across
        replicas, so each counts the leases the one before it committed: in READ COMMITTED
        every statement after a lock sees what was committed before the lock was granted.

        The candidate query judged the volunteer's own leases by a snapshot from before it
        locked the unit, so a lease another coordinator committed in between could be missed.
        Now that the unit is held, every earlier writer of it has committed: the insert's
        fresh snapshot sees them all, and the writes after it happen only if it inserted. A
        unit found taken that way is passed over, and the lease starts again in a new
        transaction."""
        volunteer_id, now_ms, address = params["volunteer"], params["now"], params["address"]
        tried: list[str] = params["tried"]
        locks: list[tuple[Any, dict[str, Any]]] = [(LOCK_KEY, {"key": f"volunteer:{volunteer_id}"})]
        if address:
            locks.append((LOCK_KEY, {"key": f"block:{address}"}))
        for _ in range(_LEASE_TRIES):
            with self._tx() as conn:
                first: list[tuple[Any, dict[str, Any]]] = [
                    *locks,
                    (Q.running_jobs, {"fetch_urls": params["fetch_urls"]}),
                    (FREE_UNIT_FIRST_JOB, params),
                ]
                if admit is not None:
                    first.insert(
                        len(locks), (STANDING, {"volunteer_id": volunteer_id, "now": now_ms})
                    )
                found = conn.execute_all(first)
                for _lock in locks:
                    found.pop(0).all()
                if admit is not None:
                    if not admit(*standing_of(found.pop(0).all())):
                        return None
                    admit = None
                jobs, early = found[0].all(), found[1].first()
                asked = bool(jobs)  # the first job's candidate is in `early` (None: it has none)
                if _sweep_due(jobs, now_ms):
                    self._expire_leases(conn, now_ms)
                    asked = False  # the sweep may have freed a unit that comes earlier
                if early is not None and jobs and early.job_id != jobs[0].job_id:
                    asked = False  # the jobs changed between the two statements
                picked = None
                for index, job in enumerate(jobs):
                    if index == 0 and asked:
                        row = early
                    else:
                        query = FREE_UNIT["postgresql"]
                        row = conn.execute(query, {**params, "job": job.job_id}).first()
                    if row is not None:
                        picked = job, row
                        break
                if picked is None:
                    return None
                job, row = picked
                plan, deadline = _plan(row, job, now_ms, compose)
                inserted, *_ = conn.commit_with(
                    [
                        (
                            Q.add_lease_if_free,
                            {
                                "lease_id": lease_id,
                                "unit_id": row.unit_id,
                                "volunteer": volunteer_id,
                                "now": now_ms,
                                "deadline": deadline,
                                **_lease_values(address, plan),
                            },
                        ),
                        *self._lease_writes(row, job, plan, volunteer_id, day, if_leased=lease_id),
                    ]
                )
                if inserted.first() is not None:
                    return _grant(lease_id, row, deadline, plan)
                tried.append(row.unit_id)
        return None

    def work_remaining(self, volunteer_id: str, now_ms: int, fetch_urls: bool = False) -> bool:
        """Whether a running job has an open unit this volunteer could take once a slot
        frees (jobs with URL rows only with `fetch_urls`)."""
        with self._read() as conn:
            params = {"volunteer": volunteer_id, "now": now_ms, "fetch_urls": int(fetch_urls)}
            return conn.execute(Q.any_work, params).first() is not None

    def held_leases(self, volunteer_id: str, now_ms: int) -> list[HeldLease]:
        """The volunteer's unexpired active leases of open units, oldest first, each with
        the unit as signed for it (None for a composed lease from before migration 0007)."""
        with self._read() as conn:
            rows = conn.execute(Q.held_leases, {"volunteer_id": volunteer_id, "now": now_ms}).all()
        return [_held(row) for row in rows]

    def get_lease(self, lease_id: str) -> LeaseRecord | None:
        with self._read() as conn:
            row = conn.execute(Q.lease, {"lease_id": lease_id}).first()
        return None if row is None else _lease_record(row, row.state)

    def get_lease_and_unit(self, lease_id: str) -> tuple[LeaseRecord, UnitRecord] | None:
        """A lease and its unit (with the unit's job settings), in one read."""
        with self._read() as conn:
            row = conn.execute(Q.lease_and_unit, {"lease_id": lease_id}).first()
        return None if row is None else (_lease_record(row, row.lease_state), unit_record(row))

    def get_volunteer_and_lease(
        self, volunteer_id: str, lease_id: str
    ) -> tuple[VolunteerRecord | None, tuple[LeaseRecord, UnitRecord] | None]:
        """A volunteer's record, and a lease with its unit: what a result is checked
        against before it is decoded, in one round trip (two statements, pipelined)."""
        with self._read() as conn:
            volunteers, leases = conn.execute_all(
                [
                    (Q.volunteer, {"volunteer_id": volunteer_id}),
                    (Q.lease_and_unit, {"lease_id": lease_id}),
                ]
            )
            volunteer, row = volunteers.first(), leases.first()
        return (
            None if volunteer is None else volunteer_record(volunteer),
            None if row is None else (_lease_record(row, row.lease_state), unit_record(row)),
        )

    def get_unit(self, unit_id: str) -> UnitRecord | None:
        with self._read() as conn:
            row = conn.execute(Q.unit, {"unit_id": unit_id}).first()
        return unit_record(row) if row else None

    def release_lease(self, lease_id: str, reason: str, now_ms: int) -> None:
        with self._tx() as conn:
            row = conn.execute(Q.lease, {"lease_id": lease_id}).first()
            if row is None or row.state != "active":
                return
            if self.postgres:
                conn.execute(Q.lock_unit, {"unit_id": row.unit_id})
            released = conn.execute(Q.release, {"b_lease": lease_id, "b_reason": reason})
            if not released.rowcount:  # a result or a cancellation got there first
                return
            self._event(
                conn,
                now_ms,
                "lease.released",
                reason,
                unit_id=row.unit_id,
                volunteer_id=row.volunteer_id,
            )
