"""Plain values that cross the store boundary. The store knows no protobuf and no grpc."""

from __future__ import annotations

from dataclasses import dataclass, field

# A gold row to store: (text, float32 answer) for text kinds, (text, answer, image) for
# image kinds.
GoldInput = tuple[str, bytes] | tuple[str, bytes, bytes]


def gold_image(row: GoldInput) -> bytes:
    return row[2] if len(row) > 2 else b""


@dataclass(frozen=True)
class JobSettings:
    kind: str
    model: str
    model_sha256: str
    dims: int
    redundancy: int
    unit_size: int
    tau: float
    max_replicas: int
    lease_seconds: int
    result_dtype: str
    gold_fraction: float = 0.0
    rule: str = ""  # the kind's keep rule, parsed and as canonical JSON ('' for none)
    license: str = ""  # the dataset's licence identifier ('' for unknown)


@dataclass(frozen=True)
class NewJob:
    job_id: str
    name: str
    settings: JobSettings
    source_name: str
    items: int
    unique_items: int
    created_ms: int
    # Items whose image the volunteers fetch (> 0: only volunteers that opted in lease the
    # job's units), and items with any URL (fetched or a source URL: the dataset then has
    # a `url` column). Migration 0012.
    fetch_rows: int = 0
    url_items: int = 0


@dataclass(frozen=True)
class NewItem:
    seq: int
    item_id: str
    unit_seq: int
    row: int
    content_sha256: bytes
    url: str = ""  # the row's fetch URL or its image's source URL ('' for none)


@dataclass(frozen=True)
class NewUnit:
    unit_id: str
    seq: int
    rows: int
    blob: bytes  # the serialised, signed WorkUnit
    signature: bytes


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    name: str
    state: str  # running, assimilating, complete, failed
    settings: JobSettings
    source_name: str
    items: int
    unique_items: int
    created_ms: int
    completed_ms: int
    reason: str
    priority: int = 0
    fetch_rows: int = 0  # see NewJob
    url_items: int = 0


@dataclass(frozen=True)
class JobCounts:
    units_total: int = 0
    units_accepted: int = 0
    units_failed: int = 0
    units_in_progress: int = 0
    results_received: int = 0
    results_rejected: int = 0
    min_agreement: float = 0.0
    volunteers: int = 0
    failed_units: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class VolunteerRecord:
    volunteer_id: str
    public_key: bytes
    display_name: str
    client_version: str
    hardware: str
    created_ms: int
    banned: bool = False
    ban_reason: str = ""
    last_seen_ms: int = 0
    quarantined: bool = False
    quarantine_reason: str = ""
    quota_day: int = 0
    leased_today: int = 0
    # Unexpired leases it holds: read with its standing before a lease (else 0).
    live_leases: int = 0


@dataclass(frozen=True)
class LeaseGrant:
    lease_id: str
    unit_id: str
    deadline_ms: int
    blob: bytes
    signature: bytes


@dataclass(frozen=True)
class HeldLease:
    """An unexpired lease a volunteer holds, with the unit exactly as it was handed out
    (`blob`, `signature`; None where the store does not have it), and the sha256 the lease
    recorded of it (None: the unit went out uncomposed)."""

    lease_id: str
    unit_id: str
    deadline_ms: int
    unit_sha256: bytes | None
    blob: bytes | None
    signature: bytes | None


@dataclass(frozen=True)
class LeaseRecord:
    lease_id: str
    unit_id: str
    volunteer_id: str
    state: str  # active, submitted, released, cancelled, expired, rejected
    deadline_ms: int
    unit_sha256: bytes | None = None  # of the unit as composed for this lease
    composition: bytes = b""  # uint16 source row per composed row (see schema.leases)
    gold_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class UnitRecord:
    unit_id: str
    job_id: str
    seq: int
    rows: int
    state: str  # open, accepted, failed
    target: int
    blob: bytes
    settings: JobSettings
    quorum: int = 0  # results that must agree (0: the job's redundancy)

    @property
    def needed(self) -> int:
        return self.quorum or self.settings.redundancy


@dataclass(frozen=True)
class NewResult:
    result_id: str
    unit_id: str
    lease_id: str
    volunteer_id: str
    envelope: bytes
    signature: bytes
    payload: bytes
    received_ms: int
    claimed_tokens: int = 0  # already capped at what the composed unit can hold
    gold_checked: bool = False  # it carried gold rows, and they matched
    # It may vouch for its quorum on its own: it passed gold rows, or came from a volunteer
    # the operator trusts (see TrustPolicy.proven_streak).
    vouched: bool = False


