"""Plain values that cross the store boundary. The store knows no protobuf and no grpc."""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class NewJob:
    job_id: str
    name: str
    settings: JobSettings
    source_name: str
    items: int
    unique_items: int
    created_ms: int


@dataclass(frozen=True)
class NewItem:
    seq: int
    item_id: str
    unit_seq: int
    row: int
    content_sha256: bytes


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


@dataclass(frozen=True)
class LeaseGrant:
    lease_id: str
    unit_id: str
    deadline_ms: int
    blob: bytes
    signature: bytes


@dataclass(frozen=True)
class LeaseRecord:
    lease_id: str
    unit_id: str
    volunteer_id: str
    state: str  # active, submitted, released
    deadline_ms: int


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


@dataclass(frozen=True)
class ResultRecord:
    result_id: str
    volunteer_id: str
    payload: bytes
    state: str  # pending, valid, invalid
    received_ms: int


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


@dataclass(frozen=True)
class DatasetUnit:
    unit_id: str
    blob: bytes
    payload: bytes  # canonical result payload
    dtype: str
    replicas: int
    agreement: float


@dataclass(frozen=True)
class DatasetItem:
    seq: int
    item_id: str
    unit_id: str
    row: int
    content_sha256: bytes
