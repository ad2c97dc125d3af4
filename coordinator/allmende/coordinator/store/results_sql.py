"""Results in the SQL store: taking a result, judging its unit, and deciding the unit and job.

A mixin of `SqlStore` (see sql.py, whose docstring gives the lock order these methods keep on
PostgreSQL). It builds on `TrustQueries` (trust_sql.py): reputation, credit and gold rows
are settled in the transaction that judges a result.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from allmende.coordinator.store.base import Judge
from allmende.coordinator.store.fastsql import Conn
from allmende.coordinator.store.records import NewResult, ResultRecord, UnitRecord, Verdict
from allmende.coordinator.store.sql_base import unit_record
from allmende.coordinator.store.statements import Q
from allmende.coordinator.store.trust_sql import TrustQueries
from allmende.protocol.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
)


class ResultQueries(TrustQueries):
    def submit_result(self, result: NewResult, judge: Judge) -> Verdict:
        with self._tx() as conn:
            # The unit first: results for it are judged one at a time, across coordinators.
            # The lease and the unit's results are read after the lock is granted (one
            # round trip for the three).
            unit_rows, lease_rows, counted, streak_rows = conn.execute_all(
                [
                    (Q.unit_locked if self.postgres else Q.unit, {"unit_id": result.unit_id}),
                    (Q.lease_answered, {"lease_id": result.lease_id}),
                    (Q.counted, {"unit_id": result.unit_id}),
                    (
                        Q.streak_of,
                        {"unit_id": result.unit_id, "volunteer_id": result.volunteer_id},
                    ),
                ]
            )
            unit_row, lease = unit_rows.first(), lease_rows.first()
            streak = streak_rows.scalar() or 0
            if lease is None:
                raise NotFound(f"lease {result.lease_id!r} does not exist")
            if lease.volunteer_id != result.volunteer_id or lease.unit_id != result.unit_id:
                raise PermissionDenied(
                    f"unit {result.unit_id!r} is not leased to volunteer {result.volunteer_id[:12]}"
                )
            # A lease past its deadline may still deliver while its unit is open and nobody
            # was given the unit since (checked below).
            if lease.state not in ("active", "expired"):
                why = {
                    "submitted": "a result was already submitted on it",
                    "released": "it was released (handed back)",
                }.get(lease.state, f"it was {lease.state}: {lease.reason}")
                raise FailedPrecondition(f"lease {result.lease_id} is closed; {why}")
            assert unit_row is not None  # foreign key
            if unit_row.state != "open":
                raise FailedPrecondition(f"unit {result.unit_id} is already {unit_row.state}")
            if lease.answered:
                raise AlreadyExists(f"volunteer already submitted a result for {result.unit_id}")
            # Past its deadline and the unit leased again since: the replica slot went to
            # someone else, so this result would only crowd the quorum (and an attacker could
            # let leases lapse to pick its partners). Refused; the unit is left as it is.
            if lease.deadline_ms < result.received_ms and (
                conn.execute(
                    Q.leased_again,
                    {
                        "unit_id": result.unit_id,
                        "lease_id": result.lease_id,
                        "deadline_ms": lease.deadline_ms,
                    },
                ).first()
                is not None
            ):
                raise FailedPrecondition(
                    f"lease {result.lease_id} expired and unit {result.unit_id} was leased "
                    "again since; a result after the deadline counts only while nobody else "
                    "was given the unit"
                )
            conn.defer(
                Q.add_result,
                {
                    "result_id": result.result_id,
                    "unit_id": result.unit_id,
                    "lease_id": result.lease_id,
                    "volunteer_id": result.volunteer_id,
                    "envelope": result.envelope,
                    "signature": result.signature,
                    "payload": result.payload,
                    "state": "pending",
                    "received_ms": result.received_ms,
                    "reason": "",
                    "claimed_tokens": result.claimed_tokens,
                    "credit": 0,
                    "vouched": int(result.vouched),
                },
            )
            conn.defer(Q.lease_submitted, {"b_lease": result.lease_id})
            unit = unit_record(unit_row)
            mine = ResultRecord(
                result.result_id,
                result.volunteer_id,
                result.payload,
                "pending",
                result.received_ms,
                result.claimed_tokens,
                result.vouched,
                streak,
            )
            # In Q.counted's order, with this result among them.
            stored = sorted(
                [*(_stored(row) for row in counted.all()), mine],
                key=lambda r: (r.received_ms, r.result_id),
            )
            verdict = judge(unit, stored)
            # Reputation first: _settle credits only results still 'pending' (decided now).
            checked = result.volunteer_id if result.gold_checked else ""
            gold = self._settle(conn, unit, verdict, result.received_ms, stored, checked)
            validated = self._apply(conn, unit, verdict, result)
            verdict = replace(verdict, job_validated=validated, gold_kept=tuple(gold))
        return verdict

    def _apply(
        self,
        conn: Conn,
        unit: UnitRecord,
        v: Verdict,
        result: NewResult,
    ) -> bool:
        """Write the verdict (after `_settle`); True when it validated the unit's whole job."""
        now = result.received_ms
        for result_id in v.valid:
            conn.defer(Q.mark_result, {"b_id": result_id, "state": "valid"})
        for result_id in v.invalid:
            conn.defer(Q.mark_result, {"b_id": result_id, "state": "invalid", "reason": v.reason})
        changes: dict[str, Any] = {"b_unit": unit.unit_id, "updated_ms": now}
        if v.new_target:
            changes["target"] = v.new_target
        if v.new_quorum:
            changes["quorum"] = v.new_quorum
        if v.status == "accepted":
            changes.update(
                state="accepted",
                canonical_result_id=v.canonical,
                canonical_payload=v.canonical_payload or None,
                agreement=v.agreement,
                replicas=len(v.valid),
                decided_tau=unit.settings.tau,
            )
        elif v.status == "failed":
            changes.update(state="failed", reason=v.reason)
        conn.defer(Q.update_unit, changes)
        if v.status in ("accepted", "failed"):
            # Replicas still out are no longer needed: their holders get a clear refusal.
            conn.defer(
                Q.cancel_leases,
                {"b_unit": unit.unit_id, "b_reason": f"unit {unit.unit_id} was already {v.status}"},
            )
        kind = {
            "accepted": "unit.accepted",
            "failed": "unit.failed",
            "rejected": "result.rejected",
        }.get(v.status, "result.received")
        self._event(
            conn,
            now,
            kind,
            v.reason or v.status,
            job_id=unit.job_id,
            unit_id=unit.unit_id,
            volunteer_id=result.volunteer_id,
        )
        if v.status not in ("accepted", "failed"):
            return False
        if self.postgres:
            # Two coordinators deciding a job's last two units at once would each still see
            # the other's unit open; the job row lock makes the second count after the first
            # commits. Taken by every decision, it made them all queue on one row, so first
            # look for an open unit no transaction holds: nobody is deciding that one now,
            # whoever decides it later counts again, so this was not the job's last unit.
            # Every unit being decided is held (locked by its submit), and is skipped.
            if conn.execute(
                Q.open_unheld, {"job_id": unit.job_id, "unit_id": unit.unit_id}
            ).first():
                return False
            conn.execute(Q.lock_job, {"job_id": unit.job_id})
        if conn.execute(Q.any_open, {"job_id": unit.job_id}).first() is not None:
            return False
        failed = conn.execute(Q.units_failed, {"job_id": unit.job_id}).scalar_one()
        if failed:
            conn.execute(
                Q.update_job,
                {
                    "b_job": unit.job_id,
                    "state": "failed",
                    "completed_ms": now,
                    "reason": f"{failed} unit(s) failed validation; see failed units",
                },
            )
            self._event(conn, now, "job.failed", f"{failed} unit(s) failed", job_id=unit.job_id)
            return False
        conn.execute(Q.update_job, {"b_job": unit.job_id, "state": "assimilating"})
        self._event(conn, now, "job.validated", "every unit accepted", job_id=unit.job_id)
        return True


def _stored(row: Any) -> ResultRecord:
    """A row of Q.counted (its last two columns: vouched, the volunteer's streak)."""
    result_id, volunteer_id, payload, state, received_ms, claimed, vouched, streak = row
    return ResultRecord(
        result_id,
        volunteer_id,
        payload,
        state,
        received_ms,
        claimed,
        vouched=bool(vouched),
        streak=int(streak or 0),
    )
