"""The store's side of trust: reputation, daily quotas, faults, quarantine and repair.

A mixin of `SqlStore` (see sql.py), kept apart so that the data path stays readable. Locks
follow sql.py's order (units, then leases, then jobs), so these writers cannot deadlock
with leasing and submitting on PostgreSQL. Settling a decided unit here keeps the gold rows
its quorum yields; the pool of gold rows itself is read and filled in gold_sql.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import func, select

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.fastsql import Conn
from allmende.coordinator.store.records import (
    GoldRow,
    LeasePlan,
    Repair,
    Reputation,
    ResultRecord,
    UnitRecord,
    Verdict,
    gold_image,
)
from allmende.coordinator.store.sql_base import SqlBase
from allmende.coordinator.store.statements import (
    BUMP,
    COUNT_LEASE,
    COUNT_LEASE_IF_LEASED,
    COUNTERS,
    REPUTATION,
    SET_QUORUM,
    SET_QUORUM_IF_LEASED,
    Q,
)


class TrustQueries(SqlBase):
    # ------------------------------------------------------------------ reputation

    def _bump(self, conn: Conn, volunteer_id: str, kind: str, now_ms: int, **deltas: int) -> None:
        """Add `deltas` to a volunteer's counters for `kind` (consecutive_valid=-1 resets it)."""
        streak = deltas.get("consecutive_valid", 0)
        params: dict[str, Any] = {name: deltas.get(name, 0) for name in COUNTERS}
        params.update(
            volunteer_id=volunteer_id,
            kind=kind,
            updated_ms=now_ms,
            consecutive_valid=max(streak, 0),
            reset=int(streak < 0),
        )
        conn.defer(BUMP[conn.dialect.name], params)

    def get_reputation(self, volunteer_id: str) -> dict[str, Reputation]:
        with self._read() as conn:
            rows = conn.execute(REPUTATION, {"volunteer_id": volunteer_id}).all()
        return {
            row.kind: Reputation(row.kind, **{name: getattr(row, name) for name in COUNTERS})
            for row in rows
        }

    def record_fault(
        self, volunteer_id: str, kind: str, reason: str, now_ms: int, gold_missed: bool = False
    ) -> Reputation:
        """Count a refused result against its volunteer; returns the record after it."""
        deltas = {"faults": 1, "consecutive_valid": -1}
        if gold_missed:
            deltas.update(gold_checked=1, gold_missed=1)
        with self._tx() as conn:
            self._bump(conn, volunteer_id, kind, now_ms, **deltas)
            self._event(
                conn,
                now_ms,
                "volunteer.gold_missed" if gold_missed else "volunteer.fault",
                reason,
                volunteer_id=volunteer_id,
            )
        return self.get_reputation(volunteer_id).get(kind, Reputation(kind))

    # ------------------------------------------------------------------ leases

    @staticmethod
    def _lease_writes(
        row: Any,
        job: Any,
        plan: LeasePlan | None,
        volunteer_id: str,
        day: int,
        if_leased: str = "",
    ) -> list[tuple[Any, dict[str, Any]]]:
        """Adaptive replication on the unit just leased, and the volunteer's daily count.
        With `if_leased` (a lease id), each write is made only if that lease was inserted."""
        writes: list[tuple[Any, dict[str, Any]]] = []
        guard = {"b_lease": if_leased} if if_leased else {}
        quorum = row.quorum or job.redundancy
        if row.busy == 0:  # nobody else holds or answered it: this lease may set its quorum
            if plan is not None and plan.solo:
                new = 1
            elif quorum < job.redundancy:  # an earlier solo lease lapsed
                new = job.redundancy
            else:
                new = 0
            if new:
                statement = SET_QUORUM_IF_LEASED if if_leased else SET_QUORUM
                writes.append(
                    (statement, {"b_unit": row.unit_id, "target": new, "quorum": new, **guard})
                )
        if day:
            statement = COUNT_LEASE_IF_LEASED if if_leased else COUNT_LEASE
            writes.append((statement, {"b_volunteer": volunteer_id, "day": day, **guard}))
        return writes

    def reject_lease(self, lease_id: str, reason: str, now_ms: int) -> None:
        """Close a lease whose result was refused (a gold miss), freeing its replica slot."""
        le = t.leases
        with self._tx() as conn:
            row = conn.execute(select(le).where(le.c.lease_id == lease_id)).first()
            if row is None or row.state not in ("active", "expired"):
                return
            if self.postgres:
                conn.execute(
                    select(t.units.c.unit_id)
                    .where(t.units.c.unit_id == row.unit_id)
                    .with_for_update(key_share=True)
                )
            conn.execute(
                le.update()
                .where(le.c.lease_id == lease_id, le.c.state.in_(("active", "expired")))
                .values(state="rejected", reason=reason[:500], **t.LEASE_CLOSED)
            )

    # ------------------------------------------------------------------ results

    def _settle(
        self,
        conn: Conn,
        unit: UnitRecord,
        v: Verdict,
        now_ms: int,
        judged: Sequence[ResultRecord],
        gold_checked: str = "",
    ) -> list[GoldRow]:
        """Reputation and credit for a decided result set, and the gold rows it yields
        (returned, with their ids).
        `judged`: the unit's results the verdict was reached on, as they stood before it;
        `gold_checked`: the volunteer whose result just passed its gold rows.

        Reputation rows are updated in volunteer id order: two units decided at once on
        PostgreSQL, each touching the same two volunteers, would otherwise deadlock."""
        r, rep = t.results, t.reputation
        kind = unit.settings.kind
        gold = v.gold
        if gold and v.gold_streak:
            best = conn.execute(
                select(func.max(rep.c.consecutive_valid))
                .select_from(r.join(rep, rep.c.volunteer_id == r.c.volunteer_id))
                .where(r.c.result_id.in_(list(v.valid)), rep.c.kind == kind)
            ).scalar()
            if (best or 0) < v.gold_streak:
                gold = ()
        # Only results still pending are decided now; the others were counted before.
        decided = {*v.valid, *v.invalid}
        fresh = {
            row.result_id: row.volunteer_id
            for row in judged
            if row.state == "pending" and row.result_id in decided
        }
        deltas: dict[str, dict[str, int]] = {}
        if gold_checked:
            deltas[gold_checked] = {"gold_checked": 1}
        for result_id in v.valid:
            if result_id in fresh:
                deltas.setdefault(fresh[result_id], {}).update(
                    consecutive_valid=1, valid=1, credit=v.credit
                )
        for result_id in v.invalid:
            if result_id in fresh:
                deltas.setdefault(fresh[result_id], {}).update(
                    disagreements=1, consecutive_valid=-1
                )
        for volunteer_id in sorted(deltas):
            self._bump(conn, volunteer_id, kind, now_ms, **deltas[volunteer_id])
        if v.credit:
            for result_id in v.valid:
                if result_id in fresh:
                    conn.defer(Q.mark_result, {"b_id": result_id, "credit": v.credit})
        kept = []
        for row in gold:
            text, answer, image = row[0], row[1], gold_image(row)
            gold_id = conn.execute(
                t.gold.insert()
                .values(
                    job_id=unit.job_id,
                    text=text,
                    answer=answer,
                    image=image,
                    source="quorum",
                    unit_id=unit.unit_id,
                    created_ms=now_ms,
                )
                .returning(t.gold.c.gold_id)
            ).scalar_one()
            kept.append(GoldRow(int(gold_id), unit.job_id, text, answer, unit.unit_id, image))
        return kept

    # ------------------------------------------------------------------ quarantine

    def quarantine(self, volunteer_id: str, reason: str, now_ms: int) -> Repair | None:
        """Stop a volunteer's work and re-verify every row that rested on it alone.

        Its live leases are cancelled and its results invalidated. An accepted unit whose
        remaining valid results no longer reach the unit's quorum (at least the job's
        redundancy once a quarantined result was involved) is reopened for more replicas;
        one that still reaches it keeps its state with a canonical result from someone
        else. Gold rows taken from reopened units are dropped, and a job already validated
        or complete goes back to running, so its dataset is rebuilt without those rows.
        Returns None if the volunteer was already quarantined."""
        u, le, r, j, v = t.units, t.leases, t.results, t.jobs, t.volunteers
        with self._tx() as conn:
            unit_ids = sorted(
                set(
                    conn.execute(
                        select(r.c.unit_id).where(
                            r.c.volunteer_id == volunteer_id, r.c.state != "invalid"
                        )
                    ).scalars()
                )
                | set(
                    conn.execute(
                        select(le.c.unit_id).where(
                            le.c.volunteer_id == volunteer_id, le.c.state == "active"
                        )
                    ).scalars()
                )
            )
            if self.postgres and unit_ids:
                conn.execute(
                    select(u.c.unit_id)
                    .where(u.c.unit_id.in_(unit_ids))
                    .order_by(u.c.unit_id)
                    .with_for_update(key_share=True)
                )
            updated = conn.execute(
                v.update()
                .where(v.c.volunteer_id == volunteer_id, v.c.quarantined == 0)
                .values(quarantined=1, quarantine_reason=reason[:500])
            )
            if not updated.rowcount:
                return None
            conn.execute(
                le.update()
                .where(le.c.volunteer_id == volunteer_id, le.c.state == "active")
                .values(state="cancelled", reason="volunteer quarantined", **t.LEASE_CLOSED)
            )
            # Credit granted to the results now voided is withdrawn, per task kind.
            granted = conn.execute(
                select(j.c.kind, func.sum(r.c.credit))
                .select_from(
                    r.join(u, u.c.unit_id == r.c.unit_id).join(j, j.c.job_id == u.c.job_id)
                )
                .where(r.c.volunteer_id == volunteer_id, r.c.state != "invalid", r.c.credit > 0)
                .group_by(j.c.kind)
            ).all()
            for kind, amount in granted:
                self._bump(conn, volunteer_id, kind, now_ms, credit=-int(amount))
            invalidated = conn.execute(
                r.update()
                .where(r.c.volunteer_id == volunteer_id, r.c.state != "invalid")
                .values(state="invalid", reason=f"volunteer quarantined: {reason}"[:500], credit=0)
            ).rowcount
            reopened: list[str] = []
            jobs: set[str] = set()
            for unit_id in unit_ids:
                unit = conn.execute(
                    select(u.c.unit_id, u.c.job_id, u.c.state, u.c.quorum, j.c.redundancy)
                    .join(j, j.c.job_id == u.c.job_id)
                    .where(u.c.unit_id == unit_id)
                ).one()
                if unit.state != "accepted":
                    continue
                needed = max(unit.quorum, unit.redundancy)
                left = (
                    conn.execute(
                        select(r.c.result_id)
                        .where(r.c.unit_id == unit_id, r.c.state == "valid")
                        .order_by(r.c.received_ms, r.c.result_id)
                    )
                    .scalars()
                    .all()
                )
                if len(left) >= needed:
                    conn.execute(
                        u.update()
                        .where(u.c.unit_id == unit_id)
                        # The remaining first result's rows, not a mean that counted the
                        # quarantined one.
                        .values(
                            canonical_result_id=left[0],
                            canonical_payload=None,
                            replicas=len(left),
                        )
                    )
                    continue
                conn.execute(
                    u.update()
                    .where(u.c.unit_id == unit_id)
                    .values(
                        state="open",
                        target=needed,
                        quorum=needed,
                        canonical_result_id=None,
                        canonical_payload=None,
                        replicas=0,
                        reason=f"re-verifying: volunteer {volunteer_id[:12]} was quarantined",
                        updated_ms=now_ms,
                    )
                )
                reopened.append(unit_id)
                jobs.add(unit.job_id)
            if reopened:
                # Rows the quorum of a reopened unit yielded; the coordinator's own stay.
                conn.execute(
                    t.gold.delete().where(
                        t.gold.c.unit_id.in_(reopened), t.gold.c.source == "quorum"
                    )
                )
            moved = sorted(jobs)
            if moved:
                conn.execute(
                    j.update()
                    .where(
                        j.c.job_id.in_(moved),
                        j.c.state.in_(("assimilating", "complete", "failed")),
                    )
                    .values(
                        state="running",
                        completed_ms=0,
                        reason="re-verifying rows of a quarantined volunteer",
                        manifest=None,
                        manifest_sig=None,
                    )
                )
                for job_id in moved:
                    self._event(
                        conn,
                        now_ms,
                        "job.reverifying",
                        f"units re-opened after quarantine of {volunteer_id[:12]}",
                        job_id=job_id,
                    )
            self._event(
                conn,
                now_ms,
                "volunteer.quarantined",
                f"{reason}; {invalidated} result(s) invalidated, {len(reopened)} unit(s) re-opened",
                volunteer_id=volunteer_id,
            )
        return Repair(invalidated, tuple(reopened), tuple(moved))

    def release_quarantine(self, volunteer_id: str, now_ms: int) -> None:
        v = t.volunteers
        with self._tx() as conn:
            conn.execute(
                v.update()
                .where(v.c.volunteer_id == volunteer_id)
                .values(quarantined=0, quarantine_reason="")
            )
            self._event(conn, now_ms, "volunteer.released", "", volunteer_id=volunteer_id)

    def units_resting_on_quarantined(self, job_id: str) -> Iterator[str]:
        """Accepted units whose canonical result comes from a quarantined volunteer (must be
        none when a dataset is written)."""
        u, r, v = t.units, t.results, t.volunteers
        with self._read() as conn:
            rows = conn.execute(
                select(u.c.unit_id)
                .join(r, r.c.result_id == u.c.canonical_result_id)
                .join(v, v.c.volunteer_id == r.c.volunteer_id)
                .where(u.c.job_id == job_id, u.c.state == "accepted", v.c.quarantined != 0)
            ).scalars()
            yield from list(rows)
