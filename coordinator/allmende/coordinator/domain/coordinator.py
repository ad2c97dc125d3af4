"""The coordinator's use cases as plain methods: what each RPC does, without gRPC.

Servicers convert protobuf to these calls and map the errors of `allmende.protocol.errors`
to status codes; tests can call them directly.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allmende.coordinator.domain.assimilate import assimilate
from allmende.coordinator.domain.compose import new_rng
from allmende.coordinator.domain.gold import GoldPool
from allmende.coordinator.domain.ids import find_id
from allmende.coordinator.domain.jobs import (
    InputRecord,
    JobRequest,
    new_job_id,
    plan_job,
    resolve_settings,
    result_shape,
)
from allmende.coordinator.domain.leasing import Leasing
from allmende.coordinator.domain.models import ModelLibrary
from allmende.coordinator.domain.nonces import RequestNonces
from allmende.coordinator.domain.ratelimit import TokenBuckets, refuse
from allmende.coordinator.domain.submit import VALIDATING_AT_ONCE, Submissions
from allmende.coordinator.domain.takedown import Removal, remove_rows, require_published
from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.domain.verdicts import Verdicts
from allmende.coordinator.store.base import Store
from allmende.coordinator.store.records import (
    GoldInput,
    JobCounts,
    JobRecord,
    JobSettings,
    NewUnit,
    VolunteerRecord,
)
from allmende.protocol.errors import (
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    shown,
)
from allmende.protocol.kinds import KINDS, get_kind
from allmende.protocol.manifest import (
    ALLMENDE_DIR,
    CARD_PATH,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    VERSIONS_DIR,
    shard_path,
)
from allmende.protocol.models import ModelRegistry
from allmende.protocol.signing import CTX_REGISTER, SigningKey, fingerprint, verify
from allmende.protocol.wire import decode_unit

log = logging.getLogger("allmende.coordinator")

# Answers for texts of a job: float32 rows in the job's result dtype after rounding.
# (settings, texts) -> rows; for kinds that take images also given `images`, one per text.
GoldComputer = Callable[..., np.ndarray]
# Gold rows a coordinator computes for a new job (the rest come from accepted units).
SEED_GOLD_ROWS = 32

VERSION = "0.1.0"


@dataclass(frozen=True)
class JobView:
    job: JobRecord
    counts: JobCounts


def _now_ms() -> int:
    return int(time.time() * 1000)


class Coordinator(Leasing, Submissions, Verdicts):
    def __init__(
        self,
        store: Store,
        key: SigningKey,
        datasets_dir: Path,
        registry: ModelRegistry | None = None,
        clock: Callable[[], int] = _now_ms,
        policy: TrustPolicy | None = None,
        gold_computer: GoldComputer | None = None,
        models_dir: Path | None = None,
    ) -> None:
        self.store = store
        # Nonces of signed requests already used (replays are refused), in the store.
        self.nonces = RequestNonces(store)
        self.policy = policy or TrustPolicy()
        self.gold = GoldPool(store, self.policy.gold_pool)
        # Computes answers for a new job's first gold rows (the model, on the coordinator);
        # without one, gold rows come only from units a quorum accepted.
        self.gold_computer = gold_computer
        self.key = key
        self.datasets_dir = datasets_dir
        self.registry = registry or ModelRegistry()
        self.clock = clock
        # Models the operator added (`allmende model add`), served to volunteers that lack them.
        self.models = ModelLibrary(
            store, key, self.registry, models_dir or datasets_dir.parent / "models", clock
        )
        self.models.load()
        self.validating = threading.BoundedSemaphore(VALIDATING_AT_ONCE)
        # Set when a job has become ready for assimilation; the server's assimilator waits on it.
        self.assimilation_wanted = threading.Event()
        # Set on shutdown: no new leases, while submissions of work in flight still land.
        self.draining = threading.Event()
        self._last_seen: dict[str, int] = {}
        self._seen_due: dict[str, int] = {}  # noted, not yet written (see flush_seen)
        self._seen_lock = threading.Lock()
        # Per address block, in this process (see domain/ratelimit.py).
        self.registrations = TokenBuckets(
            self.policy.registrations_per_minute / 60, self.policy.registration_burst
        )
        self.lease_calls = TokenBuckets(self.policy.leases_per_second, self.policy.lease_burst)
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
            sorted(KINDS),
        )

    def register_volunteer(
        self,
        public_key: bytes,
        display_name: str,
        client_version: str,
        hardware: str,
        signature: bytes,
        address: str = "",
    ) -> str:
        """Register (or update) the volunteer of this key. `address`: the peer's network
        address ('' for a local socket); registrations are rate-limited per address block,
        and a refused one changes nothing."""
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
        block = self.policy.block(address)
        if block:
            wait = self.registrations.take(block, self.clock())
            if wait:
                raise refuse("registrations", block, self.registrations, wait)
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
        self.models.refresh(req.model)  # one another replica added since
        settings = resolve_settings(req, self.registry)
        job_id = new_job_id()
        job, units, items = plan_job(job_id, req, settings, records, self.key, self.clock())
        self.store.create_job(job, units, items)
        if settings.gold_fraction > 0 and self.gold_computer is not None:
            self._seed_gold(job_id, settings, records, units)
        else:  # its first leases draw on the pool of its model (earlier jobs' rows)
            self.gold.expire()
        log.info(
            "job created job=%s items=%d unique=%d units=%d",
            job_id,
            job.items,
            job.unique_items,
            len(units),
        )
        return job_id, job.items, job.unique_items, len(units)

    def _seed_gold(
        self,
        job_id: str,
        settings: JobSettings,
        records: list[InputRecord],
        units: Sequence[NewUnit],
    ) -> None:
        """Gold rows computed here for some of the job's texts, each noted with the unit
        that holds its text: whoever leases that unit sees the text as an ordinary row and
        so never gets it as a gold row (see compose.Viewer)."""
        assert self.gold_computer is not None
        # Rows as the units hold them (an image kind's: its image, and its text if it takes
        # one), each with the unit that holds it. Never a row volunteers fetch from a URL:
        # a gold row carries its bytes, and the coordinator holds none for it.
        home: dict[tuple[str, bytes], str] = {}
        for u in units:
            content = decode_unit(u.blob)
            for i in range(content.rows):
                if not content.url(i):
                    home.setdefault(content.row(i), u.unit_id)
        inputs = list(home)
        picked = [inputs[i] for i in new_rng().permutation(len(inputs))[:SEED_GOLD_ROWS]]
        if not picked:  # every row is fetched: the pool of its model serves it
            self.gold.expire()
            return
        texts, images = [t for t, _ in picked], [image for _, image in picked]
        takes_images = get_kind(settings.kind).takes_images
        rows = (
            self.gold_computer(settings, texts, images)
            if takes_images
            else self.gold_computer(settings, texts)
        )
        rounded = result_shape(settings, self.registry).rounded(rows)
        answers = [a.astype("<f4").tobytes() for a in rounded]
        gold: list[GoldInput] = [
            (t, a, image) if takes_images else (t, a)
            for (t, image), a in zip(picked, answers, strict=True)
        ]
        self.store.add_gold(
            job_id, gold, "coordinator", self.clock(), unit_ids=[home[p] for p in picked]
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

    def find_job(self, given: str) -> JobView:
        """The status of the job `given` names: its id or an unambiguous prefix of one. A
        whole id (what pollers send) costs no lookup beyond the status itself."""
        try:
            return self.job_status(given)
        except NotFound:
            return self.job_status(find_id(self.store, "job", given))

    def list_jobs(self) -> list[JobView]:
        now = self.clock()
        return [
            JobView(job, self.store.job_counts(job.job_id, now)) for job in self.store.list_jobs()
        ]

    # ------------------------------------------------------------------ datasets

    def manifest(self, job_id: str) -> tuple[bytes, bytes]:
        job = self._job(job_id)
        found = self.store.get_manifest(job_id)
        if found is None:
            if job.state in ("cancelled", "failed"):
                why = f": {job.reason}" if job.reason else ""
                done = "was cancelled" if job.state == "cancelled" else "failed"
                raise FailedPrecondition(
                    f"job {job_id} {done}{why}; it has no dataset and will not have one"
                )
            raise FailedPrecondition(f"job {job_id} is {job.state}; its dataset is not ready yet")
        return found

    def remove_rows(self, job_id: str, ids: list[str], reason: str) -> Removal:
        """Publish a new version of a finished job's dataset without the rows `ids`."""
        job = self._job(job_id)
        # The claim the assimilator takes: one coordinator writes a job's folder at a time,
        # across processes sharing a PostgreSQL database.
        with self.store.claim_job(job_id, "complete") as claimed:
            if claimed is None:
                if job.state == "complete":
                    raise FailedPrecondition(
                        f"job {job_id}'s dataset is being written by another request; try again"
                    )
                require_published(None, job_id, job.state)
            published = require_published(self.store.get_manifest(job_id), job_id, job.state)
            removal, manifest, signature = remove_rows(
                self.key,
                job_id,
                published,
                self.datasets_dir,
                ids,
                reason,
                self.clock(),
                self.key_chain,
            )
            self.store.publish_version(job_id, manifest, signature, self.clock())
        log.info(
            "dataset version job=%s version=%d removed=%d",
            job_id,
            removal.version,
            removal.rows_removed,
        )
        return removal

    def dataset_file(self, job_id: str, name: str) -> Path:
        """A file of a job's published dataset, by the name a researcher asks for: a shard
        name of the current manifest, the card, or an earlier version's manifest/signature
        (`_allmende/versions/<n>/manifest.json|manifest.sig`)."""
        manifest, _ = self.manifest(job_id)
        folder = self.datasets_dir / job_id
        names = {shard["name"] for shard in json.loads(manifest)["shards"]}
        if name in names:
            return shard_path(folder, name)
        if name == CARD_PATH or _version_file(name):
            return folder / name
        raise NotFound(f"{shown(name)} is not a file of job {job_id}'s dataset")

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
                    self.store,
                    self.key,
                    job,
                    self.datasets_dir,
                    self.clock(),
                    self.key_chain,
                    self.registry,
                )
            log.info("dataset written job=%s folder=%s", job_id, folder)
            done.append(job_id)
        return done


# An earlier version's manifest or signature, as `dataset pull` asks for it.
_VERSION_FILE = re.compile(
    re.escape(f"{ALLMENDE_DIR}/{VERSIONS_DIR}/")
    + r"[1-9][0-9]{0,5}/"
    + f"({re.escape(MANIFEST_NAME)}|{re.escape(SIGNATURE_NAME)})"
)


def _version_file(name: str) -> bool:
    return _VERSION_FILE.fullmatch(name) is not None
