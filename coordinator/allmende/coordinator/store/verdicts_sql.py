"""What became of a volunteer's results: each result's state beside its unit's and job's.

A mixin of `SqlStore` (see sql.py). The domain turns these rows into verdicts
(domain/verdicts.py); the lifetime totals come from `AdminQueries.volunteer_stats`, the same
figures `volunteers list` shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

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


class VerdictQueries(SqlBase):
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
