"""Bad input against a real coordinator: a clear gRPC status, nothing stored, still serving.

Every test starts a real coordinator in-process on port 0, sends one kind of bad input over a
real channel, and asserts three things: the exact status code with a message that names what
is wrong; that the database is exactly as it was (every row of every table); and that the
server still serves a following valid call (usually an honest submit on the same lease).
"""

from __future__ import annotations

import math
import sqlite3
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import zstandard

from allmende.client.engine import EngineConfig, Event, VolunteerEngine
from allmende.client.engine import events as ev
from allmende.coordinator.app import RunningCoordinator
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol import codec
from allmende.protocol.kinds.columns import Layout
from allmende.protocol.signing import CTX_REGISTER, CTX_WORK_UNIT, SigningKey
from allmende.protocol.wire import WorkUnit, decode_unit, sign_unit
from allmende.v1 import allmende_pb2 as pb
from tests.integration.rawclient import (
    FakeComputer,
    RawAdmin,
    RawVolunteer,
    expect_error,
    job_stream,
    unit_rows,
)

TEXTS = [f"sentence number {i} about the commons" for i in range(8)]
DIMS = 384
TABLES = ("jobs", "units", "items", "volunteers", "leases", "results", "events")

Code = grpc.StatusCode


# ---------------------------------------------------------------- helpers and fixtures


