from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetCoordinatorInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCoordinatorInfoResponse(_message.Message):
    __slots__ = ("public_key", "fingerprint", "version", "models", "task_kinds", "tls_cert_sha256", "tls_cert_signature", "key_chain")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TASK_KINDS_FIELD_NUMBER: _ClassVar[int]
    TLS_CERT_SHA256_FIELD_NUMBER: _ClassVar[int]
    TLS_CERT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_CHAIN_FIELD_NUMBER: _ClassVar[int]
    public_key: bytes
    fingerprint: str
    version: str
    models: _containers.RepeatedScalarFieldContainer[str]
    task_kinds: _containers.RepeatedScalarFieldContainer[str]
    tls_cert_sha256: bytes
    tls_cert_signature: bytes
    key_chain: _containers.RepeatedCompositeFieldContainer[SignedKeyRotation]
    def __init__(self, public_key: _Optional[bytes] = ..., fingerprint: _Optional[str] = ..., version: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., task_kinds: _Optional[_Iterable[str]] = ..., tls_cert_sha256: _Optional[bytes] = ..., tls_cert_signature: _Optional[bytes] = ..., key_chain: _Optional[_Iterable[_Union[SignedKeyRotation, _Mapping]]] = ...) -> None: ...

class KeyRotation(_message.Message):
    __slots__ = ("old_public_key", "new_public_key", "created_unix_ms", "reason")
    OLD_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NEW_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    old_public_key: bytes
    new_public_key: bytes
    created_unix_ms: int
    reason: str
    def __init__(self, old_public_key: _Optional[bytes] = ..., new_public_key: _Optional[bytes] = ..., created_unix_ms: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class SignedKeyRotation(_message.Message):
    __slots__ = ("rotation", "signature")
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    rotation: bytes
    signature: bytes
    def __init__(self, rotation: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class RegisterVolunteerRequest(_message.Message):
    __slots__ = ("public_key", "display_name", "client_version", "hardware", "signature")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    public_key: bytes
    display_name: str
    client_version: str
    hardware: str
    signature: bytes
    def __init__(self, public_key: _Optional[bytes] = ..., display_name: _Optional[str] = ..., client_version: _Optional[str] = ..., hardware: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class RegisterVolunteerResponse(_message.Message):
    __slots__ = ("volunteer_id",)
    VOLUNTEER_ID_FIELD_NUMBER: _ClassVar[int]
    volunteer_id: str
    def __init__(self, volunteer_id: _Optional[str] = ...) -> None: ...

class WorkUnit(_message.Message):
    __slots__ = ("unit_id", "job_id", "kind", "model", "model_sha256", "texts", "dims", "result_dtype", "created_unix_ms", "lease_id", "images", "urls")
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    RESULT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    URLS_FIELD_NUMBER: _ClassVar[int]
    unit_id: str
    job_id: str
    kind: str
    model: str
    model_sha256: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    dims: int
    result_dtype: str
    created_unix_ms: int
    lease_id: str
    images: _containers.RepeatedScalarFieldContainer[bytes]
    urls: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, unit_id: _Optional[str] = ..., job_id: _Optional[str] = ..., kind: _Optional[str] = ..., model: _Optional[str] = ..., model_sha256: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., dims: _Optional[int] = ..., result_dtype: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., lease_id: _Optional[str] = ..., images: _Optional[_Iterable[bytes]] = ..., urls: _Optional[_Iterable[str]] = ...) -> None: ...

class SignedWorkUnit(_message.Message):
    __slots__ = ("unit", "signature")
    UNIT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    unit: bytes
    signature: bytes
    def __init__(self, unit: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class LeaseWorkRequest(_message.Message):
    __slots__ = ("volunteer_id", "max_units", "fetch_urls")
    VOLUNTEER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_UNITS_FIELD_NUMBER: _ClassVar[int]
    FETCH_URLS_FIELD_NUMBER: _ClassVar[int]
    volunteer_id: str
    max_units: int
    fetch_urls: bool
    def __init__(self, volunteer_id: _Optional[str] = ..., max_units: _Optional[int] = ..., fetch_urls: _Optional[bool] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "deadline_unix_ms", "unit")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    deadline_unix_ms: int
    unit: SignedWorkUnit
    def __init__(self, lease_id: _Optional[str] = ..., deadline_unix_ms: _Optional[int] = ..., unit: _Optional[_Union[SignedWorkUnit, _Mapping]] = ...) -> None: ...

class ListLeasesRequest(_message.Message):
    __slots__ = ("volunteer_id",)
    VOLUNTEER_ID_FIELD_NUMBER: _ClassVar[int]
    volunteer_id: str
    def __init__(self, volunteer_id: _Optional[str] = ...) -> None: ...

class ListLeasesResponse(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class LeaseWorkResponse(_message.Message):
    __slots__ = ("lease", "work_remaining", "retry_after_ms", "notice", "more_leases")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    WORK_REMAINING_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    MORE_LEASES_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    work_remaining: bool
    retry_after_ms: int
    notice: str
    more_leases: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ..., work_remaining: _Optional[bool] = ..., retry_after_ms: _Optional[int] = ..., notice: _Optional[str] = ..., more_leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class ResultEnvelope(_message.Message):
    __slots__ = ("unit_id", "lease_id", "volunteer_id", "rows", "columns", "codec", "payload_sha256", "unit_sha256", "model_sha256", "device", "compute_ms", "created_unix_ms", "claimed_tokens", "energy_wh_per_1000", "energy_estimated")
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    VOLUNTEER_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    UNIT_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_WH_PER_1000_FIELD_NUMBER: _ClassVar[int]
    ENERGY_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    unit_id: str
    lease_id: str
    volunteer_id: str
    rows: int
    columns: _containers.RepeatedCompositeFieldContainer[ResultColumn]
    codec: str
    payload_sha256: bytes
    unit_sha256: bytes
    model_sha256: str
    device: str
    compute_ms: int
    created_unix_ms: int
    claimed_tokens: int
    energy_wh_per_1000: float
    energy_estimated: bool
    def __init__(self, unit_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., volunteer_id: _Optional[str] = ..., rows: _Optional[int] = ..., columns: _Optional[_Iterable[_Union[ResultColumn, _Mapping]]] = ..., codec: _Optional[str] = ..., payload_sha256: _Optional[bytes] = ..., unit_sha256: _Optional[bytes] = ..., model_sha256: _Optional[str] = ..., device: _Optional[str] = ..., compute_ms: _Optional[int] = ..., created_unix_ms: _Optional[int] = ..., claimed_tokens: _Optional[int] = ..., energy_wh_per_1000: _Optional[float] = ..., energy_estimated: _Optional[bool] = ...) -> None: ...

class ResultColumn(_message.Message):
    __slots__ = ("name", "dtype", "width")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    width: int
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., width: _Optional[int] = ...) -> None: ...

class SubmitResultRequest(_message.Message):
    __slots__ = ("envelope", "signature", "payload")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    envelope: bytes
    signature: bytes
    payload: bytes
    def __init__(self, envelope: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., payload: _Optional[bytes] = ...) -> None: ...

class SubmitResultResponse(_message.Message):
    __slots__ = ("status", "reason", "code")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    status: str
    reason: str
    code: str
    def __init__(self, status: _Optional[str] = ..., reason: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...

class SubmitResultsRequest(_message.Message):
    __slots__ = ("volunteer_id", "results")
    VOLUNTEER_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    volunteer_id: str
    results: _containers.RepeatedCompositeFieldContainer[SubmitResultRequest]
    def __init__(self, volunteer_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[SubmitResultRequest, _Mapping]]] = ...) -> None: ...

class SubmitResultsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SubmitResultResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[SubmitResultResponse, _Mapping]]] = ...) -> None: ...

