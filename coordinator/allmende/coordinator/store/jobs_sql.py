"""Jobs in the SQL store: creating one with its units and items, reading jobs and their counts.

A mixin of `SqlStore` (see sql.py). Changing a job's state or settings is in admin_sql.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.records import JobCounts, JobRecord, NewItem, NewJob, NewUnit
from allmende.coordinator.store.sql_base import SqlBase, job_record
from allmende.coordinator.store.statements import Q
from allmende.protocol.errors import AlreadyExists

_INSERT_BATCH = 5000


class JobQueries(SqlBase):
    def create_job(self, job: NewJob, units: Sequence[NewUnit], items: Sequence[NewItem]) -> None:
        s = job.settings
        with self._tx() as conn:
            if conn.execute(select(t.jobs.c.job_id).where(t.jobs.c.job_id == job.job_id)).first():
                raise AlreadyExists(f"job {job.job_id} already exists")
            conn.execute(
                t.jobs.insert().values(
                    job_id=job.job_id,
                    name=job.name,
                    state="running",
                    priority=0,
                    kind=s.kind,
                    model=s.model,
                    model_sha256=s.model_sha256,
                    dims=s.dims,
                    redundancy=s.redundancy,
                    unit_size=s.unit_size,
                    tau=s.tau,
                    max_replicas=s.max_replicas,
                    lease_seconds=s.lease_seconds,
                    result_dtype=s.result_dtype,
                    gold_fraction=s.gold_fraction,
                    rule=s.rule,
                    license=s.license,
                    source_name=job.source_name,
                    items=job.items,
                    unique_items=job.unique_items,
                    fetch_rows=job.fetch_rows,
                    url_items=job.url_items,
                    created_ms=job.created_ms,
                    completed_ms=0,
                    reason="",
                )
            )
            conn.execute(
                t.units.insert(),
                [
                    {
                        "unit_id": u.unit_id,
                        "job_id": job.job_id,
                        "seq": u.seq,
                        "rows": u.rows,
                        "state": "open",
                        "target": s.redundancy,
                        "quorum": s.redundancy,
                        "blob": u.blob,
                        "signature": u.signature,
                        "agreement": 0.0,
                        "replicas": 0,
                        "reason": "",
                        "updated_ms": job.created_ms,
                    }
                    for u in units
                ],
            )
            for start in range(0, len(items), _INSERT_BATCH):
                conn.execute(
                    t.items.insert(),
                    [
                        {
                            "job_id": job.job_id,
                            "seq": i.seq,
                            "item_id": i.item_id,
                            "unit_seq": i.unit_seq,
                            "row": i.row,
                            "content_sha256": i.content_sha256,
                            "url": i.url,
                        }
                        for i in items[start : start + _INSERT_BATCH]
                    ],
                )
            self._event(
                conn,
                job.created_ms,
                "job.created",
                f"{job.items} items, {len(units)} units",
                job_id=job.job_id,
            )

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._read() as conn:
            row = conn.execute(Q.job, {"job_id": job_id}).first()
        return job_record(row) if row else None

    def list_jobs(self) -> list[JobRecord]:
        with self._read() as conn:
            rows = conn.execute(select(t.jobs).order_by(t.jobs.c.created_ms)).all()
        return [job_record(r) for r in rows]

    def job_counts(self, job_id: str, now_ms: int) -> JobCounts:
        u, r, le = t.units, t.results, t.leases
        with self.engine.connect() as conn:
            by_state: dict[str, int] = dict(
                conn.execute(
                    select(u.c.state, func.count()).where(u.c.job_id == job_id).group_by(u.c.state)
                ).all()
            )
            unit_ids = select(u.c.unit_id).where(u.c.job_id == job_id)
            open_units = select(u.c.unit_id).where(u.c.job_id == job_id, u.c.state == "open")
            in_progress = conn.execute(
                select(func.count(func.distinct(le.c.unit_id))).where(
                    le.c.unit_id.in_(open_units), le.c.state == "active", le.c.deadline_ms > now_ms
                )
            ).scalar_one()
            received = conn.execute(
                select(func.count()).select_from(r).where(r.c.unit_id.in_(unit_ids))
            ).scalar_one()
            rejected = conn.execute(
                select(func.count())
                .select_from(r)
                .where(r.c.unit_id.in_(unit_ids), r.c.state == "invalid")
            ).scalar_one()
            volunteers = conn.execute(
                select(func.count(func.distinct(r.c.volunteer_id))).where(
                    r.c.unit_id.in_(unit_ids), r.c.state == "valid"
                )
            ).scalar_one()
            min_agreement = conn.execute(
                select(func.min(u.c.agreement)).where(u.c.job_id == job_id, u.c.state == "accepted")
            ).scalar()
            failed = conn.execute(
                select(u.c.unit_id, u.c.reason)
                .where(u.c.job_id == job_id, u.c.state == "failed")
                .order_by(u.c.seq)
            ).all()
        return JobCounts(
            units_total=sum(by_state.values()),
            units_accepted=by_state.get("accepted", 0),
            units_failed=by_state.get("failed", 0),
            units_in_progress=in_progress,
            results_received=received,
            results_rejected=rejected,
            min_agreement=float(min_agreement) if min_agreement is not None else 0.0,
            volunteers=volunteers,
            failed_units=[(f.unit_id, f.reason) for f in failed],
        )
