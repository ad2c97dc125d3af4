"""The coordinator's use cases as plain methods: what each RPC does, without gRPC.

Servicers convert protobuf to these calls and map the errors of `allmende.protocol.errors`
to status codes; tests can call them directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allmende.coordinator.domain import quorum
from allmende.coordinator.domain.assimilate import assimilate
from allmende.coordinator.domain.jobs import (
    InputRecord,
    JobRequest,
    new_job_id,
    plan_job,
    resolve_settings,
)
from allmende.coordinator.store.base import Store
from allmende.coordinator.store.records import (
    JobCounts,
    JobRecord,
    LeaseGrant,
    NewResult,
    ResultRecord,
    UnitRecord,
    Verdict,
    VolunteerRecord,
)
from allmende.protocol import codec
from allmende.protocol.errors import (
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    shown,
)
from allmende.protocol.models import ModelRegistry
from allmende.protocol.signing import CTX_REGISTER, CTX_RESULT, SigningKey, fingerprint, verify
from allmende.protocol.tasks import NORM_TOLERANCE, TASK_KINDS, get_task_kind
from allmende.protocol.wire import check_payload, decode_envelope

log = logging.getLogger("allmende.coordinator")

VERSION = "0.1.0"
IDLE_RETRY_MS = 2000
SEEN_EVERY_MS = 10_000
WAIT_RETRY_MS = 1000


@dataclass(frozen=True)
class JobView:
    job: JobRecord
    counts: JobCounts


@dataclass(frozen=True)
class LeaseOffer:
    grant: LeaseGrant | None
    work_remaining: bool
    retry_after_ms: int


@dataclass(frozen=True)
class SubmitOutcome:
    status: str  # this result: pending, accepted, rejected
    reason: str
    unit_status: str = "pending"  # the unit: pending, accepted, failed, rejected
    rows: int = 0


def _now_ms() -> int:
    return int(time.time() * 1000)


class Coordinator:
    def __init__(
        self,
        store: Store,
        key: SigningKey,
        datasets_dir: Path,
        registry: ModelRegistry | None = None,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.store = store
        self.key = key
        self.datasets_dir = datasets_dir
        self.registry = registry or ModelRegistry()
        self.clock = clock
        # Set when a job has become ready for assimilation; the server's assimilator waits on it.
        self.assimilation_wanted = threading.Event()
        # Set on shutdown: no new leases, while submissions of work in flight still land.
        self.draining = threading.Event()
        self._last_seen: dict[str, int] = {}
        # (sha256 of the TLS certificate, our signature over it) when served over TLS.
        self.tls_binding: tuple[bytes, bytes] = (b"", b"")

    # ------------------------------------------------------------------ info / volunteers

    def info(self) -> tuple[bytes, str, str, list[str], list[str]]:
        return (
            self.key.public_key,
            self.key.fingerprint,
            VERSION,
            self.registry.names(),
            sorted(TASK_KINDS),
        )

    def register_volunteer(
        self,
        public_key: bytes,
        display_name: str,
        client_version: str,
        hardware: str,
        signature: bytes,
    ) -> str:
        if len(public_key) != 32:
            raise InvalidArgument("public_key", f"32 bytes (raw Ed25519), got {len(public_key)}")
        for name, value, limit in (
            ("display_name", display_name, 64),
            ("client_version", client_version, 64),
            ("hardware", hardware, 256),
        ):
            if len(value) > limit:
                raise InvalidArgument(name, f"at most {limit} characters")
        try:
            verify(public_key, CTX_REGISTER, public_key, signature)
        except IntegrityError:
            raise Unauthenticated(
                "signature: expected proof of the private key (a signature over the public key)"
            ) from None
        volunteer_id = fingerprint(public_key)
        self.store.put_volunteer(
            VolunteerRecord(
                volunteer_id, public_key, display_name, client_version, hardware, self.clock()
            )
        )
        return volunteer_id

    def _volunteer(self, volunteer_id: str) -> VolunteerRecord:
        if not volunteer_id:
            raise InvalidArgument("volunteer_id", "the id returned by RegisterVolunteer")
        record = self.store.get_volunteer(volunteer_id)
        if record is None:
            raise Unauthenticated(f"unknown volunteer {volunteer_id[:16]!r}; register first")
        if record.banned:
            raise PermissionDenied(f"volunteer {volunteer_id[:16]} is banned: {record.ban_reason}")
        return record

    # ------------------------------------------------------------------ jobs

    def create_job(self, req: JobRequest, records: list[InputRecord]) -> tuple[str, int, int, int]:
        settings = resolve_settings(req, self.registry)
        job_id = new_job_id()
        job, units, items = plan_job(job_id, req, settings, records, self.key, self.clock())
        self.store.create_job(job, units, items)
        log.info(
            "job created job=%s items=%d unique=%d units=%d",
            job_id,
            job.items,
            job.unique_items,
            len(units),
        )
        return job_id, job.items, job.unique_items, len(units)

    def _job(self, job_id: str) -> JobRecord:
        if not job_id:
            raise InvalidArgument("job_id", "a job id such as job-0123456789ab")
        job = self.store.get_job(job_id)
        if job is None:
            raise NotFound(f"job {shown(job_id)} does not exist")
        return job

    def job_status(self, job_id: str) -> JobView:
        return JobView(self._job(job_id), self.store.job_counts(job_id, self.clock()))

    def list_jobs(self) -> list[JobView]:
        now = self.clock()
        return [
            JobView(job, self.store.job_counts(job.job_id, now)) for job in self.store.list_jobs()
        ]

    # ------------------------------------------------------------------ leases

    def lease_work(self, volunteer_id: str) -> LeaseOffer:
        self._volunteer(volunteer_id)
        now = self.clock()
        self._seen(volunteer_id, now)
        if self.draining.is_set():
            return LeaseOffer(None, True, WAIT_RETRY_MS * 5)
        grant = self.store.lease_unit(volunteer_id, uuid.uuid4().hex, now)
        if grant is not None:
            return LeaseOffer(grant, True, 0)
        remaining = self.store.work_remaining(volunteer_id, now)
        return LeaseOffer(None, remaining, WAIT_RETRY_MS if remaining else IDLE_RETRY_MS)

    def _seen(self, volunteer_id: str, now: int) -> None:
        """Record that a volunteer is alive, at most every SEEN_EVERY_MS per volunteer."""
        if now - self._last_seen.get(volunteer_id, 0) >= SEEN_EVERY_MS:
            self._last_seen[volunteer_id] = now
            self.store.touch_volunteer(volunteer_id, now)

    def volunteers_online(self, window_ms: int = 120_000) -> int:
        """Volunteers that asked this process for work recently."""
        now = self.clock()
        return sum(1 for seen in list(self._last_seen.values()) if now - seen < window_ms)

    def release_work(self, volunteer_id: str, lease_id: str, reason: str) -> None:
        self._volunteer(volunteer_id)
        lease = self.store.get_lease(lease_id)
        if lease is None:
            raise NotFound(f"lease {shown(lease_id)} does not exist")
        if lease.volunteer_id != volunteer_id:
            raise PermissionDenied(f"lease {shown(lease_id)} belongs to another volunteer")
        self.store.release_lease(lease_id, reason[:500] or "handed back", self.clock())
        log.info("lease released lease=%s unit=%s reason=%s", lease_id, lease.unit_id, reason)

    # ------------------------------------------------------------------ results

    def submit_result(
        self, envelope_bytes: bytes, signature: bytes, payload: bytes
    ) -> SubmitOutcome:
        env = decode_envelope(envelope_bytes)
        volunteer = self._volunteer(env.volunteer_id)
        try:
            verify(volunteer.public_key, CTX_RESULT, envelope_bytes, signature)
        except IntegrityError:
            raise PermissionDenied(
                f"signature: the result envelope is not signed by volunteer "
                f"{env.volunteer_id[:16]}'s key"
            ) from None
        try:
            check_payload(env, payload)
        except IntegrityError as exc:
            raise InvalidArgument("payload", exc.message) from None
        lease = self.store.get_lease(env.lease_id)
        if lease is None:
            raise NotFound(f"lease {shown(env.lease_id)} does not exist")
        if lease.volunteer_id != env.volunteer_id or lease.unit_id != env.unit_id:
            raise PermissionDenied(
                f"unit {shown(env.unit_id)} is not leased to volunteer {env.volunteer_id[:16]}"
            )
        unit = self.store.get_unit(env.unit_id)
        if unit is None:  # pragma: no cover - leases reference units by foreign key
            raise NotFound(f"unit {shown(env.unit_id)} does not exist")
        matrix = self._check_result(
            unit, env.dtype, env.rows, env.dims, env.unit_sha256, env.model_sha256, payload
        )
        result_id = uuid.uuid4().hex
        verdict = self.store.submit_result(
            NewResult(
                result_id,
                env.unit_id,
                env.lease_id,
                env.volunteer_id,
                envelope_bytes,
                signature,
                payload,
                self.clock(),
            ),
            lambda u, results: self._judge(u, results, result_id, matrix),
        )
        if verdict.status == "accepted" and self._job_state(unit.job_id) == "assimilating":
            self.assimilation_wanted.set()
        log.info(
            "result unit=%s volunteer=%s verdict=%s %s",
            env.unit_id,
            env.volunteer_id[:12],
            verdict.status,
            verdict.reason,
        )
        outcome = (
            ("rejected", verdict.reason or "disagreed with the quorum")
            if result_id in verdict.invalid
            else ("accepted", "")
            if verdict.status == "accepted"
            else ("rejected", verdict.reason)
            if verdict.status == "failed"
            else ("pending", verdict.reason)
        )
        return SubmitOutcome(*outcome, unit_status=verdict.status, rows=unit.rows)

    def _job_state(self, job_id: str) -> str:
        job = self.store.get_job(job_id)
        return job.state if job else ""

    def _check_result(
        self,
        unit: UnitRecord,
        dtype: str,
        rows: int,
        dims: int,
        unit_sha256: bytes,
        model_sha256: str,
        payload: bytes,
    ) -> np.ndarray:
        s = unit.settings
        if unit_sha256 != hashlib.sha256(unit.blob).digest():
            raise InvalidArgument("envelope.unit_sha256", "the sha256 of the unit as leased")
        if model_sha256 != s.model_sha256:
            raise InvalidArgument("envelope.model_sha256", f"{s.model_sha256} (the job's model)")
        if dtype != s.result_dtype:
            raise InvalidArgument("envelope.dtype", f"{s.result_dtype!r}, got {dtype!r}")
        if rows != unit.rows or dims != s.dims:
            raise InvalidArgument(
                "envelope.shape", f"{unit.rows}x{s.dims} (rows x dims), got {rows}x{dims}"
            )
        matrix = codec.decode(payload, dtype, rows, dims)
        if get_task_kind(s.kind).unit_norm:
            norms = np.linalg.norm(matrix, axis=1)
            off = np.abs(norms - 1.0) > NORM_TOLERANCE
            if off.any():
                row = int(np.argmax(off))
                raise InvalidArgument(
                    "payload", f"unit-normalised rows; row {row} has norm {norms[row]:.4f}"
                )
        return matrix

    def _judge(
        self, unit: UnitRecord, results: list[ResultRecord], new_id: str, new_matrix: np.ndarray
    ) -> Verdict:
        s = unit.settings
        if len(results) < unit.target:
            return Verdict("pending", f"waiting for {unit.target - len(results)} more replica(s)")
        matrices = [
            new_matrix
            if r.result_id == new_id
            else codec.decode(r.payload, s.result_dtype, unit.rows, s.dims)
            for r in results
        ]
        outcome = quorum.decide(matrices, s.tau, s.redundancy)
        ids = [r.result_id for r in results]
        if outcome.reached:
            valid = tuple(ids[i] for i in outcome.group)
            invalid = tuple(i for i in ids if i not in valid)
            return Verdict(
                "accepted",
                "disagreed with the quorum" if invalid else "",
                valid=valid,
                invalid=invalid,
                agreement=outcome.agreement,
                canonical=valid[0],
            )
        worst = outcome.worst
        detail = (
            f"lowest row cosine {worst.min_cosine:.6f} at row {worst.worst_row} (tau {s.tau})"
            if worst
            else ""
        )
        if len(results) < s.max_replicas:
            return Verdict(
                "pending",
                f"replicas disagree, {detail}; another replica requested",
                new_target=len(results) + 1,
            )
        return Verdict(
            "failed",
            f"no quorum after {len(results)} results (largest agreeing group "
            f"{len(outcome.group)}, needed {s.redundancy}); {detail}",
        )

    # ------------------------------------------------------------------ datasets

    def manifest(self, job_id: str) -> tuple[bytes, bytes]:
        job = self._job(job_id)
        found = self.store.get_manifest(job_id)
        if found is None:
            raise FailedPrecondition(f"job {job_id} is {job.state}; its dataset is not ready")
        return found

    def dataset_file(self, job_id: str, name: str) -> Path:
        manifest, _ = self.manifest(job_id)
        names = {shard["name"] for shard in json.loads(manifest)["shards"]}
        if name not in names:
            raise NotFound(f"{shown(name)} is not a file of job {job_id}'s dataset")
        return self.datasets_dir / job_id / name

    def assimilate_pending(self) -> list[str]:
        done = []
        for job_id in self.store.jobs_in_state("assimilating"):
            # Coordinators sharing a database and data folder: one writes, the others skip.
            with self.store.claim_job(job_id, "assimilating") as job:
                if job is None:
                    continue
                folder = assimilate(self.store, self.key, job, self.datasets_dir, self.clock())
            log.info("dataset written job=%s folder=%s", job_id, folder)
            done.append(job_id)
        return done
