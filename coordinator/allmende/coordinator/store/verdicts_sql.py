"""What became of a volunteer's results: each result's state beside its unit's and job's,
and the volunteer's lifetime totals.

A mixin of `SqlStore` (see sql.py). The domain turns these rows into verdicts
(domain/verdicts.py). The totals are counted exactly as `AdminQueries.volunteer_stats`
counts them for `volunteers list` (result states; credit from the reputation records), but
for one volunteer through its indexes: every working volunteer asks every few seconds, and
the list's query aggregates the whole results table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import case, func, select

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.sql_base import SqlBase


@dataclass(frozen=True)
class ResultStanding:
    """One result of a volunteer, with the state of the unit and job it belongs to."""

    unit_id: str
    job_id: str
    state: str  # the result: pending, valid, invalid
    reason: str
    credit: int
    rows: int
    unit_state: str  # open, accepted, failed
    unit_reason: str
    job_state: str  # running, paused, cancelled, ...
    job_reason: str


@dataclass(frozen=True)
class VolunteerTotals:
    results_valid: int = 0
    results_invalid: int = 0
    results_pending: int = 0
    credit: int = 0
    items_valid: int = 0


class VerdictQueries(SqlBase):
    def volunteer_totals(self, volunteer_id: str) -> VolunteerTotals:
        r, u, rp = t.results, t.units, t.reputation
        counts = (
            select(
                func.sum(case((r.c.state == "valid", 1), else_=0)),
                func.sum(case((r.c.state == "invalid", 1), else_=0)),
                func.sum(case((r.c.state == "pending", 1), else_=0)),
                func.sum(case((r.c.state == "valid", u.c.rows), else_=0)),
            )
            .select_from(r.join(u, u.c.unit_id == r.c.unit_id))
            .where(r.c.volunteer_id == volunteer_id)
        )
        credit = select(func.sum(rp.c.credit)).where(rp.c.volunteer_id == volunteer_id)
        with self._read() as conn:
            valid, invalid, pending, items = conn.execute(counts).one()
            granted = conn.execute(credit).scalar()
        return VolunteerTotals(
            int(valid or 0),
            int(invalid or 0),
            int(pending or 0),
            int(granted or 0),
            int(items or 0),
        )

    def result_standings(self, volunteer_id: str, unit_ids: Sequence[str]) -> list[ResultStanding]:
        """The volunteer's results on `unit_ids` (units it has no result on are left out)."""
        if not unit_ids:
            return []
        r, u, j = t.results, t.units, t.jobs
        query = (
            select(
                r.c.unit_id,
                u.c.job_id,
                r.c.state,
                r.c.reason,
                r.c.credit,
                u.c.rows,
                u.c.state.label("unit_state"),
                u.c.reason.label("unit_reason"),
                j.c.state.label("job_state"),
                j.c.reason.label("job_reason"),
            )
            .select_from(r.join(u, u.c.unit_id == r.c.unit_id).join(j, j.c.job_id == u.c.job_id))
            .where(r.c.volunteer_id == volunteer_id, r.c.unit_id.in_(list(unit_ids)))
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            ResultStanding(
                unit_id=row.unit_id,
                job_id=row.job_id,
                state=row.state,
                reason=row.reason or "",
                credit=int(row.credit or 0),
                rows=int(row.rows),
                unit_state=row.unit_state,
                unit_reason=row.unit_reason or "",
                job_state=row.job_state,
                job_reason=row.job_reason or "",
            )
            for row in rows
        ]