def db_snapshot(home: CoordinatorHome) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to prove that a refused request stored nothing.

    A refused result is counted against its volunteer's record (tests/integration/
    test_trust.py checks that); that count and its event are the one change allowed."""
    conn = sqlite3.connect(f"file:{home.root / 'coordinator.db'}?mode=ro", uri=True, timeout=30)
    try:
        snapshot = {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
                    for table in TABLES}
        snapshot["events"] = [e for e in snapshot["events"] if e[2] != "volunteer.fault"]
        return snapshot
    finally:
        conn.close()


def spec(**fields: Any) -> pb.JobSpec:
    fields.setdefault("kind", "embed-text")
    fields.setdefault("model", "all-MiniLM-L6-v2")
    return pb.JobSpec(**fields)


@pytest.fixture
def raw_admin(coordinator: RunningCoordinator,
              coordinator_home: CoordinatorHome) -> Iterator[RawAdmin]:
    admin = RawAdmin(coordinator.address, coordinator_home.load_token())
    yield admin
    admin.close()


@pytest.fixture
def job_id(raw_admin: RawAdmin) -> str:
    """A small running job: 8 texts in 2 units of 4, two replicas each."""
    return raw_admin.create_job(job_stream(TEXTS, unit_size=4, redundancy=2)).job_id


@pytest.fixture
def volunteers(coordinator: RunningCoordinator) -> Iterator[Callable[[], RawVolunteer]]:
    """A factory of registered raw volunteers, each with its own key."""
    made: list[RawVolunteer] = []

    def make() -> RawVolunteer:
        volunteer = RawVolunteer(coordinator.address)
        volunteer.register()
        made.append(volunteer)
        return volunteer

    yield make
    for volunteer in made:
        volunteer.close()


def assert_still_serves_jobs(admin: RawAdmin, before: list[str]) -> None:
    """No job appeared, and a valid CreateJob right after the refusal works."""
    assert admin.job_ids() == before
    created = admin.create_job(job_stream(["still serving"]))
    assert created.units == 1
    assert admin.job_ids() == sorted([*before, created.job_id])


def assert_honest_submit_works(volunteer: RawVolunteer, lease: pb.Lease, admin: RawAdmin,
                               job: str, received: int) -> None:
    """The lease survived the refusal: an honest result for it is taken."""
    response = volunteer.submit(*volunteer.result(lease))
    assert response.status in ("pending", "accepted"), response
    assert admin.get_job(job).results_received == received + 1


def flip_bit(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


# ---------------------------------------------------------------- unknown ids


def test_get_job_unknown_id_is_not_found(raw_admin: RawAdmin, job_id: str,
                                         coordinator_home: CoordinatorHome) -> None:
    before = db_snapshot(coordinator_home)
    expect_error(lambda: raw_admin.get_job("job-000000000000"), Code.NOT_FOUND,
                 "job-000000000000", "does not exist")
    expect_error(lambda: raw_admin.get_job(""), Code.INVALID_ARGUMENT, "job_id")
    assert db_snapshot(coordinator_home) == before
    assert raw_admin.get_job(job_id).units_total == 2


def test_get_manifest_unknown_job_is_not_found(raw_admin: RawAdmin, job_id: str) -> None:
    expect_error(
        lambda: raw_admin.datasets.GetManifest(pb.GetManifestRequest(job_id="job-nosuchjob"),
                                               timeout=10),
        Code.NOT_FOUND, "job-nosuchjob",
    )
    # A job that exists but is still running has no dataset yet: a different, clear answer.
    expect_error(
        lambda: raw_admin.datasets.GetManifest(pb.GetManifestRequest(job_id=job_id), timeout=10),
        Code.FAILED_PRECONDITION, job_id, "not ready",
    )
    assert raw_admin.get_job(job_id).state == "running"


def test_download_file_unknown_job_is_not_found(raw_admin: RawAdmin, job_id: str) -> None:
    def download(job: str, name: str) -> Any:
        return raw_admin.datasets.DownloadFile(pb.DownloadFileRequest(job_id=job, name=name),
                                               timeout=10)

    expect_error(lambda: download("job-nosuchjob", "part-00000.parquet"), Code.NOT_FOUND,
                 "job-nosuchjob")
    expect_error(lambda: download(job_id, "../coordinator.key"), Code.FAILED_PRECONDITION,
                 "not ready")
    assert raw_admin.info().fingerprint


# ---------------------------------------------------------------- CreateJob: bad specs


BAD_SPECS = [
    pytest.param({"model": "no-such-model"}, ("model", "no-such-model"), id="unknown-model"),
    pytest.param({"model": ""}, ("model",), id="empty-model"),
    pytest.param({"kind": "embed-audio"}, ("kind", "embed-audio"), id="unknown-kind"),
    pytest.param({"kind": ""}, ("kind",), id="empty-kind"),
    pytest.param({"redundancy": 17}, ("redundancy", "17"), id="redundancy-too-high"),
    pytest.param({"unit_size": 8193}, ("unit_size", "8193"), id="unit-size-too-high"),
    pytest.param({"tau": 1.5}, ("tau", "1.5"), id="tau-above-one"),
    pytest.param({"tau": -0.5}, ("tau",), id="tau-negative"),
    pytest.param({"tau": math.nan}, ("tau", "nan"), id="tau-nan"),
    pytest.param({"redundancy": 3, "max_replicas": 2}, ("max_replicas",), id="max-replicas"),
    pytest.param({"lease_seconds": 10**7}, ("lease_seconds",), id="lease-seconds"),
    pytest.param({"result_dtype": "float32"}, ("result_dtype", "float32"), id="result-dtype"),
    pytest.param({"name": "n" * 201}, ("name",), id="name-too-long"),
]


@pytest.mark.parametrize(("fields", "needles"), BAD_SPECS)
def test_create_job_bad_spec_is_invalid_argument(
    raw_admin: RawAdmin, coordinator_home: CoordinatorHome, fields: dict[str, Any],
    needles: tuple[str, ...],
) -> None:
    before, jobs = db_snapshot(coordinator_home), raw_admin.job_ids()
    expect_error(lambda: raw_admin.create_job(job_stream(TEXTS, **fields)),
                 Code.INVALID_ARGUMENT, *needles)
    assert db_snapshot(coordinator_home) == before
    assert_still_serves_jobs(raw_admin, jobs)


# ---------------------------------------------------------------- CreateJob: bad items


def test_create_job_duplicate_ids_names_both_lines(raw_admin: RawAdmin,
                                                   coordinator_home: CoordinatorHome) -> None:
    before, jobs = db_snapshot(coordinator_home), raw_admin.job_ids()
    details = expect_error(
        lambda: raw_admin.create_job(job_stream(["a", "b", "c"], ids=["x", "y", "x"])),
        Code.INVALID_ARGUMENT, "id", "'x'", "line 3", "line 1",
    )
    assert "line 2" not in details
    assert db_snapshot(coordinator_home) == before
    assert_still_serves_jobs(raw_admin, jobs)


def test_create_job_empty_input(raw_admin: RawAdmin, coordinator_home: CoordinatorHome) -> None:
    before, jobs = db_snapshot(coordinator_home), raw_admin.job_ids()
    expect_error(lambda: raw_admin.create_job(job_stream([])), Code.INVALID_ARGUMENT,
                 "input", "none")
    assert db_snapshot(coordinator_home) == before
    assert_still_serves_jobs(raw_admin, jobs)


def test_create_job_empty_id_names_the_line(raw_admin: RawAdmin,
                                            coordinator_home: CoordinatorHome) -> None:
    before, jobs = db_snapshot(coordinator_home), raw_admin.job_ids()
    expect_error(lambda: raw_admin.create_job(job_stream(["a", "b"], ids=["x", ""])),
                 Code.INVALID_ARGUMENT, "id", "line 2")
    assert db_snapshot(coordinator_home) == before
    assert_still_serves_jobs(raw_admin, jobs)


def test_create_job_oversized_text_names_the_line(raw_admin: RawAdmin,
                                                  coordinator_home: CoordinatorHome) -> None:
    before, jobs = db_snapshot(coordinator_home), raw_admin.job_ids()
    expect_error(lambda: raw_admin.create_job(job_stream(["ok", "x" * (300 * 1024)])),
                 Code.INVALID_ARGUMENT, "text", "line 2")
    assert db_snapshot(coordinator_home) == before
    assert_still_serves_jobs(raw_admin, jobs)


# ---------------------------------------------------------------- CreateJob: bad streams


BAD_STREAMS = [
    pytest.param([pb.CreateJobRequest(items=[pb.InputItem(id="a", text="a", line=1)])],
                 id="items-without-spec"),
    pytest.param([], id="empty-stream"),
    pytest.param([pb.CreateJobRequest(spec=spec()), pb.CreateJobRequest(spec=spec())],
                 id="two-specs"),
]


@pytest.mark.parametrize("stream", BAD_STREAMS)
def test_create_job_stream_without_one_spec(raw_admin: RawAdmin,
                                            coordinator_home: CoordinatorHome,
                                            stream: list[pb.CreateJobRequest]) -> None:
    before, jobs = db_snapshot(coordinator_home), raw_admin.job_ids()
    expect_error(lambda: raw_admin.create_job(stream), Code.INVALID_ARGUMENT, "spec")
    assert db_snapshot(coordinator_home) == before
    assert_still_serves_jobs(raw_admin, jobs)


def test_create_job_message_over_size_limit(raw_admin: RawAdmin,
                                            coordinator_home: CoordinatorHome) -> None:
    before, jobs = db_snapshot(coordinator_home), raw_admin.job_ids()
    huge = [pb.CreateJobRequest(spec=spec()),
            pb.CreateJobRequest(items=[pb.InputItem(id="a", text="x" * (17 << 20), line=1)])]
    expect_error(lambda: raw_admin.create_job(huge), Code.RESOURCE_EXHAUSTED, "larger than max")
    assert db_snapshot(coordinator_home) == before
    assert_still_serves_jobs(raw_admin, jobs)


# ---------------------------------------------------------------- CreateJob: admin token


@pytest.mark.parametrize(
    ("metadata", "needles"),
    [
        pytest.param([("authorization", "Bearer not-the-token")], ("admin token", "match"),
                     id="wrong-token"),
        pytest.param([], ("admin token", "authorization"), id="missing-token"),
        pytest.param([("authorization", "Bearer ")], ("admin token",), id="empty-token"),
    ],
)
def test_create_job_without_the_admin_token_is_unauthenticated(
    raw_admin: RawAdmin, coordinator_home: CoordinatorHome, metadata: list[tuple[str, str]],
    needles: tuple[str, ...],
) -> None:
    before, jobs = db_snapshot(coordinator_home), raw_admin.job_ids()
    details = expect_error(lambda: raw_admin.create_job(job_stream(TEXTS), metadata=metadata),
                           Code.UNAUTHENTICATED, *needles)
    assert coordinator_home.load_token() not in details
    assert db_snapshot(coordinator_home) == before
    assert_still_serves_jobs(raw_admin, jobs)


# ---------------------------------------------------------------- volunteers: identity


def test_register_with_a_bad_proof_is_unauthenticated(
    coordinator: RunningCoordinator, coordinator_home: CoordinatorHome,
) -> None:
    before = db_snapshot(coordinator_home)
    volunteer = RawVolunteer(coordinator.address)
    impostor = SigningKey.generate()
    try:
        def register(public_key: bytes, signature: bytes, name: str = "x") -> Any:
            return volunteer.stub.RegisterVolunteer(
                pb.RegisterVolunteerRequest(public_key=public_key, signature=signature,
                                            display_name=name),
                timeout=10,
            )

        key = volunteer.key
        # Signed by another key, a flipped bit, no signature, a context for something else.
        expect_error(lambda: register(key.public_key,
                                      impostor.sign(CTX_REGISTER, key.public_key)),
                     Code.UNAUTHENTICATED, "signature")
        good = key.sign(CTX_REGISTER, key.public_key)
        expect_error(lambda: register(key.public_key, flip_bit(good, 5)),
                     Code.UNAUTHENTICATED, "signature")
        expect_error(lambda: register(key.public_key, b""), Code.UNAUTHENTICATED, "signature")
        expect_error(lambda: register(key.public_key, key.sign(b"allmende.v1/result",
                                                               key.public_key)),
                     Code.UNAUTHENTICATED, "signature")
        expect_error(lambda: register(key.public_key[:31], good), Code.INVALID_ARGUMENT,
                     "public_key", "32 bytes")
        expect_error(lambda: register(key.public_key, good, name="n" * 65),
                     Code.INVALID_ARGUMENT, "display_name")
        assert db_snapshot(coordinator_home) == before
        # The key that failed to prove itself is not a volunteer.
        volunteer.volunteer_id = key.fingerprint
        expect_error(volunteer.lease_response, Code.UNAUTHENTICATED, "unknown volunteer",
                     "register")
        # And the server still registers a volunteer that does prove its key.
        assert volunteer.register() == key.fingerprint
    finally:
        volunteer.close()


def test_lease_work_for_an_unregistered_volunteer(
    coordinator: RunningCoordinator, coordinator_home: CoordinatorHome, job_id: str,
    volunteers: Callable[[], RawVolunteer], raw_admin: RawAdmin,
) -> None:
    before = db_snapshot(coordinator_home)
    stranger = RawVolunteer(coordinator.address)
    try:
        stranger.volunteer_id = stranger.key.fingerprint
        expect_error(stranger.lease_response, Code.UNAUTHENTICATED,
                     stranger.key.fingerprint[:16], "register first")
    finally:
        stranger.close()
    assert db_snapshot(coordinator_home) == before
    assert raw_admin.get_job(job_id).units_in_progress == 0
    member = volunteers()  # a registered key that leaves the volunteer id out
    member.volunteer_id = ""
    expect_error(member.lease_response, Code.INVALID_ARGUMENT, "volunteer_id")
    assert volunteers().lease().lease_id


# ---------------------------------------------------------------- SubmitResult: one bad field


def _unit(lease: pb.Lease) -> WorkUnit:
    return decode_unit(lease.unit.unit)


def _rows(lease: pb.Lease) -> int:
    return len(_unit(lease).texts)


def _bad_row(value: float) -> Callable[[RawVolunteer, RawVolunteer, pb.Lease], Any]:
    def build(v: RawVolunteer, other: RawVolunteer, lease: pb.Lease) -> Any:
        matrix = unit_rows(_rows(lease), DIMS)
        matrix[1, 7] = value
        with np.errstate(over="ignore"):  # 1e6 overflows float16 on purpose
            return v.result(lease, matrix=matrix)

    return build


def _payload_swapped(v: RawVolunteer, other: RawVolunteer, lease: pb.Lease) -> Any:
    envelope, signature, _ = v.result(lease)
    other_payload = codec.encode(unit_rows(_rows(lease), DIMS, seed=9)).payload
    return envelope, signature, other_payload


def _envelope_bit_flipped(v: RawVolunteer, other: RawVolunteer, lease: pb.Lease) -> Any:
    envelope, signature, payload = v.result(lease, device="device-under-test")
    # Change one letter of the device string: still a valid envelope, no longer signed.
    at = envelope.index(b"device-under-test")
    return flip_bit(envelope, at), signature, payload


def _not_zstd(v: RawVolunteer, other: RawVolunteer, lease: pb.Lease) -> Any:
    return v.result(lease, payload=b"\x00" * 64, rows=_rows(lease), dims=DIMS)


def _payload_shape_disagrees(v: RawVolunteer, other: RawVolunteer, lease: pb.Lease) -> Any:
    # The envelope declares the right shape; the payload holds one column too few.
    payload = codec.encode(unit_rows(_rows(lease), DIMS - 1)).payload
    return v.result(lease, payload=payload, rows=_rows(lease), dims=DIMS)


def _other_unit(v: RawVolunteer, other: RawVolunteer, lease: pb.Lease) -> Any:
    unit_id = _unit(lease).unit_id
    return v.result(lease, unit_id=unit_id[:-1] + ("1" if unit_id[-1] == "0" else "0"))


def _impersonated(v: RawVolunteer, other: RawVolunteer, lease: pb.Lease) -> Any:
    # `other` claims to be `v` (v's id, v's lease) but can only sign with its own key.
    return v.result(lease, signer=other.key)


def _unregistered(v: RawVolunteer, other: RawVolunteer, lease: pb.Lease) -> Any:
    stranger = SigningKey.generate()
    return v.result(lease, signer=stranger, volunteer_id=stranger.fingerprint)


SUBMIT_CASES = [
    pytest.param(lambda v, o, le: v.result(le, lease_id="no-such-lease"),
                 Code.NOT_FOUND, ("lease", "no-such-lease"), id="unknown-lease"),
    pytest.param(_impersonated, Code.PERMISSION_DENIED, ("signature",),
                 id="signed-by-another-key"),
    pytest.param(lambda v, o, le: (lambda e, s, p: (e, flip_bit(s, 10), p))(*v.result(le)),
                 Code.PERMISSION_DENIED, ("signature",), id="signature-bit-flipped"),
    pytest.param(lambda v, o, le: (lambda e, s, p: (e, s[:10], p))(*v.result(le)),
                 Code.PERMISSION_DENIED, ("signature",), id="signature-truncated"),
    pytest.param(_envelope_bit_flipped, Code.PERMISSION_DENIED, ("signature",),
                 id="envelope-bit-flipped"),
    # The request is signed by v, but the envelope speaks for a key nobody registered.
    pytest.param(_unregistered, Code.PERMISSION_DENIED, ("acts for",),
                 id="unregistered-volunteer"),
    pytest.param(_payload_swapped, Code.INVALID_ARGUMENT, ("payload", "sha256"),
                 id="payload-sha256-mismatch"),
    pytest.param(lambda v, o, le: v.result(le, payload_sha256=b"\x01" * 31),
                 Code.INVALID_ARGUMENT, ("envelope.payload_sha256", "32 bytes"),
                 id="payload-sha256-length"),
    pytest.param(lambda v, o, le: v.result(le, codec="gzip"),
                 Code.INVALID_ARGUMENT, ("envelope.codec", "gzip"), id="unknown-codec"),
    pytest.param(lambda v, o, le: (b"\xff\xff\xff garbage", b"\x00" * 64, b""),
                 Code.INVALID_ARGUMENT, ("envelope",), id="garbage-envelope"),
    pytest.param(lambda v, o, le: v.result(le, unit_id=""),
                 Code.INVALID_ARGUMENT, ("envelope.unit_id",), id="empty-unit-id"),
    pytest.param(_other_unit, Code.PERMISSION_DENIED, ("not leased",), id="unit-not-leased"),
    pytest.param(lambda v, o, le: v.result(le, matrix=unit_rows(_rows(le), DIMS - 1)),
                 Code.INVALID_ARGUMENT, ("envelope.columns", f"float16 x {DIMS - 1}, not"),
                 id="wrong-dims"),
    pytest.param(lambda v, o, le: v.result(le, matrix=unit_rows(_rows(le) - 1, DIMS)),
                 Code.INVALID_ARGUMENT, ("envelope.rows", "rows leased"), id="wrong-rows"),
    pytest.param(lambda v, o, le: v.result(le, matrix=unit_rows(_rows(le) + 1, DIMS)),
                 Code.INVALID_ARGUMENT, ("envelope.rows",), id="extra-row"),
    pytest.param(_payload_shape_disagrees, Code.INVALID_ARGUMENT,
                 ("payload", "bytes once decompressed"), id="payload-shape-disagrees"),
    pytest.param(_bad_row(float("nan")), Code.INVALID_ARGUMENT, ("payload", "NaN", "row 1"),
                 id="nan-row"),
    pytest.param(_bad_row(float("inf")), Code.INVALID_ARGUMENT, ("payload", "inf", "row 1"),
                 id="inf-row"),
    pytest.param(_bad_row(-float("inf")), Code.INVALID_ARGUMENT, ("payload", "inf", "row 1"),
                 id="minus-inf-row"),
    pytest.param(_bad_row(1e6), Code.INVALID_ARGUMENT, ("payload", "inf", "row 1"),
                 id="overflows-float16"),
    pytest.param(_not_zstd, Code.INVALID_ARGUMENT, ("payload", "zstd"), id="not-zstd"),
    pytest.param(lambda v, o, le: v.result(le, unit_sha256=b"\x00" * 32),
                 Code.INVALID_ARGUMENT, ("envelope.unit_sha256",), id="unit-sha256"),
    pytest.param(lambda v, o, le: v.result(le, model_sha256="0" * 64),
                 Code.INVALID_ARGUMENT, ("envelope.model_sha256",), id="model-sha256"),
    pytest.param(lambda v, o, le: v.result(le, columns=(Layout("embedding", "int8", DIMS),)),
                 Code.INVALID_ARGUMENT, ("envelope.columns", "'embedding' is int8"),
                 id="wrong-dtype"),
    pytest.param(lambda v, o, le: v.result(le, columns=()),
                 Code.INVALID_ARGUMENT, ("envelope.columns", "1 to 16"), id="no-columns"),
    pytest.param(lambda v, o, le: v.result(le, columns=(Layout("vector", "float16", DIMS),)),
                 Code.INVALID_ARGUMENT, ("envelope.columns", "'embedding' is missing"),
                 id="column-missing"),
    pytest.param(lambda v, o, le: v.result(le, columns=(
                     Layout("embedding", "float16", DIMS), Layout("score", "float32", 1))),
                 Code.INVALID_ARGUMENT, ("envelope.columns", "'score' is not one"),
                 id="column-extra"),
    pytest.param(lambda v, o, le: v.result(le, columns=(Layout("embedding", "float16", 0),)),
                 Code.INVALID_ARGUMENT, ("envelope.columns[0]", "wide"), id="column-no-width"),
]


@pytest.mark.parametrize(("build", "code", "needles"), SUBMIT_CASES)
def test_submit_bad_result_is_refused_and_stores_nothing(
    job_id: str, raw_admin: RawAdmin, coordinator_home: CoordinatorHome,
    volunteers: Callable[[], RawVolunteer],
    build: Callable[[RawVolunteer, RawVolunteer, pb.Lease], tuple[bytes, bytes, bytes]],
    code: grpc.StatusCode, needles: tuple[str, ...],
) -> None:
    volunteer, other = volunteers(), volunteers()
    lease = volunteer.lease()
    envelope, signature, payload = build(volunteer, other, lease)
    before = db_snapshot(coordinator_home)
    expect_error(lambda: volunteer.submit(envelope, signature, payload), code, *needles)
    assert db_snapshot(coordinator_home) == before
    assert raw_admin.get_job(job_id).results_received == 0
    assert_honest_submit_works(volunteer, lease, raw_admin, job_id, received=0)


# ---------------------------------------------------------------- SubmitResult: whose lease


def test_result_for_a_unit_leased_to_another_volunteer(
    job_id: str, raw_admin: RawAdmin, coordinator_home: CoordinatorHome,
    volunteers: Callable[[], RawVolunteer],
) -> None:
    a, b = volunteers(), volunteers()
    lease_a, lease_b = a.lease(), b.lease()
    assert _unit(lease_a).unit_id == _unit(lease_b).unit_id  # two replicas of one unit
    before = db_snapshot(coordinator_home)
    # B signs honestly with its own key and id, but names A's lease.
    expect_error(lambda: b.submit(*b.result(lease_a)), Code.PERMISSION_DENIED,
                 "not leased to volunteer", b.volunteer_id[:12])
    # B hands back A's lease: refused too.
    expect_error(lambda: b.release(lease_a.lease_id), Code.PERMISSION_DENIED,
                 lease_a.lease_id, "another volunteer")
    expect_error(lambda: b.release("no-such-lease"), Code.NOT_FOUND, "no-such-lease")
    assert db_snapshot(coordinator_home) == before
    # Both leases still work: two agreeing replicas make the unit accepted.
    assert a.submit(*a.result(lease_a)).status == "pending"
    assert b.submit(*b.result(lease_b)).status == "accepted"
    status = raw_admin.get_job(job_id)
    assert (status.results_received, status.units_accepted) == (2, 1)


def test_second_submit_on_the_same_lease_is_refused(
    job_id: str, raw_admin: RawAdmin, coordinator_home: CoordinatorHome,
    volunteers: Callable[[], RawVolunteer],
) -> None:
    volunteer = volunteers()
    lease = volunteer.lease()
    first = volunteer.result(lease)
    assert volunteer.submit(*first).status == "pending"
    before = db_snapshot(coordinator_home)
    # The exact bytes again (a replay), and a fresh, differently signed result.
    expect_error(lambda: volunteer.submit(*first), Code.FAILED_PRECONDITION,
                 lease.lease_id, "already submitted")
    again = volunteer.result(lease, matrix=unit_rows(_rows(lease), DIMS, seed=3))
    expect_error(lambda: volunteer.submit(*again), Code.FAILED_PRECONDITION, "already submitted")
    assert db_snapshot(coordinator_home) == before
    assert raw_admin.get_job(job_id).results_received == 1
    # Still serving: a second volunteer completes the quorum.
    other = volunteers()
    other_lease = other.lease()
    assert _unit(other_lease).unit_id == _unit(lease).unit_id
    assert other.submit(*other.result(other_lease)).status == "accepted"


def test_submit_on_a_released_lease_is_refused(
    job_id: str, raw_admin: RawAdmin, coordinator_home: CoordinatorHome,
    volunteers: Callable[[], RawVolunteer],
) -> None:
    volunteer = volunteers()
    lease = volunteer.lease()
    volunteer.release(lease.lease_id, "changed my mind")
    before = db_snapshot(coordinator_home)
    expect_error(lambda: volunteer.submit(*volunteer.result(lease)), Code.FAILED_PRECONDITION,
                 "released")
    assert db_snapshot(coordinator_home) == before
    assert raw_admin.get_job(job_id).results_received == 0
    assert volunteer.lease().lease_id


# ---------------------------------------------------------------- SubmitResult: size attacks


def test_zstd_bomb_is_refused_fast_without_inflating(
    job_id: str, raw_admin: RawAdmin, coordinator_home: CoordinatorHome,
    volunteers: Callable[[], RawVolunteer],
) -> None:
    volunteer = volunteers()
    lease = volunteer.lease()
    rows = _rows(lease)
    # ~64 MiB of zeros compressed in a stream (so the test itself never holds 64 MiB); the
    # envelope declares the real shape, the right sha256 and a valid signature.
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    chunk = bytes(1 << 20)
    bomb = b"".join(compressor.compress(chunk) for _ in range(64)) + compressor.flush()
    assert len(bomb) < 64 * 1024
    envelope, signature, payload = volunteer.result(lease, payload=bomb, rows=rows, dims=DIMS)
    before = db_snapshot(coordinator_home)
    tracemalloc.start()
    try:
        started = time.monotonic()
        expect_error(lambda: volunteer.submit(envelope, signature, payload),
                     Code.INVALID_ARGUMENT, "payload", "at most", f"{rows}x{DIMS}")
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 5.0
    # The decoder reads at most one byte past the declared rows x dims x 2 bytes.
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while refusing a bomb"
    assert db_snapshot(coordinator_home) == before
    assert_honest_submit_works(volunteer, lease, raw_admin, job_id, received=0)


def test_submit_over_the_message_size_limit(
    job_id: str, raw_admin: RawAdmin, coordinator_home: CoordinatorHome,
    volunteers: Callable[[], RawVolunteer],
) -> None:
    volunteer = volunteers()
    lease = volunteer.lease()
    big = np.random.default_rng(1).bytes(17 << 20)
    envelope, signature, _ = volunteer.result(lease)
    before = db_snapshot(coordinator_home)
    expect_error(lambda: volunteer.submit(envelope, signature, big), Code.RESOURCE_EXHAUSTED,
                 "larger than max")
    assert db_snapshot(coordinator_home) == before
    assert raw_admin.info().fingerprint
    assert_honest_submit_works(volunteer, lease, raw_admin, job_id, received=0)


# ---------------------------------------------------------------- the real volunteer engine


def run_engine(coordinator: RunningCoordinator, home: Path, fingerprint: str,
               computer: FakeComputer, **overrides: Any) -> tuple[int, list[Event]]:
    events: list[Event] = []
    config = EngineConfig(coordinator=coordinator.address, fingerprint=fingerprint, home=home,
                          device="cpu", exit_when_idle=True, give_up_after_s=10, **overrides)
    engine = VolunteerEngine(config, on_event=events.append, computer=computer)
    return engine.run(), events


def stopped(events: list[Event]) -> ev.Stopped:
    assert isinstance(events[-1], ev.Stopped), events
    return events[-1]


def test_engine_with_the_wrong_fingerprint_refuses_and_exits_3(
    coordinator: RunningCoordinator, coordinator_home: CoordinatorHome, job_id: str,
    raw_admin: RawAdmin, tmp_path: Path,
) -> None:
    before = db_snapshot(coordinator_home)
    wrong = SigningKey.generate().fingerprint
    computer = FakeComputer()
    code, events = run_engine(coordinator, tmp_path / "v", wrong, computer)
    assert code == 3
    reason = stopped(events).reason
    assert "does not match the pinned fingerprint" in reason
    assert wrong in reason and coordinator.coordinator.key.fingerprint in reason
    assert not any(isinstance(e, (ev.UnitLeased, ev.Connected)) for e in events)
    assert computer.units == []
    status = raw_admin.get_job(job_id)
    assert (status.units_in_progress, status.results_received) == (0, 0)
    assert db_snapshot(coordinator_home) == before  # not even registered


def test_engine_with_a_malformed_fingerprint_names_it(
    coordinator: RunningCoordinator, coordinator_home: CoordinatorHome, job_id: str,
    tmp_path: Path,
) -> None:
    before = db_snapshot(coordinator_home)
    code, events = run_engine(coordinator, tmp_path / "v", "not-a-fingerprint", FakeComputer())
    assert code != 0
    assert "fingerprint" in stopped(events).reason
    assert "not-a-fingerprint" in stopped(events).reason
    assert db_snapshot(coordinator_home) == before


def _rewrite_units(home: CoordinatorHome,
                   change: Callable[[bytes, bytes], tuple[bytes, bytes]]) -> int:
    """Change every unit's (blob, signature) in the live coordinator's database."""
    conn = sqlite3.connect(home.root / "coordinator.db", timeout=30)
    try:
        rows = conn.execute("SELECT unit_id, blob, signature FROM units").fetchall()
        with conn:
            for unit_id, blob, signature in rows:
                new_blob, new_signature = change(blob, signature)
                conn.execute("UPDATE units SET blob = ?, signature = ? WHERE unit_id = ?",
                             (new_blob, new_signature, unit_id))
        return len(rows)
    finally:
        conn.close()


def _leases(home: CoordinatorHome) -> list[tuple[str, str]]:
    conn = sqlite3.connect(f"file:{home.root / 'coordinator.db'}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT state, reason FROM leases").fetchall()
    finally:
        conn.close()


def test_engine_refuses_units_with_a_tampered_signature(
    coordinator: RunningCoordinator, coordinator_home: CoordinatorHome, job_id: str,
    raw_admin: RawAdmin, tmp_path: Path,
) -> None:
    # Units are signed as each lease is composed, so the fault goes into the signing: the
    # coordinator's real key, with one bit of every unit signature flipped on the way out.
    real = coordinator.coordinator.key

    class FlippingKey:
        public_key = real.public_key
        fingerprint = real.fingerprint

        def sign(self, context: bytes, payload: bytes) -> bytes:
            signature = real.sign(context, payload)
            return flip_bit(signature, 3) if context == CTX_WORK_UNIT else signature

    coordinator.coordinator.key = FlippingKey()  # type: ignore[assignment]
    computer = FakeComputer()
    code, events = run_engine(coordinator, tmp_path / "v", coordinator.coordinator.key.fingerprint,
                              computer, max_refusals=3)
    assert code == 3
    refused = [e for e in events if isinstance(e, ev.UnitRefused)]
    assert len(refused) == 3
    assert all("bad signature" in e.reason for e in refused)
    assert refused[0].unit_id.startswith(job_id)
    reason = stopped(events).reason
    assert "refused 3 units in a row" in reason and "bad signature" in reason
    assert not any(isinstance(e, ev.UnitLeased) for e in events)
    assert computer.units == []
    # Every lease was handed back with the reason; nothing is held, nothing was submitted.
    leases = _leases(coordinator_home)
    assert len(leases) == 3
    assert all(state == "released" and "bad signature" in why for state, why in leases)
    status = raw_admin.get_job(job_id)
    assert (status.units_in_progress, status.results_received) == (0, 0)


def test_engine_refuses_units_naming_an_unpinned_model_hash(
    coordinator: RunningCoordinator, coordinator_home: CoordinatorHome, job_id: str,
    raw_admin: RawAdmin, tmp_path: Path,
) -> None:
    # Correctly signed by the coordinator's own key, but for weights nobody pinned.
    key = coordinator_home.load_key()

    def resign(blob: bytes, signature: bytes) -> tuple[bytes, bytes]:
        unit = decode_unit(blob)
        return sign_unit(key, replace(unit, model_sha256="ab" * 32))

    _rewrite_units(coordinator_home, resign)
    computer = FakeComputer()
    code, events = run_engine(coordinator, tmp_path / "v", key.fingerprint, computer,
                              max_refusals=2)
    assert code == 3
    refused = [e for e in events if isinstance(e, ev.UnitRefused)]
    assert len(refused) == 2
    assert all("weights hash" in e.reason for e in refused)
    assert computer.units == []
    assert raw_admin.get_job(job_id).units_in_progress == 0


def test_engine_completes_the_job_after_the_refusals_stop(
    coordinator: RunningCoordinator, job_id: str, raw_admin: RawAdmin, tmp_path: Path,
) -> None:
    """The control case: the same engine with the right fingerprint and intact units works."""
    fp = coordinator.coordinator.key.fingerprint
    for n in range(2):
        code, events = run_engine(coordinator, tmp_path / f"v{n}", fp, FakeComputer())
        assert code == 0, stopped(events).reason
    status = raw_admin.get_job(job_id)
    assert status.units_accepted == 2
    assert status.results_rejected == 0