class ReleaseWorkRequest(_message.Message):
    __slots__ = ("volunteer_id", "lease_id", "reason")
    VOLUNTEER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    volunteer_id: str
    lease_id: str
    reason: str
    def __init__(self, volunteer_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseWorkResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetVerdictsRequest(_message.Message):
    __slots__ = ("volunteer_id", "unit_ids")
    VOLUNTEER_ID_FIELD_NUMBER: _ClassVar[int]
    UNIT_IDS_FIELD_NUMBER: _ClassVar[int]
    volunteer_id: str
    unit_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, volunteer_id: _Optional[str] = ..., unit_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ResultVerdict(_message.Message):
    __slots__ = ("unit_id", "job_id", "verdict", "reason", "credit", "rows")
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    unit_id: str
    job_id: str
    verdict: str
    reason: str
    credit: int
    rows: int
    def __init__(self, unit_id: _Optional[str] = ..., job_id: _Optional[str] = ..., verdict: _Optional[str] = ..., reason: _Optional[str] = ..., credit: _Optional[int] = ..., rows: _Optional[int] = ...) -> None: ...

class VerdictTotals(_message.Message):
    __slots__ = ("results_valid", "results_invalid", "results_pending", "credit", "items_valid")
    RESULTS_VALID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_INVALID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_PENDING_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_VALID_FIELD_NUMBER: _ClassVar[int]
    results_valid: int
    results_invalid: int
    results_pending: int
    credit: int
    items_valid: int
    def __init__(self, results_valid: _Optional[int] = ..., results_invalid: _Optional[int] = ..., results_pending: _Optional[int] = ..., credit: _Optional[int] = ..., items_valid: _Optional[int] = ...) -> None: ...

class GetVerdictsResponse(_message.Message):
    __slots__ = ("verdicts", "totals")
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[ResultVerdict]
    totals: VerdictTotals
    def __init__(self, verdicts: _Optional[_Iterable[_Union[ResultVerdict, _Mapping]]] = ..., totals: _Optional[_Union[VerdictTotals, _Mapping]] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("name", "kind", "model", "redundancy", "unit_size", "tau", "max_replicas", "lease_seconds", "result_dtype", "gold_fraction", "rule", "license")
    class RuleEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REDUNDANCY_FIELD_NUMBER: _ClassVar[int]
    UNIT_SIZE_FIELD_NUMBER: _ClassVar[int]
    TAU_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESULT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    GOLD_FRACTION_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    LICENSE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    model: str
    redundancy: int
    unit_size: int
    tau: float
    max_replicas: int
    lease_seconds: int
    result_dtype: str
    gold_fraction: float
    rule: _containers.ScalarMap[str, str]
    license: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., model: _Optional[str] = ..., redundancy: _Optional[int] = ..., unit_size: _Optional[int] = ..., tau: _Optional[float] = ..., max_replicas: _Optional[int] = ..., lease_seconds: _Optional[int] = ..., result_dtype: _Optional[str] = ..., gold_fraction: _Optional[float] = ..., rule: _Optional[_Mapping[str, str]] = ..., license: _Optional[str] = ...) -> None: ...

class InputItem(_message.Message):
    __slots__ = ("id", "text", "line", "image", "url", "source_url")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URL_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    line: int
    image: bytes
    url: str
    source_url: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., line: _Optional[int] = ..., image: _Optional[bytes] = ..., url: _Optional[str] = ..., source_url: _Optional[str] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("spec", "items", "source_name")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    items: _containers.RepeatedCompositeFieldContainer[InputItem]
    source_name: str
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., items: _Optional[_Iterable[_Union[InputItem, _Mapping]]] = ..., source_name: _Optional[str] = ...) -> None: ...

