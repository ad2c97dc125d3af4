"""Leasing in the SQL store: handing out units, sweeping expired leases, releasing leases.

A mixin of `SqlStore` (see sql.py, whose docstring gives the lock order these methods keep on
PostgreSQL). It builds on `TrustQueries` (trust_sql.py), which applies adaptive replication
and the daily quota to each lease.
"""

from __future__ import annotations

from typing import Any

from allmende.coordinator.store.base import Compose
from allmende.coordinator.store.fastsql import Conn
from allmende.coordinator.store.records import (
    LeaseCandidate,
    LeaseGrant,
    LeaseRecord,
    UnitRecord,
    VolunteerRecord,
)
from allmende.coordinator.store.sql_base import unit_record
from allmende.coordinator.store.statements import FREE_UNIT, Q
from allmende.coordinator.store.trust_sql import TrustQueries
from allmende.coordinator.store.volunteers_sql import volunteer_record

# Candidates a PostgreSQL lease tries per job.
_LEASE_TRIES = 8


def _lease_record(row: Any, state: str) -> LeaseRecord:
    return LeaseRecord(
        row.lease_id,
        row.unit_id,
        row.volunteer_id,
        state,
        row.deadline_ms,
        row.unit_sha256,
        row.composition or b"",
        tuple(int(g) for g in row.gold_ids.split(",")) if row.gold_ids else (),
    )


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
    ) -> LeaseGrant | None:
        """Lease the first unit with a free replica slot: highest priority job first, then
        the oldest job, then unit order. Never two live leases of one unit to one volunteer,
        never a unit the volunteer has already sent a result for, and (unless `address` is
        '') never a unit another volunteer at the same address holds or answered.

        `compose` turns the chosen unit into what this lease hands out (rows in a per-lease
        order, gold rows mixed in, signed); without it the unit goes out as planned. A plan
        marked `solo` (adaptive replication) makes this volunteer's result alone decide a
        unit nobody else holds yet. `day` counts the lease towards the volunteer's quota."""
        with self._tx() as conn:
            jobs = conn.execute(Q.running_jobs).all()
            if jobs and jobs[0].next_due is not None and jobs[0].next_due <= now_ms:
                self._expire_leases(conn, now_ms)
            query = FREE_UNIT[conn.dialect.name]
            for job in jobs:
                tried: list[str] = []
                for _ in range(_LEASE_TRIES):
                    params: dict[str, Any] = {
                        "job": job.job_id,
                        "volunteer": volunteer_id,
                        "active": "active",
                        "now": now_ms,
                        "address": address,
                    }
                    if self.postgres:
                        params["tried"] = tried
                    row = conn.execute(query, params).first()
                    if row is None:
                        break
                    deadline = now_ms + job.lease_seconds * 1000
                    plan = (
                        compose(
                            LeaseCandidate(
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
                                gold_ids=tuple(int(g) for g in row.gold_ids.split(","))
                                if row.gold_ids
                                else (),
                            )
                        )
                        if compose is not None
                        else None
                    )
                    values = {
                        "address": address,
                        "unit_sha256": plan.unit_sha256 if plan else None,
                        "composition": plan.composition if plan else None,
                        "gold_ids": ",".join(map(str, plan.gold_ids)) if plan else "",
                    }
                    if self.postgres:
                        # The candidate query judged the volunteer's own leases by a snapshot
                        # from before it locked the unit, so a lease another coordinator
                        # committed in between could be missed. Now that this transaction
                        # holds the unit, every earlier writer of it has committed, and the
                        # insert's fresh snapshot sees them all.
                        inserted = conn.execute(
                            Q.add_lease_if_free,
                            {
                                "lease_id": lease_id,
                                "unit_id": row.unit_id,
                                "volunteer": volunteer_id,
                                "now": now_ms,
                                "deadline": deadline,
                                **values,
                            },
                        )
                        if inserted.first() is None:
                            tried.append(row.unit_id)
                            continue
                    else:
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
                                **values,
                            },
                        )
                    self._after_lease(conn, row, job, plan, volunteer_id, day)
                    if plan is None:
                        return LeaseGrant(lease_id, row.unit_id, deadline, row.blob, row.signature)
                    return LeaseGrant(lease_id, row.unit_id, deadline, plan.blob, plan.signature)
        return None

    def work_remaining(self, volunteer_id: str, now_ms: int) -> bool:
        """Whether a running job has an open unit this volunteer could take once a slot frees."""
        with self._read() as conn:
            params = {"volunteer": volunteer_id, "now": now_ms}
            return conn.execute(Q.any_work, params).first() is not None

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
