"""Volunteers in the SQL store: registering one and reading its record.

A mixin of `SqlStore` (see sql.py). Bans, last-seen times and statistics are in admin_sql.py;
reputation and quarantine in trust_sql.py.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.records import Reputation, VolunteerRecord
from allmende.coordinator.store.sql_base import SqlBase
from allmende.coordinator.store.statements import COUNTERS, STANDING, Q


class VolunteerQueries(SqlBase):
    def put_volunteer(self, volunteer: VolunteerRecord) -> None:
        v = t.volunteers
        values = {
            "display_name": volunteer.display_name,
            "client_version": volunteer.client_version,
            "hardware": volunteer.hardware,
        }
        dialect_insert = postgresql.insert if self.postgres else sqlite.insert
        with self._tx() as conn:
            # Insert-or-nothing, so the same volunteer registering with two coordinators at
            # once is one row and one event, not a unique-key error.
            inserted = conn.execute(
                dialect_insert(v)
                .values(
                    volunteer_id=volunteer.volunteer_id,
                    public_key=volunteer.public_key,
                    created_ms=volunteer.created_ms,
                    last_seen_ms=volunteer.created_ms,
                    banned=0,
                    ban_reason="",
                    **values,
                )
                .on_conflict_do_nothing(index_elements=[v.c.volunteer_id])
                .returning(v.c.volunteer_id)
            ).first()
            if inserted is None:
                conn.execute(
                    v.update().where(v.c.volunteer_id == volunteer.volunteer_id).values(**values)
                )
            else:
                self._event(
                    conn,
                    volunteer.created_ms,
                    "volunteer.registered",
                    volunteer.display_name or volunteer.volunteer_id[:12],
                    volunteer_id=volunteer.volunteer_id,
                )

    def get_volunteer(self, volunteer_id: str) -> VolunteerRecord | None:
        with self._read() as conn:
            row = conn.execute(Q.volunteer, {"volunteer_id": volunteer_id}).first()
        return None if row is None else volunteer_record(row)

    def get_standing(
        self, volunteer_id: str, now_ms: int = 0
    ) -> tuple[VolunteerRecord | None, dict[str, Reputation]]:
        """A volunteer's record (with the leases it holds unexpired at `now_ms`) and its
        reputation per task kind, in one read."""
        with self._read() as conn:
            rows = conn.execute(STANDING, {"volunteer_id": volunteer_id, "now": now_ms}).all()
            return standing_of(rows)


def standing_of(rows: list[Any]) -> tuple[VolunteerRecord | None, dict[str, Reputation]]:
    """A volunteer's record and reputation per task kind, from the rows of STANDING."""
    if not rows:
        return None, {}
    return volunteer_record(rows[0]), {
        row.rep_kind: Reputation(
            row.rep_kind, **{name: getattr(row, f"rep_{name}") for name in COUNTERS}
        )
        for row in rows
        if row.rep_kind is not None
    }


def volunteer_record(row: Any) -> VolunteerRecord:
    return VolunteerRecord(
        volunteer_id=row.volunteer_id,
        public_key=row.public_key,
        display_name=row.display_name,
        client_version=row.client_version,
        hardware=row.hardware,
        created_ms=row.created_ms,
        banned=bool(row.banned),
        ban_reason=row.ban_reason,
        last_seen_ms=row.last_seen_ms,
        quarantined=bool(row.quarantined),
        quarantine_reason=row.quarantine_reason,
        quota_day=row.quota_day,
        leased_today=row.leased_today,
        live_leases=getattr(row, "live_leases", 0) or 0,
    )
