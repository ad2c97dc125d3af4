"""Queries for operating a coordinator: job control, volunteer bans, monitoring figures.

A mixin of `SqlStore`, kept apart from the data path (leasing, submitting, assimilating).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, case, func, select

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.sql_base import SqlBase
from allmende.protocol.errors import FailedPrecondition, NotFound, shown

# A volunteer counts as online when it asked for work this recently.
ONLINE_MS = 120_000
RATE_WINDOW_MS = 600_000
# The meta row naming the coordinator key the database serves (written by sql.py).
COORDINATOR_META = "coordinator"


def _span_s(now_ms: int, start_ms: int) -> float:
    """Seconds from `start_ms` to now, at least one (a rate over no time is no rate)."""
    return max(1.0, (now_ms - start_ms) / 1000)


@dataclass(frozen=True)
class VolunteerStats:
    volunteer_id: str
    display_name: str
    client_version: str
    hardware: str
    created_ms: int
    last_seen_ms: int
    online: bool
    banned: bool
    ban_reason: str
    leases_active: int
    results_valid: int
    results_invalid: int
    results_pending: int
    items_valid: int
    items_per_s: float
    quarantined: bool = False
    quarantine_reason: str = ""
    credit: int = 0
    consecutive_valid: int = 0  # the best over task kinds
    gold_checked: int = 0
    gold_missed: int = 0
    disagreements: int = 0
    faults: int = 0
    reputation_valid: int = 0  # validated results on record (what the daily quota grows with)
    leased_today: int = 0
    daily_quota: int = 0  # filled in by the domain, which knows the policy


@dataclass(frozen=True)
class ValidationStats:
    units_accepted: int
    units_failed: int
    results_valid: int
    results_invalid: int
    results_pending: int
    disagreements: int
    leases_expired: int
    volunteers_banned: int


class AdminQueries(SqlBase):
    # ------------------------------------------------------------------ jobs

    def set_job_state(
        self, job_id: str, allowed_from: tuple[str, ...], state: str, now_ms: int
    ) -> None:
        """Move a job to `state` if it is in one of `allowed_from`; one transaction."""
        j = t.jobs
        with self._tx() as conn:
            row = conn.execute(select(j.c.state).where(j.c.job_id == job_id)).first()
            if row is None:
                raise NotFound(f"job {shown(job_id)} does not exist")
            if row.state not in allowed_from:
                raise FailedPrecondition(
                    f"job {job_id} is {row.state}; only a job that is "
                    f"{' or '.join(allowed_from)} can become {state}"
                )
            values: dict[str, Any] = {"state": state}
            if state == "cancelled":
                values.update(completed_ms=now_ms, reason="cancelled by an administrator")
                units = select(t.units.c.unit_id).where(t.units.c.job_id == job_id)
                conn.execute(
                    t.leases.update()
                    .where(t.leases.c.unit_id.in_(units), t.leases.c.state == "active")
                    .values(
                        state="cancelled", reason=f"job {job_id} was cancelled", **t.LEASE_CLOSED
                    )
                )
            conn.execute(j.update().where(j.c.job_id == job_id).values(**values))
            self._event(conn, now_ms, f"job.{state}", f"{row.state} -> {state}", job_id=job_id)

    def update_job(
        self,
        job_id: str,
        now_ms: int,
        priority: int | None = None,
        redundancy: int | None = None,
        tau: float | None = None,
    ) -> None:
        j, u = t.jobs, t.units
        with self._tx() as conn:
            row = conn.execute(select(j).where(j.c.job_id == job_id)).first()
            if row is None:
                raise NotFound(f"job {shown(job_id)} does not exist")
            if row.state not in ("running", "paused") and (redundancy or tau):
                raise FailedPrecondition(f"job {job_id} is {row.state}; its units are decided")
            values: dict[str, Any] = {}
            changes = []
            if priority is not None:
                values["priority"] = priority
                changes.append(f"priority {row.priority} -> {priority}")
            if redundancy is not None and redundancy != row.redundancy:
                if redundancy < row.redundancy:
                    raise FailedPrecondition(
                        f"redundancy: can only be raised while a job runs ({row.redundancy} now);"
                        " units already waiting count on the current quorum"
                    )
                values["max_replicas"] = max(row.max_replicas, redundancy)
                values["redundancy"] = redundancy
                conn.execute(
                    u.update()
                    .where(u.c.job_id == job_id, u.c.state == "open", u.c.target < redundancy)
                    .values(target=redundancy)
                )
                changes.append(f"redundancy {row.redundancy} -> {redundancy}")
            if tau is not None and tau != row.tau:
                values["tau"] = tau
                changes.append(f"tau {row.tau} -> {tau}")
                conn.execute(
                    t.tau_changes.insert().values(
                        job_id=job_id, ts_ms=now_ms, old_tau=row.tau, new_tau=tau
                    )
                )
            if values:
                conn.execute(j.update().where(j.c.job_id == job_id).values(**values))
                self._event(conn, now_ms, "job.updated", ", ".join(changes), job_id=job_id)

    def job_rates(self, now_ms: int) -> dict[str, float]:
        """Accepted items per second per job over the last ten minutes (or since it began)."""
        u, j = t.units, t.jobs
        since = now_ms - RATE_WINDOW_MS
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(u.c.job_id, func.sum(u.c.rows), j.c.created_ms)
                .join(j, j.c.job_id == u.c.job_id)
                .where(u.c.state == "accepted", u.c.updated_ms > since)
                .group_by(u.c.job_id, j.c.created_ms)
            ).all()
        return {
            job_id: float(items) / _span_s(now_ms, max(since, created))
            for job_id, items, created in rows
        }

    def job_priority(self, job_id: str) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(t.jobs.c.priority).where(t.jobs.c.job_id == job_id)
            ).scalar()
        return int(value or 0)

    # ------------------------------------------------------------------ volunteers

    def count_active_leases(self, now_ms: int) -> int:
        le = t.leases
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(le.c.state == "active", le.c.deadline_ms > now_ms)
                ).scalar_one()
            )

    def touch_volunteers(self, seen: Mapping[str, int]) -> None:
        """Record when volunteers were last seen (volunteer id -> ms), in one transaction.
        A time never moves back: another coordinator may have seen a volunteer later."""
        if not seen:
            return
        v = t.volunteers
        with self._tx() as conn:
            conn.execute(
                v.update()
                .where(v.c.volunteer_id == bindparam("b_volunteer"))
                .values(
                    last_seen_ms=case(
                        (v.c.last_seen_ms < bindparam("seen"), bindparam("seen")),
                        else_=v.c.last_seen_ms,
                    )
                ),
                # In id order: two coordinators flushing the same volunteers cannot deadlock.
                [{"b_volunteer": vid, "seen": seen[vid]} for vid in sorted(seen)],
            )

    def set_banned(self, volunteer_id: str, banned: bool, reason: str, now_ms: int) -> None:
        v = t.volunteers
        with self._tx() as conn:
            found = conn.execute(
                select(v.c.volunteer_id).where(v.c.volunteer_id == volunteer_id)
            ).first()
            if found is None:
                raise NotFound(f"volunteer {shown(volunteer_id)} does not exist")
            conn.execute(
                v.update()
                .where(v.c.volunteer_id == volunteer_id)
                .values(banned=int(banned), ban_reason=reason if banned else "")
            )
            if banned:  # its outstanding leases go back to the pool at once
                conn.execute(
                    t.leases.update()
                    .where(t.leases.c.volunteer_id == volunteer_id, t.leases.c.state == "active")
                    .values(state="cancelled", reason="volunteer banned", **t.LEASE_CLOSED)
                )
            self._event(
                conn,
                now_ms,
                "volunteer.banned" if banned else "volunteer.unbanned",
                reason or ("banned" if banned else "unbanned"),
                volunteer_id=volunteer_id,
            )

    def volunteer_stats(self, now_ms: int, volunteer_id: str | None = None) -> list[VolunteerStats]:
        v, r, le, u, rp = t.volunteers, t.results, t.leases, t.units, t.reputation
        since = now_ms - RATE_WINDOW_MS
        record = (
            select(
                rp.c.volunteer_id,
                func.sum(rp.c.credit).label("credit"),
                func.max(rp.c.consecutive_valid).label("cv"),
                func.sum(rp.c.gold_checked).label("gold_checked"),
                func.sum(rp.c.gold_missed).label("gold_missed"),
                func.sum(rp.c.disagreements).label("disagreements"),
                func.sum(rp.c.faults).label("faults"),
                func.sum(rp.c.valid).label("rep_valid"),
            )
            .group_by(rp.c.volunteer_id)
            .subquery()
        )
        results = (
            select(
                r.c.volunteer_id,
                func.sum(case((r.c.state == "valid", 1), else_=0)).label("valid_n"),
                func.sum(case((r.c.state == "invalid", 1), else_=0)).label("invalid_n"),
                func.sum(case((r.c.state == "pending", 1), else_=0)).label("pending_n"),
                func.sum(case((r.c.state == "valid", u.c.rows), else_=0)).label("items_n"),
                func.sum(case((r.c.received_ms > since, u.c.rows), else_=0)).label("recent_n"),
            )
            .select_from(r.join(u, u.c.unit_id == r.c.unit_id))
            .group_by(r.c.volunteer_id)
            .subquery()
        )
        leases = (
            select(
                le.c.volunteer_id,
                func.sum(
                    case(((le.c.state == "active") & (le.c.deadline_ms > now_ms), 1), else_=0)
                ).label("active"),
                func.min(case((le.c.created_ms > since, le.c.created_ms), else_=None)).label(
                    "first_recent"
                ),
            )
            .group_by(le.c.volunteer_id)
            .subquery()
        )
        query = (
            select(
                v,
                results.c.valid_n,
                results.c.invalid_n,
                results.c.pending_n,
                results.c.items_n,
                results.c.recent_n,
                leases.c.active,
                leases.c.first_recent,
                record.c.credit,
                record.c.cv,
                record.c.gold_checked,
                record.c.gold_missed,
                record.c.disagreements,
                record.c.faults,
                record.c.rep_valid,
            )
            .select_from(
                v.outerjoin(results, results.c.volunteer_id == v.c.volunteer_id)
                .outerjoin(leases, leases.c.volunteer_id == v.c.volunteer_id)
                .outerjoin(record, record.c.volunteer_id == v.c.volunteer_id)
            )
            .order_by(v.c.created_ms)
        )
        if volunteer_id is not None:
            query = query.where(v.c.volunteer_id == volunteer_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            VolunteerStats(
                volunteer_id=row.volunteer_id,
                display_name=row.display_name,
                client_version=row.client_version,
                hardware=row.hardware,
                created_ms=row.created_ms,
                last_seen_ms=row.last_seen_ms,
                online=now_ms - row.last_seen_ms < ONLINE_MS
                and not row.banned
                and not row.quarantined,
                banned=bool(row.banned),
                ban_reason=row.ban_reason,
                leases_active=int(row.active or 0),
                results_valid=int(row.valid_n or 0),
                results_invalid=int(row.invalid_n or 0),
                results_pending=int(row.pending_n or 0),
                items_valid=int(row.items_n or 0),
                items_per_s=float(row.recent_n or 0)
                / _span_s(now_ms, max(since, row.first_recent or since)),
                quarantined=bool(row.quarantined),
                quarantine_reason=row.quarantine_reason,
                credit=int(row.credit or 0),
                consecutive_valid=int(row.cv or 0),
                gold_checked=int(row.gold_checked or 0),
                gold_missed=int(row.gold_missed or 0),
                disagreements=int(row.disagreements or 0),
                faults=int(row.faults or 0),
                reputation_valid=int(row.rep_valid or 0),
                leased_today=row.leased_today if row.quota_day == now_ms // 86_400_000 + 1 else 0,
            )
            for row in rows
        ]

    # ------------------------------------------------------------------ key rotation

    def rebind_coordinator(self, old: str, new: str, now_ms: int) -> None:
        """Hand the database from coordinator key `old` to its successor `new`; one
        transaction. The caller checks the rotation chain from `old` to `new`. A replica that
        finds the database already moved to `new` does nothing. (Units need no re-signing:
        each is signed for its lease, with the key current then.)"""
        m = t.meta
        with self._tx() as conn:
            have = conn.execute(
                select(m.c.value).where(m.c.key == COORDINATOR_META).with_for_update()
            ).scalar()
            if have == new:
                return
            if have != old:
                raise FailedPrecondition(
                    f"this database serves coordinator {str(have)[:16]}..., not {old[:16]}..."
                )
            conn.execute(m.update().where(m.c.key == COORDINATOR_META).values(value=new))
            self._event(conn, now_ms, "coordinator.rotated", f"key {old[:16]}... -> {new[:16]}...")

    # ------------------------------------------------------------------ monitoring

    def validation_stats(self, now_ms: int) -> ValidationStats:
        u, r, le, v, e = t.units, t.results, t.leases, t.volunteers, t.events
        with self.engine.connect() as conn:
            units: dict[str, int] = dict(
                conn.execute(select(u.c.state, func.count()).group_by(u.c.state)).all()
            )
            results: dict[str, int] = dict(
                conn.execute(select(r.c.state, func.count()).group_by(r.c.state)).all()
            )
            expired = conn.execute(
                # Leases past their deadline: swept to "expired" at the next lease, or
                # still "active" until then.
                select(func.count()).where(
                    (le.c.state == "expired")
                    | ((le.c.state == "active") & (le.c.deadline_ms <= now_ms))
                )
            ).scalar_one()
            banned = conn.execute(select(func.count()).where(v.c.banned != 0)).scalar_one()
            disagreements = conn.execute(
                select(func.count()).where(
                    e.c.kind == "result.received", e.c.message.like("replicas disagree%")
                )
            ).scalar_one()
        return ValidationStats(
            units_accepted=units.get("accepted", 0),
            units_failed=units.get("failed", 0),
            results_valid=results.get("valid", 0),
            results_invalid=results.get("invalid", 0),
            results_pending=results.get("pending", 0),
            disagreements=disagreements,
            leases_expired=expired,
            volunteers_banned=banned,
        )
