"""Assimilation in the SQL store: claiming a validated job, reading its accepted rows and
publishing its signed manifest.

A mixin of `SqlStore` (see sql.py). It builds on `JobQueries` (jobs_sql.py): a claim reads
the job it holds.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import and_, func, select, text

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.jobs_sql import JobQueries
from allmende.coordinator.store.records import DatasetItem, DatasetUnit, JobRecord

# pg_try_advisory_xact_lock(classid, objid) namespace for job claims ("Alln").
_CLAIM_CLASS = 0x416C6C6E


class DatasetQueries(JobQueries):
    # Jobs claimed by this process (SQLite; on PostgreSQL the database holds claims); set up
    # by SqlStore.__init__.
    _claims: set[str]
    _claims_lock: threading.Lock

    def jobs_in_state(self, state: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(t.jobs.c.job_id)
                    .where(t.jobs.c.state == state)
                    .order_by(t.jobs.c.created_ms)
                ).scalars()
            )

    @contextmanager
    def claim_job(self, job_id: str, state: str) -> Iterator[JobRecord | None]:
        """Hold a job exclusively while the block runs, if it is (still) in `state`.

        Yields the job, or None when another holder has it or it has left `state` (another
        coordinator finished it). Assimilators claim a job before writing its dataset, so
        coordinators sharing a database and data folder never write one job twice at once.
        On PostgreSQL the claim is a transaction-scoped advisory lock, which the database
        drops when the claiming process dies; on SQLite it holds within this process.
        """
        if not self.postgres:
            with self._claims_lock:
                if job_id in self._claims:
                    yield None
                    return
                self._claims.add(job_id)
            try:
                job = self.get_job(job_id)
                yield job if job is not None and job.state == state else None
            finally:
                with self._claims_lock:
                    self._claims.discard(job_id)
            return
        key = zlib.crc32(job_id.encode()) - (1 << 31)  # a signed 32-bit lock id
        with self.engine.connect() as conn, conn.begin():
            claimed = conn.execute(
                text("SELECT pg_try_advisory_xact_lock(:c, :k)"), {"c": _CLAIM_CLASS, "k": key}
            ).scalar()
            if not claimed:
                yield None
                return
            # Read after the lock: a holder that finished before we got it has committed.
            job = self.get_job(job_id)
            yield job if job is not None and job.state == state else None

    def dataset_units(self, job_id: str) -> Iterator[DatasetUnit]:
        u, r, j = t.units, t.results, t.jobs
        query = (
            select(
                u.c.unit_id,
                u.c.blob,
                func.coalesce(u.c.canonical_payload, r.c.payload),
                j.c.result_dtype,
                u.c.replicas,
                u.c.agreement,
                u.c.decided_tau,
            )
            .select_from(
                u.join(r, r.c.result_id == u.c.canonical_result_id).join(
                    j, j.c.job_id == u.c.job_id
                )
            )
            .where(u.c.job_id == job_id, u.c.state == "accepted")
            .order_by(u.c.seq)
        )
        passed = self._gold_passed(job_id)
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield DatasetUnit(*row, gold_passed=len(passed.get(row[0], ())))

    def _gold_passed(self, job_id: str) -> dict[str, set[int]]:
        """The distinct gold rows each accepted unit's agreeing (valid) results passed: a
        result that missed one was refused before it was stored, so every gold row of a
        valid result's lease was passed."""
        u, r, le = t.units, t.results, t.leases
        query = (
            select(u.c.unit_id, le.c.gold_ids)
            .select_from(
                u.join(r, r.c.unit_id == u.c.unit_id).join(le, le.c.lease_id == r.c.lease_id)
            )
            .where(u.c.job_id == job_id, u.c.state == "accepted", r.c.state == "valid")
        )
        passed: dict[str, set[int]] = {}
        with self.engine.connect() as conn:
            for unit_id, stored in conn.execute(query):
                ids = {int(g) for g in (stored or "").replace(";", ",").split(",") if g}
                passed.setdefault(unit_id, set()).update(ids)
        return passed

    def tau_changes(self, job_id: str) -> list[tuple[int, float, float]]:
        """Every `job set --tau` change of the job: (time ms, old tau, new tau), oldest first."""
        c = t.tau_changes
        with self.engine.connect() as conn:
            return [
                (int(ts), float(old), float(new))
                for ts, old, new in conn.execute(
                    select(c.c.ts_ms, c.c.old_tau, c.c.new_tau)
                    .where(c.c.job_id == job_id)
                    .order_by(c.c.ts_ms, c.c.change_id)
                )
            ]

    def result_envelopes(self, job_id: str) -> Iterator[bytes]:
        """The signed envelope of every result the job received, replicas and outvoted ones
        included: what the job cost (energy) counts them all."""
        u, r = t.units, t.results
        query = (
            select(r.c.envelope)
            .select_from(r.join(u, u.c.unit_id == r.c.unit_id))
            .where(u.c.job_id == job_id)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield bytes(row[0])

    def dataset_items(self, job_id: str) -> Iterator[DatasetItem]:
        i, u = t.items, t.units
        query = (
            select(i.c.seq, i.c.item_id, u.c.unit_id, i.c.row, i.c.content_sha256, i.c.url)
            .select_from(i.join(u, and_(u.c.job_id == i.c.job_id, u.c.seq == i.c.unit_seq)))
            .where(i.c.job_id == job_id)
            .order_by(i.c.seq)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield DatasetItem(*row)

    def publish_version(self, job_id: str, manifest: bytes, signature: bytes, now_ms: int) -> None:
        """Replace a complete job's published manifest by a new version's (a takedown)."""
        j = t.jobs
        with self._tx() as conn:
            conn.execute(
                j.update()
                .where(j.c.job_id == job_id)
                .values(manifest=manifest, manifest_sig=signature)
            )
            self._event(conn, now_ms, "job.version", "dataset version published", job_id=job_id)

    def complete_job(self, job_id: str, manifest: bytes, signature: bytes, now_ms: int) -> None:
        """Publish a dataset, if the job is still assimilating: a quarantine that re-opened
        its units while the dataset was being written sent it back to running, and the rows
        just written may be the quarantined volunteer's."""
        j = t.jobs
        with self._tx() as conn:
            done = conn.execute(
                j.update()
                .where(j.c.job_id == job_id, j.c.state == "assimilating")
                .values(
                    state="complete",
                    completed_ms=now_ms,
                    manifest=manifest,
                    manifest_sig=signature,
                )
            )
            if done.rowcount:
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