@dataclass(frozen=True)
class ResultRecord:
    result_id: str
    volunteer_id: str
    payload: bytes
    state: str  # pending, valid, invalid
    received_ms: int
    claimed_tokens: int = 0
    vouched: bool = False  # see NewResult.vouched
    streak: int = 0  # its volunteer's consecutive valid results (task kind of the unit), now


@dataclass(frozen=True)
class Verdict:
    """What the quorum decided for a unit after one more result arrived."""

    status: str  # pending, accepted, rejected (this result), failed (the unit)
    reason: str = ""
    valid: tuple[str, ...] = ()  # result ids that agree (canonical first)
    invalid: tuple[str, ...] = ()
    new_target: int = 0  # raise the replica target to this (0 = unchanged)
    agreement: float = 0.0  # lowest row cosine among the agreeing results
    canonical: str = ""
    # The published rows (in the job's dtype): the normalised mean of the agreeing results;
    # empty when one result decided alone (its payload is published as it is).
    canonical_payload: bytes = b""
    new_quorum: int = 0  # raise the unit's quorum to this (0 = unchanged)
    credit: int = 0  # granted to each valid result: the lowest claim among them
    outvoted: tuple[str, ...] = ()  # volunteers whose results the quorum overruled
    # (text, float32 answer[, image]) rows to keep as gold (the image for image kinds)
    gold: tuple[GoldInput, ...] = ()
    # Keep them only if one of the agreeing volunteers had at least this many consecutive
    # valid results before: two new accounts agreeing must not define what is true.
    gold_streak: int = 0
    # Set by the store: this verdict decided its job's last open unit and every unit was
    # accepted, so the job is ready to assimilate.
    job_validated: bool = False
    # Set by the store: the gold rows it kept from `gold`, with their ids.
    gold_kept: tuple[GoldRow, ...] = ()


@dataclass(frozen=True)
class DatasetUnit:
    unit_id: str
    blob: bytes
    payload: bytes  # canonical result payload
    dtype: str
    replicas: int
    agreement: float
    tau: float | None = None  # in force when the unit was decided (None: decided before 0009)
    gold_passed: int = 0  # distinct gold rows the unit's agreeing results passed


@dataclass(frozen=True)
class DatasetItem:
    seq: int
    item_id: str
    unit_id: str
    row: int
    content_sha256: bytes
    url: str = ""


@dataclass(frozen=True)
class Reputation:
    """A volunteer's record for one task kind."""

    kind: str
    consecutive_valid: int = 0
    valid: int = 0
    disagreements: int = 0
    faults: int = 0
    gold_checked: int = 0
    gold_missed: int = 0
    credit: int = 0


@dataclass(frozen=True)
class LeaseCandidate:
    """A unit the store is about to lease, for the domain to compose and sign."""

    unit_id: str
    job_id: str
    kind: str
    blob: bytes  # the unit as planned (every row, in unit order)
    rows: int
    busy: int  # replica slots taken before this lease
    quorum: int
    redundancy: int
    gold_fraction: float
    deadline_ms: int
    gold_ids: tuple[int, ...] = ()  # the gold rows earlier leases of the unit got


@dataclass(frozen=True)
class LeasePlan:
    """The unit as composed for one lease."""

    blob: bytes
    signature: bytes
    unit_sha256: bytes
    composition: bytes
    gold_ids: tuple[int, ...]
    solo: bool  # adaptive replication: this volunteer's result alone may decide the unit
    # The first `shared` of gold_ids are the unit's (every replica gets them); the rest are
    # this lease's own. -1: all are shared.
    shared: int = -1


@dataclass(frozen=True)
class GoldRow:
    gold_id: int
    job_id: str  # the job whose pool holds it (rows of one model serve all its jobs)
    text: str
    answer: bytes  # float32 row
    unit_id: str = ""  # the unit its text came from ('' for none): its holders saw it
    image: bytes = b""  # image kinds: the row's image file (b'' for text kinds)

    @property
    def inputs(self) -> tuple[str, bytes]:
        """What the row carries into a unit: its text and its image."""
        return self.text, self.image


@dataclass(frozen=True)
class Repair:
    """What quarantining a volunteer changed."""

    results_invalidated: int
    units_reopened: tuple[str, ...]
    jobs_reopened: tuple[str, ...]


@dataclass(frozen=True)
class ModelRecord:
    """A served model: its signed manifest (protocol/model_manifest.py) as stored."""

    name: str
    pin: str
    manifest: bytes
    signature: bytes
    created_ms: int
