"""The SQL store: one implementation of `Store` over SQLAlchemy Core.

SQLite (the embedded default) runs in WAL mode and takes its write lock at the start of each
transaction (BEGIN IMMEDIATE), so read-then-write sequences cannot deadlock or interleave.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, and_, create_engine, event, func, select
from sqlalchemy.pool import StaticPool

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.admin_sql import AdminQueries
from allmende.coordinator.store.base import Judge
from allmende.coordinator.store.records import (
    DatasetItem,
    DatasetUnit,
    JobCounts,
    JobRecord,
    JobSettings,
    LeaseGrant,
    LeaseRecord,
    NewItem,
    NewJob,
    NewResult,
    NewUnit,
    ResultRecord,
    UnitRecord,
    Verdict,
    VolunteerRecord,
)
from allmende.protocol.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)

_INSERT_BATCH = 5000
_WRITE = "allmende_write"


def _sqlite_engine(url: str) -> Engine:
    memory = url in ("sqlite://", "sqlite:///:memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if memory:
        kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front; readers get a deferred snapshot.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get(_WRITE) else "BEGIN")

    return engine


def open_store(url: str) -> SqlStore:
    """Open (and create if needed) the store at a SQLAlchemy URL."""
    if url.startswith("sqlite"):
        return SqlStore(_sqlite_engine(url), serialise_writes=True)
    raise InvalidArgument("database", f"a sqlite:/// URL, got {url.split(':', 1)[0]!r}")


def _settings(row: Any) -> JobSettings:
    return JobSettings(
        kind=row.kind,
        model=row.model,
        model_sha256=row.model_sha256,
        dims=row.dims,
        redundancy=row.redundancy,
        unit_size=row.unit_size,
        tau=row.tau,
        max_replicas=row.max_replicas,
        lease_seconds=row.lease_seconds,
        result_dtype=row.result_dtype,
    )


def _job(row: Any) -> JobRecord:
    return JobRecord(
        job_id=row.job_id,
        name=row.name,
        state=row.state,
        settings=_settings(row),
        source_name=row.source_name,
        items=row.items,
        unique_items=row.unique_items,
        created_ms=row.created_ms,
        completed_ms=row.completed_ms,
        reason=row.reason,
        priority=row.priority,
    )


def _unit(row: Any) -> UnitRecord:
    return UnitRecord(
        unit_id=row.unit_id,
        job_id=row.job_id,
        seq=row.seq,
        rows=row.rows,
        state=row.state,
        target=row.target,
        blob=row.blob,
        settings=_settings(row),
    )


class SqlStore(AdminQueries):
    """`Store` over SQLAlchemy Core. Each public method is one transaction."""

    def __init__(self, engine: Engine, serialise_writes: bool = False) -> None:
        self.engine = engine
        # SQLite allows one writer; a process-wide lock keeps threads from queueing in
        # SQLite's busy handler, which is slower and unfair.
        self._write_lock = threading.Lock() if serialise_writes else None
        t.metadata.create_all(engine)
        with self._tx() as conn:
            have = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "schema")).scalar()
            if have is None:
                conn.execute(t.meta.insert().values(key="schema", value=str(t.SCHEMA_VERSION)))
            elif int(have) != t.SCHEMA_VERSION:
                raise FailedPrecondition(
                    f"database schema version {have}, this coordinator needs {t.SCHEMA_VERSION}"
                )

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """One write transaction: committed when the block ends, rolled back on error."""
        if self._write_lock is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self._write_lock, self.engine.connect() as conn:
            conn.info[_WRITE] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop(_WRITE, None)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ jobs

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
                    source_name=job.source_name,
                    items=job.items,
                    unique_items=job.unique_items,
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
        with self.engine.connect() as conn:
            row = conn.execute(select(t.jobs).where(t.jobs.c.job_id == job_id)).first()
        return _job(row) if row else None

    def list_jobs(self) -> list[JobRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.jobs).order_by(t.jobs.c.created_ms)).all()
        return [_job(r) for r in rows]

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

    # ------------------------------------------------------------------ volunteers

    def put_volunteer(self, volunteer: VolunteerRecord) -> None:
        v = t.volunteers
        with self._tx() as conn:
            exists = conn.execute(
                select(v.c.volunteer_id).where(v.c.volunteer_id == volunteer.volunteer_id)
            ).first()
            values = {
                "display_name": volunteer.display_name,
                "client_version": volunteer.client_version,
                "hardware": volunteer.hardware,
            }
            if exists:
                conn.execute(
                    v.update().where(v.c.volunteer_id == volunteer.volunteer_id).values(**values)
                )
            else:
                conn.execute(
                    v.insert().values(
                        volunteer_id=volunteer.volunteer_id,
                        public_key=volunteer.public_key,
                        created_ms=volunteer.created_ms,
                        last_seen_ms=volunteer.created_ms,
                        banned=0,
                        ban_reason="",
                        **values,
                    )
                )
                self._event(
                    conn,
                    volunteer.created_ms,
                    "volunteer.registered",
                    volunteer.display_name or volunteer.volunteer_id[:12],
                    volunteer_id=volunteer.volunteer_id,
                )

    def get_volunteer(self, volunteer_id: str) -> VolunteerRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.volunteers).where(t.volunteers.c.volunteer_id == volunteer_id)
            ).first()
        if row is None:
            return None
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
        )

    # ------------------------------------------------------------------ leases

    def _leasable(self, volunteer_id: str, now_ms: int, with_capacity: bool) -> Any:
        u, j, le, r = t.units, t.jobs, t.leases, t.results
        mine_active = (
            select(le.c.lease_id)
            .where(
                le.c.unit_id == u.c.unit_id,
                le.c.volunteer_id == volunteer_id,
                le.c.state == "active",
                le.c.deadline_ms > now_ms,
            )
            .exists()
        )
        mine_result = (
            select(r.c.result_id)
            .where(r.c.unit_id == u.c.unit_id, r.c.volunteer_id == volunteer_id)
            .exists()
        )
        cond = [j.c.state == "running", u.c.state == "open", ~mine_active, ~mine_result]
        if with_capacity:
            active = (
                select(func.count())
                .where(
                    le.c.unit_id == u.c.unit_id, le.c.state == "active", le.c.deadline_ms > now_ms
                )
                .scalar_subquery()
            )
            counted = (
                select(func.count())
                .where(r.c.unit_id == u.c.unit_id, r.c.state != "invalid")
                .scalar_subquery()
            )
            cond.append(active + counted < u.c.target)
        return (
            select(u.c.unit_id, u.c.blob, u.c.signature, j.c.lease_seconds)
            .select_from(u.join(j, j.c.job_id == u.c.job_id))
            .where(and_(*cond))
            .order_by(j.c.priority.desc(), j.c.created_ms, u.c.seq)
            .limit(1)
        )

    def lease_unit(self, volunteer_id: str, lease_id: str, now_ms: int) -> LeaseGrant | None:
        with self._tx() as conn:
            row = conn.execute(self._leasable(volunteer_id, now_ms, with_capacity=True)).first()
            if row is None:
                return None
            deadline = now_ms + row.lease_seconds * 1000
            conn.execute(
                t.leases.insert().values(
                    lease_id=lease_id,
                    unit_id=row.unit_id,
                    volunteer_id=volunteer_id,
                    state="active",
                    created_ms=now_ms,
                    deadline_ms=deadline,
                    reason="",
                )
            )
        return LeaseGrant(lease_id, row.unit_id, deadline, row.blob, row.signature)

    def work_remaining(self, volunteer_id: str, now_ms: int) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(self._leasable(volunteer_id, now_ms, False)).first() is not None

    def get_lease(self, lease_id: str) -> LeaseRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.leases).where(t.leases.c.lease_id == lease_id)).first()
        if row is None:
            return None
        return LeaseRecord(row.lease_id, row.unit_id, row.volunteer_id, row.state, row.deadline_ms)

    def get_unit(self, unit_id: str) -> UnitRecord | None:
        u, j = t.units, t.jobs
        with self.engine.connect() as conn:
            row = conn.execute(
                select(u, j).join(j, j.c.job_id == u.c.job_id).where(u.c.unit_id == unit_id)
            ).first()
        return _unit(row) if row else None

    def release_lease(self, lease_id: str, reason: str, now_ms: int) -> None:
        le = t.leases
        with self._tx() as conn:
            row = conn.execute(select(le).where(le.c.lease_id == lease_id)).first()
            if row is None or row.state != "active":
                return
            conn.execute(
                le.update().where(le.c.lease_id == lease_id).values(state="released", reason=reason)
            )
            self._event(
                conn,
                now_ms,
                "lease.released",
                reason,
                unit_id=row.unit_id,
                volunteer_id=row.volunteer_id,
            )

    # ------------------------------------------------------------------ results

    def submit_result(self, result: NewResult, judge: Judge) -> Verdict:
        u, j, le, r = t.units, t.jobs, t.leases, t.results
        with self._tx() as conn:
            lease = conn.execute(select(le).where(le.c.lease_id == result.lease_id)).first()
            if lease is None:
                raise NotFound(f"lease {result.lease_id!r} does not exist")
            if lease.volunteer_id != result.volunteer_id or lease.unit_id != result.unit_id:
                raise PermissionDenied(
                    f"unit {result.unit_id!r} is not leased to volunteer {result.volunteer_id[:12]}"
                )
            if lease.state != "active":
                why = {
                    "submitted": "a result was already submitted on it",
                    "released": "it was released (handed back)",
                }.get(lease.state, f"it was {lease.state}: {lease.reason}")
                raise FailedPrecondition(f"lease {result.lease_id} is closed; {why}")
            unit_row = conn.execute(
                select(u, j).join(j, j.c.job_id == u.c.job_id).where(u.c.unit_id == result.unit_id)
            ).first()
            assert unit_row is not None  # foreign key
            if unit_row.state != "open":
                raise FailedPrecondition(f"unit {result.unit_id} is already {unit_row.state}")
            if conn.execute(
                select(r.c.result_id).where(
                    r.c.unit_id == result.unit_id, r.c.volunteer_id == result.volunteer_id
                )
            ).first():
                raise AlreadyExists(f"volunteer already submitted a result for {result.unit_id}")
            conn.execute(
                r.insert().values(
                    result_id=result.result_id,
                    unit_id=result.unit_id,
                    lease_id=result.lease_id,
                    volunteer_id=result.volunteer_id,
                    envelope=result.envelope,
                    signature=result.signature,
                    payload=result.payload,
                    state="pending",
                    received_ms=result.received_ms,
                    reason="",
                )
            )
            conn.execute(
                le.update().where(le.c.lease_id == result.lease_id).values(state="submitted")
            )
            unit = _unit(unit_row)
            stored = conn.execute(
                select(r.c.result_id, r.c.volunteer_id, r.c.payload, r.c.state, r.c.received_ms)
                .where(r.c.unit_id == result.unit_id, r.c.state != "invalid")
                .order_by(r.c.received_ms, r.c.result_id)
            ).all()
            verdict = judge(unit, [ResultRecord(*row) for row in stored])
            self._apply(conn, unit, verdict, result)
        return verdict

    def _apply(self, conn: Connection, unit: UnitRecord, v: Verdict, result: NewResult) -> None:
        u, j, r = t.units, t.jobs, t.results
        now = result.received_ms
        if v.valid:
            conn.execute(r.update().where(r.c.result_id.in_(v.valid)).values(state="valid"))
        if v.invalid:
            conn.execute(
                r.update()
                .where(r.c.result_id.in_(v.invalid))
                .values(state="invalid", reason=v.reason)
            )
        changes: dict[str, Any] = {"updated_ms": now}
        if v.new_target:
            changes["target"] = v.new_target
        if v.status == "accepted":
            changes.update(
                state="accepted",
                canonical_result_id=v.canonical,
                agreement=v.agreement,
                replicas=len(v.valid),
            )
        elif v.status == "failed":
            changes.update(state="failed", reason=v.reason)
        conn.execute(u.update().where(u.c.unit_id == unit.unit_id).values(**changes))
        if v.status in ("accepted", "failed"):
            # Replicas still out are no longer needed: their holders get a clear refusal.
            conn.execute(
                t.leases.update()
                .where(t.leases.c.unit_id == unit.unit_id, t.leases.c.state == "active")
                .values(state="cancelled", reason=f"unit {unit.unit_id} was already {v.status}")
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
            return
        open_left = conn.execute(
            select(func.count()).where(u.c.job_id == unit.job_id, u.c.state == "open")
        ).scalar_one()
        if open_left:
            return
        failed = conn.execute(
            select(func.count()).where(u.c.job_id == unit.job_id, u.c.state == "failed")
        ).scalar_one()
        if failed:
            conn.execute(
                j.update()
                .where(j.c.job_id == unit.job_id)
                .values(
                    state="failed",
                    completed_ms=now,
                    reason=f"{failed} unit(s) failed validation; see failed units",
                )
            )
            self._event(conn, now, "job.failed", f"{failed} unit(s) failed", job_id=unit.job_id)
        else:
            conn.execute(j.update().where(j.c.job_id == unit.job_id).values(state="assimilating"))
            self._event(conn, now, "job.validated", "every unit accepted", job_id=unit.job_id)

    # ------------------------------------------------------------------ assimilation

    def jobs_in_state(self, state: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(t.jobs.c.job_id)
                    .where(t.jobs.c.state == state)
                    .order_by(t.jobs.c.created_ms)
                ).scalars()
            )

    def dataset_units(self, job_id: str) -> Iterator[DatasetUnit]:
        u, r, j = t.units, t.results, t.jobs
        query = (
            select(
                u.c.unit_id, u.c.blob, r.c.payload, j.c.result_dtype, u.c.replicas, u.c.agreement
            )
            .select_from(
                u.join(r, r.c.result_id == u.c.canonical_result_id).join(
                    j, j.c.job_id == u.c.job_id
                )
            )
            .where(u.c.job_id == job_id, u.c.state == "accepted")
            .order_by(u.c.seq)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield DatasetUnit(*row)

    def dataset_items(self, job_id: str) -> Iterator[DatasetItem]:
        i, u = t.items, t.units
        query = (
            select(i.c.seq, i.c.item_id, u.c.unit_id, i.c.row, i.c.content_sha256)
            .select_from(i.join(u, and_(u.c.job_id == i.c.job_id, u.c.seq == i.c.unit_seq)))
            .where(i.c.job_id == job_id)
            .order_by(i.c.seq)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield DatasetItem(*row)

    def complete_job(self, job_id: str, manifest: bytes, signature: bytes, now_ms: int) -> None:
        j = t.jobs
        with self._tx() as conn:
            conn.execute(
                j.update()
                .where(j.c.job_id == job_id)
                .values(
                    state="complete",
                    completed_ms=now_ms,
                    manifest=manifest,
                    manifest_sig=signature,
                )
            )
            self._event(conn, now_ms, "job.complete", "dataset written", job_id=job_id)

    def get_manifest(self, job_id: str) -> tuple[bytes, bytes] | None:
        j = t.jobs
        with self.engine.connect() as conn:
            row = conn.execute(
                select(j.c.manifest, j.c.manifest_sig).where(j.c.job_id == job_id)
            ).first()
        if row is None or row.manifest is None:
            return None
        return row.manifest, row.manifest_sig

    # ------------------------------------------------------------------ events

    def _event(
        self,
        conn: Connection,
        now_ms: int,
        kind: str,
        message: str,
        job_id: str = "",
        unit_id: str = "",
        volunteer_id: str = "",
    ) -> None:
        conn.execute(
            t.events.insert().values(
                ts_ms=now_ms,
                kind=kind,
                message=message,
                job_id=job_id,
                unit_id=unit_id,
                volunteer_id=volunteer_id,
            )
        )

    def add_event(
        self,
        now_ms: int,
        kind: str,
        message: str,
        job_id: str = "",
        unit_id: str = "",
        volunteer_id: str = "",
    ) -> None:
        with self._tx() as conn:
            self._event(conn, now_ms, kind, message, job_id, unit_id, volunteer_id)

    def recent_events(self, limit: int) -> list[tuple[int, str, str, str, str, str]]:
        e = t.events
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(e.c.ts_ms, e.c.kind, e.c.job_id, e.c.unit_id, e.c.volunteer_id, e.c.message)
                .order_by(e.c.event_id.desc())
                .limit(limit)
            ).all()
        return [tuple(r) for r in reversed(rows)]
