"""The coordinator's use cases as plain methods: what each RPC does, without gRPC.

Servicers convert protobuf to these calls and map the errors of `allmende.protocol.errors`
to status codes; tests can call them directly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allmende.coordinator.domain.assimilate import assimilate
from allmende.coordinator.domain.compose import compose, new_rng
from allmende.coordinator.domain.gold import GoldPool
from allmende.coordinator.domain.jobs import (
    InputRecord,
    JobRequest,
    new_job_id,
    plan_job,
    resolve_settings,
)
from allmende.coordinator.domain.submit import Submissions
from allmende.coordinator.domain.trust import DAY_MS, TrustPolicy, utc_day
from allmende.coordinator.store.base import Store
from allmende.coordinator.store.records import (
    JobCounts,
    JobRecord,
    JobSettings,
    LeaseCandidate,
    LeaseGrant,
    LeasePlan,
    Reputation,
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
from allmende.protocol.signing import CTX_REGISTER, SigningKey, fingerprint, verify
from allmende.protocol.tasks import TASK_KINDS

log = logging.getLogger("allmende.coordinator")

# Answers for texts of a job: float32 rows in the job's result dtype after rounding.
GoldComputer = Callable[[JobSettings, list[str]], np.ndarray]
# Gold rows a coordinator computes for a new job (the rest come from accepted units).
SEED_GOLD_ROWS = 32

VERSION = "0.1.0"
IDLE_RETRY_MS = 2000
SEEN_EVERY_MS = 10_000
WAIT_RETRY_MS = 1000
# Units one LeaseWork call may ask for (and results one SubmitResults call may carry).
MAX_LEASE_UNITS = 32


@dataclass(frozen=True)
class JobView:
    job: JobRecord
    counts: JobCounts


@dataclass(frozen=True)
class LeaseOffer:
    grant: LeaseGrant | None
    work_remaining: bool
    retry_after_ms: int
    notice: str = ""
    more: tuple[LeaseGrant, ...] = ()  # further grants, when several units were asked for

    @property
    def grants(self) -> tuple[LeaseGrant, ...]:
        return () if self.grant is None else (self.grant, *self.more)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Coordinator(Submissions):
    def __init__(
        self,
        store: Store,
        key: SigningKey,
        datasets_dir: Path,
        registry: ModelRegistry | None = None,
        clock: Callable[[], int] = _now_ms,
        policy: TrustPolicy | None = None,
        gold_computer: GoldComputer | None = None,
    ) -> None:
        self.store = store
        self.policy = policy or TrustPolicy()
        self.gold = GoldPool(store, self.policy.gold_pool)
        # Computes answers for a new job's first gold rows (the model, on the coordinator);
        # without one, gold rows come only from units a quorum accepted.
        self.gold_computer = gold_computer
        self.key = key
        self.datasets_dir = datasets_dir
        self.registry = registry or ModelRegistry()
        self.clock = clock
        # Set when a job has become ready for assimilation; the server's assimilator waits on it.
        self.assimilation_wanted = threading.Event()
        # Set on shutdown: no new leases, while submissions of work in flight still land.
        self.draining = threading.Event()
        self._last_seen: dict[str, int] = {}
        self._seen_due: dict[str, int] = {}  # noted, not yet written (see flush_seen)
        self._seen_lock = threading.Lock()
        # (sha256 of the TLS certificate, our signature over it) when served over TLS.
        self.tls_binding: tuple[bytes, bytes] = (b"", b"")
        # Signed key rotations leading to `key`, oldest first: (rotation bytes, signature).
        self.key_chain: list[tuple[bytes, bytes]] = []

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
        return self._admitted(volunteer_id, self.store.get_volunteer(volunteer_id))

    def _admitted(self, volunteer_id: str, record: VolunteerRecord | None) -> VolunteerRecord:
        """The volunteer's record, if it may work: registered, not banned, not quarantined."""
        if record is None:
            raise Unauthenticated(f"unknown volunteer {volunteer_id[:16]!r}; register first")
        if record.banned:
            raise PermissionDenied(f"volunteer {volunteer_id[:16]} is banned: {record.ban_reason}")
        if record.quarantined:
            raise PermissionDenied(
                f"volunteer {volunteer_id[:16]} is quarantined: {record.quarantine_reason}"
            )
        return record

    # ------------------------------------------------------------------ jobs

    def create_job(self, req: JobRequest, records: list[InputRecord]) -> tuple[str, int, int, int]:
        settings = resolve_settings(req, self.registry)
        job_id = new_job_id()
        job, units, items = plan_job(job_id, req, settings, records, self.key, self.clock())
        self.store.create_job(job, units, items)
        if settings.gold_fraction > 0 and self.gold_computer is not None:
            self._seed_gold(job_id, settings, records)
        log.info(
            "job created job=%s items=%d unique=%d units=%d",
            job_id,
            job.items,
            job.unique_items,
            len(units),
        )
        return job_id, job.items, job.unique_items, len(units)

    def _seed_gold(self, job_id: str, settings: JobSettings, records: list[InputRecord]) -> None:
        assert self.gold_computer is not None
        texts = list(dict.fromkeys(r.text for r in records))
        picked = [texts[i] for i in new_rng().permutation(len(texts))[:SEED_GOLD_ROWS]]
        rows = self.gold_computer(settings, picked)
        answers = codec.decode(
            codec.encode(rows, settings.result_dtype).payload,
            settings.result_dtype,
            len(picked),
            settings.dims,
        )
        self.store.add_gold(
            job_id,
            [(t, a.astype("<f4").tobytes()) for t, a in zip(picked, answers, strict=True)],
            "coordinator",
            self.clock(),
        )
        self.gold.expire()
        log.info("gold rows computed job=%s rows=%d", job_id, len(picked))

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

    def lease_work(self, volunteer_id: str, address: str = "", count: int = 1) -> LeaseOffer:
        """Lease up to `count` units, each composed for this volunteer alone (see
        domain/compose.py) and each a lease of its own; the daily quota counts each.

        `address` is the volunteer's network address ('' for loopback): replicas of a unit
        go to distinct addresses unless the policy says otherwise."""
        if not 1 <= count <= MAX_LEASE_UNITS:
            raise InvalidArgument("max_units", f"1 to {MAX_LEASE_UNITS} units, got {count}")
        if not volunteer_id:
            raise InvalidArgument("volunteer_id", "the id returned by RegisterVolunteer")
        record, reputation = self.store.get_standing(volunteer_id)
        volunteer = self._admitted(volunteer_id, record)
        now = self.clock()
        self._seen(volunteer_id, now)
        if self.draining.is_set():
            return LeaseOffer(None, True, WAIT_RETRY_MS * 5)
        day = utc_day(now)
        quota = self.policy.quota(sum(r.valid for r in reputation.values()))
        used = volunteer.leased_today if volunteer.quota_day == day else 0
        if used >= quota:
            wait = min(DAY_MS - now % DAY_MS, 10 * 60 * 1000)
            return LeaseOffer(
                None,
                True,
                wait,
                f"daily quota of {quota} units reached; it grows by "
                f"{self.policy.quota_per_valid} per validated result and resets at 00:00 UTC",
            )
        self.gold.refresh()
        grants: list[LeaseGrant] = []
        with self.store.batch():  # one commit (SQLite)
            for _ in range(min(count, quota - used)):
                grant = self._lease_one(volunteer_id, reputation, now, day, address)
                if grant is None:
                    break
                grants.append(grant)
        if grants:
            return LeaseOffer(grants[0], True, 0, more=tuple(grants[1:]))
        remaining = self.store.work_remaining(volunteer_id, now)
        return LeaseOffer(None, remaining, WAIT_RETRY_MS if remaining else IDLE_RETRY_MS)

    def _lease_one(
        self,
        volunteer_id: str,
        reputation: Mapping[str, Reputation],
        now: int,
        day: int,
        address: str,
    ) -> LeaseGrant | None:
        lease_id = uuid.uuid4().hex

        def plan(candidate: LeaseCandidate) -> LeasePlan:
            rng = new_rng()
            c = compose(
                self.key,
                candidate,
                lease_id,
                self.gold.rows(candidate.job_id),
                rng,
                now,
                earlier=self.gold.cached(candidate.gold_ids),
            )
            alone = bool(c.gold_ids) and self.policy.goes_alone(reputation.get(candidate.kind), rng)
            return LeasePlan(
                c.blob, c.signature, c.unit_sha256, c.composition, c.gold_ids, solo=alone
            )

        return self.store.lease_unit(
            volunteer_id,
            lease_id,
            now,
            plan,
            address=address if self.policy.distinct_addresses else "",
            day=day,
        )

    def _seen(self, volunteer_id: str, now: int) -> None:
        """Note that a volunteer is alive, at most every SEEN_EVERY_MS per volunteer. The
        notes reach the store in batches (`flush_seen`), not as a write per lease."""
        if now - self._last_seen.get(volunteer_id, 0) >= SEEN_EVERY_MS:
            self._last_seen[volunteer_id] = now
            with self._seen_lock:
                self._seen_due[volunteer_id] = now

    def flush_seen(self) -> None:
        """Write the last-seen times noted since the previous flush, in one transaction.
        The server calls it every few seconds and on shutdown; listings call it first."""
        with self._seen_lock:
            due, self._seen_due = self._seen_due, {}
        if not due:
            return
        try:
            self.store.touch_volunteers(due)
        except BaseException:  # kept for the next flush, unless a newer time is there
            with self._seen_lock:
                self._seen_due = {**due, **self._seen_due}
            raise

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
            resting = list(self.store.units_resting_on_quarantined(job_id))
            if resting:  # quarantine re-opens these; never ship a row only a liar vouched for
                log.error(
                    "not assimilating job=%s: units rest on quarantined volunteers: %s",
                    job_id,
                    ", ".join(resting[:5]),
                )
                continue
            with self.store.claim_job(job_id, "assimilating") as job:
                if job is None:
                    continue
                folder = assimilate(
                    self.store, self.key, job, self.datasets_dir, self.clock(), self.key_chain
                )
            log.info("dataset written job=%s folder=%s", job_id, folder)
            done.append(job_id)
        return done