class CreateJobResponse(_message.Message):
    __slots__ = ("job_id", "items", "unique_items", "units")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    items: int
    unique_items: int
    units: int
    def __init__(self, job_id: _Optional[str] = ..., items: _Optional[int] = ..., unique_items: _Optional[int] = ..., units: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class FailedUnit(_message.Message):
    __slots__ = ("unit_id", "reason")
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    unit_id: str
    reason: str
    def __init__(self, unit_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class JobStatus(_message.Message):
    __slots__ = ("job_id", "name", "state", "spec", "items", "unique_items", "units_total", "units_accepted", "units_failed", "units_in_progress", "results_received", "results_rejected", "min_agreement", "created_unix_ms", "completed_unix_ms", "failed_units", "reason", "volunteers", "priority", "items_per_s", "fetch_rows")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    UNITS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    UNITS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    UNITS_FAILED_FIELD_NUMBER: _ClassVar[int]
    UNITS_IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    MIN_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FAILED_UNITS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VOLUNTEERS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ITEMS_PER_S_FIELD_NUMBER: _ClassVar[int]
    FETCH_ROWS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    state: str
    spec: JobSpec
    items: int
    unique_items: int
    units_total: int
    units_accepted: int
    units_failed: int
    units_in_progress: int
    results_received: int
    results_rejected: int
    min_agreement: float
    created_unix_ms: int
    completed_unix_ms: int
    failed_units: _containers.RepeatedCompositeFieldContainer[FailedUnit]
    reason: str
    volunteers: int
    priority: int
    items_per_s: float
    fetch_rows: int
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., items: _Optional[int] = ..., unique_items: _Optional[int] = ..., units_total: _Optional[int] = ..., units_accepted: _Optional[int] = ..., units_failed: _Optional[int] = ..., units_in_progress: _Optional[int] = ..., results_received: _Optional[int] = ..., results_rejected: _Optional[int] = ..., min_agreement: _Optional[float] = ..., created_unix_ms: _Optional[int] = ..., completed_unix_ms: _Optional[int] = ..., failed_units: _Optional[_Iterable[_Union[FailedUnit, _Mapping]]] = ..., reason: _Optional[str] = ..., volunteers: _Optional[int] = ..., priority: _Optional[int] = ..., items_per_s: _Optional[float] = ..., fetch_rows: _Optional[int] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobStatus
    def __init__(self, job: _Optional[_Union[JobStatus, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobStatus]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobStatus, _Mapping]]] = ...) -> None: ...

class GetManifestRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetManifestResponse(_message.Message):
    __slots__ = ("manifest", "signature")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    manifest: bytes
    signature: bytes
    def __init__(self, manifest: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class DownloadFileRequest(_message.Message):
    __slots__ = ("job_id", "name", "offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    offset: int
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ModelFileInfo(_message.Message):
    __slots__ = ("path", "bytes", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    bytes: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class AddModelHeader(_message.Message):
    __slots__ = ("name", "task_kinds", "files", "dims", "max_seq_length", "weights_file", "labels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_KINDS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FILE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    task_kinds: _containers.RepeatedScalarFieldContainer[str]
    files: _containers.RepeatedCompositeFieldContainer[ModelFileInfo]
    dims: int
    max_seq_length: int
    weights_file: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., task_kinds: _Optional[_Iterable[str]] = ..., files: _Optional[_Iterable[_Union[ModelFileInfo, _Mapping]]] = ..., dims: _Optional[int] = ..., max_seq_length: _Optional[int] = ..., weights_file: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelFileChunk(_message.Message):
    __slots__ = ("path", "data")
    PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    path: str
    data: bytes
    def __init__(self, path: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class AddModelRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: AddModelHeader
    chunk: ModelFileChunk
    def __init__(self, header: _Optional[_Union[AddModelHeader, _Mapping]] = ..., chunk: _Optional[_Union[ModelFileChunk, _Mapping]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "pin", "task_kinds", "files", "bytes", "created_unix_ms", "dims")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PIN_FIELD_NUMBER: _ClassVar[int]
    TASK_KINDS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    pin: str
    task_kinds: _containers.RepeatedScalarFieldContainer[str]
    files: int
    bytes: int
    created_unix_ms: int
    dims: int
    def __init__(self, name: _Optional[str] = ..., pin: _Optional[str] = ..., task_kinds: _Optional[_Iterable[str]] = ..., files: _Optional[int] = ..., bytes: _Optional[int] = ..., created_unix_ms: _Optional[int] = ..., dims: _Optional[int] = ...) -> None: ...

class AddModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelManifestRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetModelManifestResponse(_message.Message):
    __slots__ = ("manifest", "signature")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    manifest: bytes
    signature: bytes
    def __init__(self, manifest: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class DownloadModelFileRequest(_message.Message):
    __slots__ = ("name", "path", "offset")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    offset: int
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class JobRef(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class UpdateJobRequest(_message.Message):
    __slots__ = ("job_id", "priority", "redundancy", "tau")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REDUNDANCY_FIELD_NUMBER: _ClassVar[int]
    TAU_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    priority: int
    redundancy: int
    tau: float
    def __init__(self, job_id: _Optional[str] = ..., priority: _Optional[int] = ..., redundancy: _Optional[int] = ..., tau: _Optional[float] = ...) -> None: ...

class VolunteerStatus(_message.Message):
    __slots__ = ("volunteer_id", "display_name", "client_version", "hardware", "created_unix_ms", "last_seen_unix_ms", "online", "banned", "ban_reason", "leases_active", "results_valid", "results_invalid", "results_pending", "items_valid", "items_per_s", "quarantined", "quarantine_reason", "credit", "consecutive_valid", "gold_checked", "gold_missed", "disagreements", "faults", "daily_quota", "leased_today")
    VOLUNTEER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    BANNED_FIELD_NUMBER: _ClassVar[int]
    BAN_REASON_FIELD_NUMBER: _ClassVar[int]
    LEASES_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_VALID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_INVALID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_PENDING_FIELD_NUMBER: _ClassVar[int]
    ITEMS_VALID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_PER_S_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_REASON_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_VALID_FIELD_NUMBER: _ClassVar[int]
    GOLD_CHECKED_FIELD_NUMBER: _ClassVar[int]
    GOLD_MISSED_FIELD_NUMBER: _ClassVar[int]
    DISAGREEMENTS_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    DAILY_QUOTA_FIELD_NUMBER: _ClassVar[int]
    LEASED_TODAY_FIELD_NUMBER: _ClassVar[int]
    volunteer_id: str
    display_name: str
    client_version: str
    hardware: str
    created_unix_ms: int
    last_seen_unix_ms: int
    online: bool
    banned: bool
    ban_reason: str
    leases_active: int
    results_valid: int
    results_invalid: int
    results_pending: int
    items_valid: int
    items_per_s: float
    quarantined: bool
    quarantine_reason: str
    credit: int
    consecutive_valid: int
    gold_checked: int
    gold_missed: int
    disagreements: int
    faults: int
    daily_quota: int
    leased_today: int
    def __init__(self, volunteer_id: _Optional[str] = ..., display_name: _Optional[str] = ..., client_version: _Optional[str] = ..., hardware: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., last_seen_unix_ms: _Optional[int] = ..., online: _Optional[bool] = ..., banned: _Optional[bool] = ..., ban_reason: _Optional[str] = ..., leases_active: _Optional[int] = ..., results_valid: _Optional[int] = ..., results_invalid: _Optional[int] = ..., results_pending: _Optional[int] = ..., items_valid: _Optional[int] = ..., items_per_s: _Optional[float] = ..., quarantined: _Optional[bool] = ..., quarantine_reason: _Optional[str] = ..., credit: _Optional[int] = ..., consecutive_valid: _Optional[int] = ..., gold_checked: _Optional[int] = ..., gold_missed: _Optional[int] = ..., disagreements: _Optional[int] = ..., faults: _Optional[int] = ..., daily_quota: _Optional[int] = ..., leased_today: _Optional[int] = ...) -> None: ...

class ListVolunteersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVolunteersResponse(_message.Message):
    __slots__ = ("volunteers",)
    VOLUNTEERS_FIELD_NUMBER: _ClassVar[int]
    volunteers: _containers.RepeatedCompositeFieldContainer[VolunteerStatus]
    def __init__(self, volunteers: _Optional[_Iterable[_Union[VolunteerStatus, _Mapping]]] = ...) -> None: ...

class BanVolunteerRequest(_message.Message):
    __slots__ = ("volunteer_id", "reason")
    VOLUNTEER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    volunteer_id: str
    reason: str
    def __init__(self, volunteer_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class VolunteerRef(_message.Message):
    __slots__ = ("volunteer_id",)
    VOLUNTEER_ID_FIELD_NUMBER: _ClassVar[int]
    volunteer_id: str
    def __init__(self, volunteer_id: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("unix_ms", "kind", "job_id", "unit_id", "volunteer_id", "message")
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    VOLUNTEER_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    unix_ms: int
    kind: str
    job_id: str
    unit_id: str
    volunteer_id: str
    message: str
    def __init__(self, unix_ms: _Optional[int] = ..., kind: _Optional[str] = ..., job_id: _Optional[str] = ..., unit_id: _Optional[str] = ..., volunteer_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ValidationCounts(_message.Message):
    __slots__ = ("units_accepted", "units_failed", "results_valid", "results_invalid", "results_pending", "disagreements", "leases_expired", "volunteers_banned")
    UNITS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    UNITS_FAILED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_VALID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_INVALID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_PENDING_FIELD_NUMBER: _ClassVar[int]
    DISAGREEMENTS_FIELD_NUMBER: _ClassVar[int]
    LEASES_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    VOLUNTEERS_BANNED_FIELD_NUMBER: _ClassVar[int]
    units_accepted: int
    units_failed: int
    results_valid: int
    results_invalid: int
    results_pending: int
    disagreements: int
    leases_expired: int
    volunteers_banned: int
    def __init__(self, units_accepted: _Optional[int] = ..., units_failed: _Optional[int] = ..., results_valid: _Optional[int] = ..., results_invalid: _Optional[int] = ..., results_pending: _Optional[int] = ..., disagreements: _Optional[int] = ..., leases_expired: _Optional[int] = ..., volunteers_banned: _Optional[int] = ...) -> None: ...

class GetOverviewRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: int
    def __init__(self, events: _Optional[int] = ...) -> None: ...

class GetOverviewResponse(_message.Message):
    __slots__ = ("jobs", "volunteers", "validation", "events", "now_unix_ms", "fingerprint")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    VOLUNTEERS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NOW_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobStatus]
    volunteers: _containers.RepeatedCompositeFieldContainer[VolunteerStatus]
    validation: ValidationCounts
    events: _containers.RepeatedCompositeFieldContainer[Event]
    now_unix_ms: int
    fingerprint: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobStatus, _Mapping]]] = ..., volunteers: _Optional[_Iterable[_Union[VolunteerStatus, _Mapping]]] = ..., validation: _Optional[_Union[ValidationCounts, _Mapping]] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., now_unix_ms: _Optional[int] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class RemoveRowsRequest(_message.Message):
    __slots__ = ("job_id", "ids", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class RemoveRowsResponse(_message.Message):
    __slots__ = ("version", "rows_removed", "rows", "merkle_root")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    version: int
    rows_removed: int
    rows: int
    merkle_root: str
    def __init__(self, version: _Optional[int] = ..., rows_removed: _Optional[int] = ..., rows: _Optional[int] = ..., merkle_root: _Optional[str] = ...) -> None: ...
