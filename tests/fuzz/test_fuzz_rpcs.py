"""Property-based fuzzing of every RPC against one real coordinator.

One coordinator runs in-process on port 0 for the whole module, with real jobs (one running,
with a registered raw volunteer holding a lease; one complete, with its dataset; one spare
that the admin calls may pause, cancel and re-prioritise) and real volunteers. Every request
message of VolunteerService, JobService, DatasetService, ModelService and AdminService is
generated from its protobuf descriptor (strings with unicode, NULs, empty and long ones;
bytes; integers at their type's bounds; NaN and infinite doubles; repeated fields; optional
fields set or not), with the known ids mixed in so that fuzzing reaches past the lookups,
and volunteer calls signed (or not, or wrongly). The same RPCs also get raw bytes that the
server must parse itself, and CreateJob gets streams of fuzzed messages with and without the
admin token.

After every call the answer is a success or a status a client can act on, never INTERNAL or
UNKNOWN, and the server still serves. After every test the database, read directly, holds
only well-formed jobs, units, results and volunteers.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
import zstandard
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from allmende.coordinator.app import RunningCoordinator, serve
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol import codec, manifest
from allmende.protocol.kinds import KINDS as TASK_KINDS
from allmende.protocol.kinds.columns import Layout
from allmende.protocol.models import ModelRegistry
from allmende.protocol.requests import TIME_HEADER, sign_request
from allmende.protocol.signing import (
    CTX_REGISTER,
    CTX_RESULT,
    CTX_WORK_UNIT,
    SigningKey,
    fingerprint,
    verify,
)
from allmende.protocol.wire import CODEC, decode_envelope, decode_unit
from allmende.v1 import allmende_pb2 as pb
from tests.integration.rawclient import RawAdmin, RawVolunteer, channel, job_stream, text_rows

Code = grpc.StatusCode

# What a server may answer to any request; INTERNAL and UNKNOWN mean it broke.
ALLOWED = frozenset(
    {
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.UNAUTHENTICATED,
        Code.PERMISSION_DENIED,
        Code.FAILED_PRECONDITION,
        Code.ALREADY_EXISTS,
        Code.RESOURCE_EXHAUSTED,
        Code.CANCELLED,
    }
)
TIMEOUT_S = 20.0

RPC_FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

SERVICES = (
    "VolunteerService",
    "JobService",
    "DatasetService",
    "ModelService",
    "AdminService",
)
METHODS: list[MethodDescriptor] = [
    method for name in SERVICES for method in pb.DESCRIPTOR.services_by_name[name].methods
]
VOLUNTEER_SIGNED = {
    "LeaseWork",
    "SubmitResult",
    "SubmitResults",
    "ReleaseWork",
    "GetVerdicts",
    "ListLeases",
}
# Calls that change a job or a volunteer: fuzzing only aims them at the spare ones.
JOB_CHANGES = {"PauseJob", "ResumeJob", "CancelJob", "UpdateJob"}
VOLUNTEER_CHANGES = {"BanVolunteer", "UnbanVolunteer"}
JOB_STATES = ("running", "paused", "cancelled", "assimilating", "complete", "failed")
MAX_UNITS = 32  # the most units one LeaseWork may ask for, and results one SubmitResults holds
SUBMIT_STATUSES = ("pending", "accepted", "rejected")
ALLOWED_NAMES = frozenset(code.name for code in ALLOWED)

MODEL = ModelRegistry().names()[0]
MAIN_TEXTS = [f"sentence number {i} about the commons" for i in range(8)]
DONE_TEXTS = ["the first finished sentence", "the second one", "and a third"]


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def method_id(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}.{method.name}"


# ---------------------------------------------------------------- the coordinator under test


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str = ""
    response: Any = None


@dataclass
class World:
    home: CoordinatorHome
    running: RunningCoordinator
    token: str
    channel: grpc.Channel
    volunteer: RawVolunteer  # registered, holds `lease` on the main job
    lease: pb.Lease
    main_job: str
    done_job: str
    matrix_job: str  # many small units for well-signed results with fuzzed values
    spare_job: str
    spare_volunteer: str
    stranger: SigningKey  # never registered
    shards: list[str]
    job_ids: list[str] = field(default_factory=list)
    lease_ids: list[str] = field(default_factory=list)
    volunteer_ids: list[str] = field(default_factory=list)
    results_stored: int = 0  # before the fuzz tests: the done job's two results
    successes: dict[str, int] = field(default_factory=dict)
    batch_results_stored: int = 0  # results stored by SubmitResults calls answered OK
    _calls: dict[tuple[str, bool], Any] = field(default_factory=dict)

    @property
    def admin_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]

    def multicallable(self, method: MethodDescriptor, raw: bool) -> Any:
        key = (path_of(method), raw)
        if key not in self._calls:
            serialize: Callable[[Any], bytes] = (
                (lambda b: b) if raw else (lambda m: m.SerializeToString())
            )
            deserialize = GetMessageClass(method.output_type).FromString
            if method.client_streaming:
                make = self.channel.stream_unary
            elif method.server_streaming:
                make = self.channel.unary_stream
            else:
                make = self.channel.unary_unary
            self._calls[key] = make(
                path_of(method), request_serializer=serialize, response_deserializer=deserialize
            )
        return self._calls[key]

    def invoke(
        self,
        method: MethodDescriptor,
        request: Any,
        metadata: list[tuple[str, Any]],
        raw: bool = False,
    ) -> Outcome:
        call = self.multicallable(method, raw)
        try:
            if method.client_streaming:
                response = call(iter(list(request)), metadata=metadata, timeout=TIMEOUT_S)
            else:
                response = call(request, metadata=metadata, timeout=TIMEOUT_S)
                if method.server_streaming:
                    response = list(response)
        except grpc.RpcError as exc:
            error: Any = exc
            return Outcome(error.code(), error.details() or "")
        name = method.name
        if name == "SubmitResult" and "gold row" in getattr(response, "reason", ""):
            name = "SubmitResult (refused: missed gold rows, nothing stored)"
        if name == "SubmitResults":
            # Each result is judged on its own: refused ones, and those that missed gold
            # rows, stored nothing; every other one stored one row.
            self.batch_results_stored += sum(
                1
                for answer in response.results
                if answer.status != "refused" and "gold row" not in answer.reason
            )
        self.successes[name] = self.successes.get(name, 0) + 1
        return Outcome(Code.OK, response=response)

    def call(self, name: str, request: Message, metadata: list[tuple[str, Any]]) -> Any:
        """One well-formed call that must succeed (not counted as a fuzz success)."""
        method = next(m for m in METHODS if m.name == name)
        return self.multicallable(method, raw=False)(request, metadata=metadata, timeout=TIMEOUT_S)

    def assert_serving(self) -> None:
        info = self.call("GetCoordinatorInfo", pb.GetCoordinatorInfoRequest(), [])
        assert info.fingerprint == self.running.coordinator.key.fingerprint


def assert_allowed(method: MethodDescriptor, outcome: Outcome, token: str) -> None:
    event(f"{method.name}: {outcome.code.name}")
    if outcome.code == Code.OK:
        return
    assert outcome.code in ALLOWED, (
        f"{method_id(method)} answered {outcome.code.name}: {outcome.details}"
    )
    assert token not in outcome.details, "an error message shows the admin token"


def _finish_done_job(admin: RawAdmin, address: str) -> tuple[str, list[str], list[str]]:
    """A job taken to 'complete' by two honest raw volunteers: the job, its dataset's shard
    names, and the volunteers."""
    job = admin.create_job(job_stream(DONE_TEXTS, redundancy=2)).job_id
    finishers = [RawVolunteer(address) for _ in range(2)]
    try:
        for volunteer in finishers:
            volunteer.register()
        leases = [volunteer.lease() for volunteer in finishers]
        for volunteer, lease in zip(finishers, leases, strict=True):
            assert decode_unit(lease.unit.unit).job_id == job
            assert volunteer.submit(*volunteer.result(lease)).status in ("pending", "accepted")
    finally:
        for volunteer in finishers:
            volunteer.close()
    deadline = time.monotonic() + 60
    while True:
        try:
            found = admin.datasets.GetManifest(pb.GetManifestRequest(job_id=job), timeout=TIMEOUT_S)
            break
        except grpc.RpcError as exc:
            error: Any = exc
            assert error.code() == Code.FAILED_PRECONDITION, error.details()
            assert time.monotonic() < deadline, "the finished job never got its dataset"
            time.sleep(0.1)
    names = [shard["name"] for shard in json.loads(found.manifest)["shards"]]
    return job, names, [volunteer.volunteer_id for volunteer in finishers]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = CoordinatorHome(tmp_path_factory.mktemp("fuzz") / "coordinator")
    home.init()
    with serve(home.root, "127.0.0.1:0", drain_s=0.2) as running:
        admin = RawAdmin(running.address, home.load_token())
        done_job, shards, finishers = _finish_done_job(admin, running.address)
        main_job = admin.create_job(job_stream(MAIN_TEXTS, unit_size=4, redundancy=2)).job_id
        volunteer = RawVolunteer(running.address)
        volunteer.register()
        lease = volunteer.lease()
        assert decode_unit(lease.unit.unit).job_id == main_job
        spare_job = admin.create_job(job_stream(["spare one", "spare two"], redundancy=1)).job_id
        matrix_texts = [f"matrix sentence {i}" for i in range(24)]
        matrix_job = admin.create_job(job_stream(matrix_texts, unit_size=2)).job_id
        spare = RawVolunteer(running.address)
        spare.register()
        spare.close()
        world = World(
            home=home,
            running=running,
            token=home.load_token(),
            channel=channel(running.address),
            volunteer=volunteer,
            lease=lease,
            main_job=main_job,
            done_job=done_job,
            matrix_job=matrix_job,
            spare_job=spare_job,
            spare_volunteer=spare.volunteer_id,
            stranger=SigningKey.generate(),
            shards=shards,
            job_ids=[done_job, main_job, spare_job, matrix_job],
            lease_ids=[lease.lease_id],
            volunteer_ids=[*finishers, volunteer.volunteer_id, spare.volunteer_id],
            results_stored=len(finishers),
        )
        try:
            yield world
        finally:
            world.channel.close()
            volunteer.close()
            admin.close()


# ---------------------------------------------------------------- what the database may hold


def assert_state_is_sane(world: World) -> None:
    """Read the database read-only and check what every stored row must satisfy."""
    db = world.home.root / "coordinator.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    coordinator_key = world.running.coordinator.key
    try:
        jobs = {row["job_id"]: row for row in conn.execute("SELECT * FROM jobs")}
        units = {row["unit_id"]: row for row in conn.execute("SELECT * FROM units")}
        volunteers = {row["volunteer_id"]: row for row in conn.execute("SELECT * FROM volunteers")}
        leases = {row["lease_id"]: row for row in conn.execute("SELECT * FROM leases")}
        # Every job, volunteer and result is one that a call was answered OK for.
        assert set(jobs) == set(world.job_ids), "jobs stored by calls that were refused"
        assert set(volunteers) == set(world.volunteer_ids), "volunteers stored by refusals"
        stored = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        assert stored == (
            world.results_stored
            + world.successes.get("SubmitResult", 0)
            + world.batch_results_stored
        )
        item_counts = dict(conn.execute("SELECT job_id, COUNT(*) FROM items GROUP BY job_id"))
        for job_id, job in jobs.items():
            where = f"job {job_id}"
            assert job["state"] in JOB_STATES, where
            job_units = [u for u in units.values() if u["job_id"] == job_id]
            assert job["items"] > 0 and 0 < job["unique_items"] <= job["items"], where
            assert item_counts.get(job_id, 0) == job["items"], where
            assert job_units, f"{where} has no units"
            assert sum(u["rows"] for u in job_units) == job["unique_items"], where
            assert sorted(u["seq"] for u in job_units) == list(range(len(job_units))), where
            assert job["kind"] in TASK_KINDS and job["dims"] > 0, where
            assert job["result_dtype"] in codec.DTYPES, where
            assert 1 <= job["redundancy"] <= job["max_replicas"] <= 32, where
            assert 1 <= job["unit_size"] <= 8192, where
            assert math.isfinite(job["tau"]) and 0.0 < job["tau"] <= 1.0, where
            assert 1 <= job["lease_seconds"] <= 7 * 24 * 3600, where
            assert -1000 <= job["priority"] <= 1000, where
            if job["state"] == "complete":
                assert job["manifest"] is not None and job["manifest_sig"] is not None, where
                verified = manifest.verify_manifest(
                    job["manifest"], job["manifest_sig"], coordinator_key.fingerprint
                )
                assert verified.manifest["job"]["id"] == job_id, where
        for unit_id, unit in units.items():
            job = jobs[unit["job_id"]]
            verify(coordinator_key.public_key, CTX_WORK_UNIT, unit["blob"], unit["signature"])
            work = decode_unit(unit["blob"])
            assert (work.unit_id, work.job_id) == (unit_id, unit["job_id"])
            assert len(work.texts) == unit["rows"] > 0, unit_id
            assert (work.dims, work.result_dtype) == (job["dims"], job["result_dtype"]), unit_id
            assert unit["state"] in ("open", "accepted", "failed"), unit_id
        for volunteer_id, volunteer in volunteers.items():
            assert volunteer_id == fingerprint(volunteer["public_key"])
            assert len(volunteer["display_name"]) <= 64
            assert len(volunteer["client_version"]) <= 64
            assert len(volunteer["hardware"]) <= 256
        for row in conn.execute("SELECT * FROM results"):
            unit = units[row["unit_id"]]
            job = jobs[unit["job_id"]]
            where = f"result {row['result_id']} of unit {row['unit_id']}"
            matrix = codec.decode(row["payload"], job["result_dtype"], unit["rows"], job["dims"])
            assert matrix.shape == (unit["rows"], job["dims"]), where
            assert np.isfinite(matrix).all(), where
            env = decode_envelope(row["envelope"])
            assert (env.unit_id, env.lease_id, env.volunteer_id) == (
                row["unit_id"],
                row["lease_id"],
                row["volunteer_id"],
            ), where
            # The volunteer signed the unit as composed for its lease (gold rows mixed in,
            # its own row order); the coordinator stores the unit's rows in unit order.
            lease = leases[row["lease_id"]]
            composed = len(lease["composition"]) // 2 if lease["composition"] else unit["rows"]
            assert env.rows == composed, where
            assert env.columns == (Layout("embedding", job["result_dtype"], job["dims"]),), where
            if not lease["composition"]:
                assert hashlib.sha256(row["payload"]).digest() == env.payload_sha256, where
            public_key = volunteers[row["volunteer_id"]]["public_key"]
            verify(public_key, CTX_RESULT, row["envelope"], row["signature"])
            assert row["state"] in ("pending", "valid", "invalid"), where
        repeats = conn.execute(
            "SELECT unit_id, volunteer_id, COUNT(*) FROM results "
            "GROUP BY unit_id, volunteer_id HAVING COUNT(*) > 1"
        ).fetchall()
        assert not repeats, f"units with two results from one volunteer: {repeats}"
        for lease in conn.execute("SELECT * FROM leases"):
            assert lease["unit_id"] in units and lease["volunteer_id"] in volunteers
            assert lease["state"] in (
                "active",
                "submitted",
                "released",
                "cancelled",
                "expired",
                "rejected",
            )
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def state_stays_sane(world: World) -> Iterator[None]:
    """After each test (all of its examples): still serving, and nothing malformed stored."""
    assert_state_is_sane(world)
    yield
    world.assert_serving()
    assert_state_is_sane(world)


# ---------------------------------------------------------------- strategies


def _repeat(pieces: list[str], sizes: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    return st.builds(lambda piece, n: piece * n, st.sampled_from(pieces), sizes)


STRINGS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "job-",
            "job-000000000000",
            "../../coordinator.key",
            "'; DROP TABLE jobs; --",
            "%s%n%x",
            "\u202eevil",
            "\U0001f600",
            "\ufeff",
        ]
    ),
    _repeat(["x", "\u00e9", "\U0001f600", "\x00"], st.integers(60, 70_000)),
)
BYTES = st.one_of(
    st.binary(max_size=80),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=64, max_size=64),
    st.builds(bytes, st.integers(1000, 300_000)),
)
DOUBLES = st.one_of(
    st.floats(),
    st.sampled_from([0.0, -0.0, 0.5, 0.999, 1.0, 1.0000001, 5e-324, math.nan, math.inf, -math.inf]),
)


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    """Any value of the type, with its bounds and the values next to them drawn often."""
    edges = sorted(x for x in {low, low + 1, -1, 0, 1, high - 1, high} if low <= x <= high)
    return st.one_of(st.integers(low, high), st.sampled_from(edges))


SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.CPPTYPE_STRING: STRINGS,
    FieldDescriptor.CPPTYPE_BOOL: st.booleans(),
    FieldDescriptor.CPPTYPE_DOUBLE: DOUBLES,
    FieldDescriptor.CPPTYPE_FLOAT: st.floats(width=32),
    FieldDescriptor.CPPTYPE_INT32: _integers(-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: _integers(-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: _integers(0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: _integers(0, 2**64 - 1),
}


def _field_strategy(f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if f.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        assert f.message_type is not None
        return messages(f.message_type, depth=depth + 1)
    if f.type == FieldDescriptor.TYPE_BYTES:
        return BYTES
    return SCALARS[f.cpp_type]


def messages(
    descriptor: Descriptor,
    mixed: dict[str, st.SearchStrategy[Any]] | None = None,
    only: dict[str, st.SearchStrategy[Any]] | None = None,
    depth: int = 0,
) -> st.SearchStrategy[Message]:
    """Any message of this type: every field fuzzed by its type, known values mixed in."""
    mixed, only = mixed or {}, only or {}
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in descriptor.fields:
        value = only[f.name] if f.name in only else _field_strategy(f, depth)
        if f.name in mixed and f.name not in only:
            value = st.one_of(mixed[f.name], value)
        entry = f.message_type
        if entry is not None and entry.GetOptions().map_entry:  # a map<K, V> field
            key, item = entry.fields_by_name["key"], entry.fields_by_name["value"]
            fields[f.name] = st.dictionaries(
                _field_strategy(key, depth), _field_strategy(item, depth), max_size=3
            )
            continue
        if f.is_repeated:
            value = st.lists(value, max_size=4 if depth == 0 else 2)
        elif f.has_presence:
            value = st.one_of(st.none(), value)
        fields[f.name] = value
    cls = GetMessageClass(descriptor)
    return st.fixed_dictionaries(fields).map(
        lambda values: cls(**{k: v for k, v in values.items() if v is not None})
    )


def known_fields(world: World, method: MethodDescriptor) -> tuple[dict[str, Any], dict[str, Any]]:
    """(values mixed into random ones, values used instead of random ones) for a method."""
    name = method.name
    jobs = [world.spare_job] if name in JOB_CHANGES else list(world.job_ids)
    if name in VOLUNTEER_CHANGES:
        volunteers = [world.spare_volunteer]
    elif name in VOLUNTEER_SIGNED:
        volunteers = [world.volunteer.volunteer_id]
    else:
        volunteers = list(world.volunteer_ids)
    # ReleaseWork may hand back anything but the lease that SubmitResult fuzzes against.
    leases = [x for x in world.lease_ids if name != "ReleaseWork" or x != world.lease.lease_id]
    mixed: dict[str, Any] = {
        "job_id": st.sampled_from(jobs),
        "volunteer_id": st.sampled_from(volunteers),
        "name": st.sampled_from([*world.shards, "manifest.json", "manifest.sig", "/etc/passwd"]),
    }
    if leases:
        mixed["lease_id"] = st.sampled_from(leases)
    only: dict[str, Any] = {}
    if name == "DownloadFile":
        only["offset"] = st.one_of(
            st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**40, 2**63, 2**64 - 1])
        )
    return mixed, only


ASCII = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@st.composite
def volunteer_metadata(
    draw: st.DrawFn,
    world: World,
    method: MethodDescriptor,
    request: Message,
    signed: int = 6,
    holder: RawVolunteer | None = None,
) -> list[tuple[str, Any]]:
    """Signed by the lease holder (`signed` times in 12; the world's volunteer unless told),
    unsigned, by a stranger, or tampered with."""
    path = path_of(method)
    key = (holder or world.volunteer).key
    others = ["none", "stranger", "other-body", "clock", "tampered", "tampered"]
    how = draw(st.sampled_from(["signed"] * signed + others[: 12 - signed]))
    if how == "none":
        return []
    if how == "stranger":
        return sign_request(world.stranger, path, request)
    if how == "other-body":
        return sign_request(key, path, pb.LeaseWorkRequest(volunteer_id="someone else"))
    if how == "clock":
        now = int(time.time() * 1000)
        return sign_request(key, path, request, now_ms=now + draw(st.integers(-(10**9), 10**9)))
    headers = sign_request(key, path, request)
    if how == "signed":
        return headers
    header, _ = headers[draw(st.integers(0, len(headers) - 1))]
    if header.endswith("-bin"):
        new: Any = draw(st.binary(max_size=80))
    elif header == TIME_HEADER:
        new = draw(st.one_of(ASCII, _repeat(list("0123456789"), st.integers(1, 5000))))
    else:
        new = draw(ASCII)
    return [(h, new if h == header else v) for h, v in headers]


@st.composite
def admin_metadata(draw: st.DrawFn, world: World) -> list[tuple[str, str]]:
    """The admin token (most often), none, or some other authorization value."""
    how = draw(st.sampled_from(["right"] * 4 + ["none", "raw", "bearer"]))
    if how == "right":
        return world.admin_metadata
    if how == "none":
        return []
    value = draw(ASCII)
    return [("authorization", value if how == "raw" else f"Bearer {value}")]


@st.composite
def metadata_for(
    draw: st.DrawFn, world: World, method: MethodDescriptor, request: Message | None
) -> list[tuple[str, Any]]:
    if method.name in VOLUNTEER_SIGNED and request is not None:
        return draw(volunteer_metadata(world, method, request))
    return draw(admin_metadata(world))


def leases_of(response: pb.LeaseWorkResponse) -> list[pb.Lease]:
    """Every lease a LeaseWork answer grants: the first in `lease`, the others after it."""
    if not response.HasField("lease"):
        assert not response.more_leases, "more_leases without a first lease"
        return []
    return [response.lease, *response.more_leases]


def record(world: World, method: MethodDescriptor, request: Any, outcome: Outcome) -> None:
    """Check what a success returned, and remember new ids for later examples."""
    if outcome.code != Code.OK:
        return
    response = outcome.response
    if method.name == "LeaseWork":
        leases = leases_of(response)
        assert len(leases) <= max(1, request.max_units) <= MAX_UNITS
        assert len({lease.lease_id for lease in leases}) == len(leases)
        for lease in leases:
            assert decode_unit(lease.unit.unit).job_id in world.job_ids
            world.lease_ids.append(lease.lease_id)
    elif method.name == "ListLeases":  # only the signer's own leases, each once
        held = [lease.lease_id for lease in response.leases]
        assert len(set(held)) == len(held)
        assert set(held) <= set(world.lease_ids), held
        for lease in response.leases:
            assert decode_unit(lease.unit.unit).lease_id == lease.lease_id
    elif method.name == "RegisterVolunteer":
        assert response.volunteer_id == fingerprint(request.public_key)
        world.volunteer_ids.append(response.volunteer_id)
    elif method.name == "CreateJob":
        sent = sum(len(message.items) for message in request)
        assert response.items == sent > 0
        assert 0 < response.unique_items <= response.items
        assert 0 < response.units <= response.unique_items
        world.job_ids.append(response.job_id)
    elif method.name == "GetManifest":
        manifest.verify_manifest(
            response.manifest, response.signature, world.running.coordinator.key.fingerprint
        )
    elif method.name == "DownloadFile":
        folder = world.home.datasets / request.job_id
        stored = manifest.shard_path(folder, request.name)  # a shard: under data/
        if not stored.exists():  # the card, or an earlier version's manifest
            stored = folder / request.name
        stored_bytes = stored.read_bytes()
        assert b"".join(chunk.data for chunk in response) == stored_bytes[request.offset :]


# ---------------------------------------------------------------- every RPC, structured


UNARY_IN = [m for m in METHODS if not m.client_streaming]


def test_every_rpc_of_every_service_is_fuzzed() -> None:
    names = {method_id(m) for m in METHODS}
    assert len(names) == 26
    assert {m.containing_service.name for m in METHODS} == set(SERVICES)
    assert [m.name for m in METHODS if m.client_streaming] == ["CreateJob", "AddModel"]


@RPC_FUZZ
@given(data=st.data())
@pytest.mark.parametrize("method", UNARY_IN, ids=method_id)
def test_fuzzed_request_messages(world: World, method: MethodDescriptor, data: Any) -> None:
    mixed, only = known_fields(world, method)
    request = data.draw(messages(method.input_type, mixed, only), label="request")
    if method.name == "RegisterVolunteer" and data.draw(st.booleans(), label="proven key"):
        # A real key with its proof, so the other fields are checked too.
        key = SigningKey.generate()
        request.public_key, request.signature = (
            key.public_key,
            key.sign(CTX_REGISTER, key.public_key),
        )
    metadata = data.draw(metadata_for(world, method, request), label="metadata")
    outcome = world.invoke(method, request, metadata)
    assert_allowed(method, outcome, world.token)
    record(world, method, request, outcome)
    world.assert_serving()


# ---------------------------------------------------------------- every RPC, raw bytes


@st.composite
def mutated(draw: st.DrawFn, blob: bytes, steady: bool = False) -> bytes:
    """The blob as it is, truncated, with a bit flipped, or with bytes spliced in or
    appended. `steady` draws positions within fixed bounds, so that what is drawn does not
    depend on the blob's length when that comes from outside the draws (a lease taken in the
    example)."""

    def position(last: int) -> int:
        if steady:
            return draw(st.integers(0, 2**16 - 1)) % (last + 1)
        return draw(st.integers(0, last))

    how = draw(st.sampled_from(["as-is", "truncate", "flip", "splice", "append"]))
    if how == "truncate":
        return blob[: position(len(blob))]
    if how == "flip" and blob:
        at = position(len(blob) - 1)
        return blob[:at] + bytes([blob[at] ^ (1 << draw(st.integers(0, 7)))]) + blob[at + 1 :]
    if how == "splice":
        at = position(len(blob))
        return blob[:at] + draw(st.binary(min_size=1, max_size=16)) + blob[at:]
    if how == "append":
        return blob + draw(st.binary(min_size=1, max_size=32))
    return blob


@st.composite
def raw_request(draw: st.DrawFn, world: World, method: MethodDescriptor) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    mixed, only = known_fields(world, method)
    message = draw(messages(method.input_type, mixed, only))
    return draw(mutated(bytes(message.SerializeToString())))


def parse(method: MethodDescriptor, blob: bytes) -> Message | None:
    message = GetMessageClass(method.input_type)()
    try:
        message.ParseFromString(blob)
    except DecodeError:
        return None
    return message


@settings(RPC_FUZZ, max_examples=40)
@given(data=st.data())
@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_raw_request_bytes(world: World, method: MethodDescriptor, data: Any) -> None:
    count = data.draw(st.integers(0, 3)) if method.client_streaming else 1
    blobs = [data.draw(raw_request(world, method), label="bytes") for _ in range(count)]
    parsed = [parse(method, blob) for blob in blobs]
    signable = parsed[0] if method.name in VOLUNTEER_SIGNED else None
    metadata = data.draw(metadata_for(world, method, signable), label="metadata")
    request = blobs if method.client_streaming else blobs[0]
    outcome = world.invoke(method, request, metadata, raw=True)
    assert_allowed(method, outcome, world.token)
    if None in parsed:
        event(f"{method.name}: unparseable")
    else:
        record(world, method, parsed if method.client_streaming else parsed[0], outcome)
    world.assert_serving()


# ---------------------------------------------------------------- CreateJob streams


def _pick(values: list[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(values), other)


def _known(values: list[Any]) -> st.SearchStrategy[Any]:
    """One of `values`, a list that grows as the module runs (known ids), drawn by an index
    within fixed bounds: what is drawn then does not depend on how long the list is now."""
    return st.integers(0, 2**16 - 1).map(lambda i: values[i % len(values)])


UINT32 = SCALARS[FieldDescriptor.CPPTYPE_UINT32]
# Each JobSpec field's accepted values, and what fuzzing draws instead.
VALID_SPEC = {
    "name": st.one_of(st.just(""), st.text(max_size=200)),
    "kind": st.sampled_from(sorted(TASK_KINDS)),
    "model": st.just(MODEL),
    "redundancy": st.one_of(st.integers(0, 3), st.just(16)),
    "unit_size": st.one_of(st.integers(0, 4), st.just(8192)),
    "tau": st.one_of(st.just(0.0), st.floats(0.0, 1.0, exclude_min=True)),
    "max_replicas": st.one_of(st.just(0), st.integers(16, 32)),
    "lease_seconds": st.one_of(st.just(0), st.integers(1, 7 * 24 * 3600)),
    "result_dtype": st.sampled_from(["", "float16", "int8"]),
}
FUZZED_SPEC = {
    "name": STRINGS,
    "kind": _pick(["embed-audio", "", "EMBED-TEXT"], STRINGS),
    "model": _pick(["", "no-such-model", MODEL.upper()], STRINGS),
    "redundancy": _pick([17], UINT32),
    "unit_size": _pick([8193], UINT32),
    "tau": _pick([-0.5, 1.5], DOUBLES),
    "max_replicas": _pick([1, 33], UINT32),
    "lease_seconds": _pick([7 * 24 * 3600 + 1], UINT32),
    "result_dtype": _pick(["float32", "float64", "FLOAT16"], STRINGS),
}


@st.composite
def specs(draw: st.DrawFn) -> pb.JobSpec:
    """A valid spec, a valid spec with one field fuzzed, or every field fuzzed."""
    mode = draw(st.sampled_from(["valid", "one-fuzzed", "fuzzed"]))
    fields = {
        name: draw(FUZZED_SPEC[name] if mode == "fuzzed" else s) for name, s in VALID_SPEC.items()
    }
    if mode == "one-fuzzed":
        name = draw(st.sampled_from(sorted(FUZZED_SPEC)))
        fields[name] = draw(FUZZED_SPEC[name])
    return pb.JobSpec(**fields)


FUZZED_ITEMS = st.builds(
    pb.InputItem,
    id=_pick(["a", "b", "", "a" * 1025], STRINGS),
    text=st.one_of(
        st.text(max_size=60),
        STRINGS,
        _repeat(["x", "\u00e9"], st.sampled_from([128 * 1024, 256 * 1024 + 1])),
    ),
    line=_pick([0, 1, 2**64 - 1], SCALARS[FieldDescriptor.CPPTYPE_UINT64]),
)


@st.composite
def items(draw: st.DrawFn, message: int) -> list[pb.InputItem]:
    """Clean items (unique ids, ordinary texts, duplicates among them) or fuzzed ones."""
    if draw(st.sampled_from([True, True, False])):
        texts = draw(st.lists(st.sampled_from(["same text"]) | st.text(max_size=60), max_size=6))
        return [pb.InputItem(id=f"item-{message}-{n}", text=t) for n, t in enumerate(texts)]
    return draw(st.lists(FUZZED_ITEMS, max_size=6))


@st.composite
def job_streams(draw: st.DrawFn) -> list[pb.CreateJobRequest]:
    """Mostly a spec first and items after; sometimes no spec, two specs, or no items."""
    stream = []
    for index in range(draw(st.sampled_from([1, 1, 2, 2, 3, 0, 4]))):
        message = pb.CreateJobRequest(
            items=draw(items(index)), source_name=draw(st.one_of(st.just(""), STRINGS))
        )
        if draw(st.sampled_from([index == 0] * 8 + [True, False])):
            message.spec.CopyFrom(draw(specs()))
        stream.append(message)
    return stream


@settings(RPC_FUZZ, max_examples=150)
@given(stream=job_streams(), token=st.sampled_from(["right", "right", "none", "wrong"]))
def test_create_job_streams(world: World, stream: list[pb.CreateJobRequest], token: str) -> None:
    method = pb.DESCRIPTOR.services_by_name["JobService"].methods_by_name["CreateJob"]
    metadata = {
        "right": world.admin_metadata,
        "none": [],
        "wrong": [("authorization", "Bearer not-the-token")],
    }[token]
    outcome = world.invoke(method, stream, metadata)
    assert_allowed(method, outcome, world.token)
    if token != "right":
        assert outcome.code == Code.UNAUTHENTICATED, outcome
    record(world, method, stream, outcome)
    if outcome.code == Code.OK:
        status = world.call("GetJob", pb.GetJobRequest(job_id=outcome.response.job_id), [])
        assert status.job.state == "running"
        assert status.job.units_total == outcome.response.units
    world.assert_serving()


RELEASE = next(m for m in METHODS if m.name == "ReleaseWork")


def hand_back(world: World, volunteer: RawVolunteer, lease: pb.Lease, reason: str) -> Outcome:
    """A signed ReleaseWork of `lease` by the volunteer holding it."""
    request = pb.ReleaseWorkRequest(
        volunteer_id=volunteer.volunteer_id, lease_id=lease.lease_id, reason=reason
    )
    return world.invoke(RELEASE, request, sign_request(volunteer.key, path_of(RELEASE), request))


def lease_signed(world: World, volunteer: RawVolunteer, units: int) -> list[pb.Lease]:
    """A signed LeaseWork of up to `units` units for `volunteer`, which must be answered OK;
    its leases are recorded in the world."""
    method = next(m for m in METHODS if m.name == "LeaseWork")
    ask = pb.LeaseWorkRequest(volunteer_id=volunteer.volunteer_id, max_units=units)
    offer = world.invoke(method, ask, sign_request(volunteer.key, path_of(method), ask))
    assert offer.code == Code.OK, offer
    record(world, method, ask, offer)
    return leases_of(offer.response)


# ---------------------------------------------------------------- SubmitResult, in depth


def _payloads(rows: int, dims: int, dtype: str) -> st.SearchStrategy[bytes]:
    """Encoded matrices of the right or a wrong shape, zstd of random bytes, garbage, bombs."""

    def matrix(seed: int, shape: tuple[int, int], special: float | None) -> bytes:
        values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        if special is not None and values.size:
            values.flat[seed % values.size] = special
        with np.errstate(over="ignore", invalid="ignore"):
            return codec.encode(values, dtype).payload

    shapes = st.sampled_from([(rows, dims), (rows, dims - 1), (rows + 1, dims), (1, 1)])
    specials = st.one_of(st.none(), st.sampled_from([math.nan, math.inf, -math.inf, 1e6]))
    return st.one_of(
        st.builds(matrix, st.integers(0, 2**32 - 1), shapes, specials),
        st.binary(max_size=200),
        st.binary(max_size=2000).map(zstandard.ZstdCompressor().compress),
        st.integers(1, 64).map(lambda mib: zstandard.ZstdCompressor().compress(bytes(mib << 16))),
    )


def _rows(rows: int, dims: int, dtype: str) -> st.SearchStrategy[bytes]:
    """Encoded matrices of the right shape, of unit-normalised rows (as embeddings are)."""

    def matrix(seed: int) -> bytes:
        values = np.random.default_rng(seed).standard_normal((rows, dims)).astype(np.float32)
        values /= np.linalg.norm(values, axis=1, keepdims=True)
        return codec.encode(values, dtype).payload

    return st.integers(0, 2**32 - 1).map(matrix)


@st.composite
def submissions(
    draw: st.DrawFn,
    world: World,
    own: bool = False,
    holder: RawVolunteer | None = None,
    lease: pb.Lease | None = None,
) -> pb.SubmitResultRequest:
    """Envelopes near the honest one for a held lease (the world's, unless told): each field
    right or fuzzed. With `own`, the envelope decodes and names the lease holder, as each one
    in a SubmitResults call must for the call not to be refused as a whole. With a holder of
    its own (a lease taken in the example), positions in the blob are drawn steadily."""
    steady = holder is not None
    holder = holder or world.volunteer
    lease = lease or world.lease
    unit = decode_unit(lease.unit.unit)
    rows = len(unit.texts)
    # For a holder of its own, now and then the honest result itself (with made-up rows of
    # the right shape): the answers past the checks are drawn too.
    exact = steady and draw(st.sampled_from([True, False, False]))
    if exact:
        payload = draw(_rows(rows, unit.dims, unit.result_dtype))
    else:
        payload = draw(_payloads(rows, unit.dims, unit.result_dtype))

    def right_or(value: Any, other: st.SearchStrategy[Any]) -> Any:
        if exact:
            return value
        return draw(st.one_of(st.just(value), st.just(value), other))

    env = pb.ResultEnvelope(
        unit_id=right_or(unit.unit_id, _pick([f"{unit.job_id}-u000001"], STRINGS)),
        lease_id=right_or(lease.lease_id, st.one_of(_known(world.lease_ids), STRINGS)),
        volunteer_id=holder.volunteer_id
        if own
        else right_or(holder.volunteer_id, st.one_of(_known(world.volunteer_ids), STRINGS)),
        rows=right_or(rows, SCALARS[FieldDescriptor.CPPTYPE_UINT32]),
        columns=[
            pb.ResultColumn(
                name=right_or("embedding", _pick(["language", ""], STRINGS)),
                dtype=right_or(unit.result_dtype, _pick(sorted(codec.DTYPES), STRINGS)),
                width=right_or(unit.dims, SCALARS[FieldDescriptor.CPPTYPE_UINT32]),
            )
        ],
        codec=right_or(CODEC, STRINGS),
        payload_sha256=right_or(hashlib.sha256(payload).digest(), BYTES),
        unit_sha256=right_or(hashlib.sha256(lease.unit.unit).digest(), BYTES),
        model_sha256=right_or(unit.model_sha256, STRINGS),
        device=draw(STRINGS),
        compute_ms=draw(SCALARS[FieldDescriptor.CPPTYPE_UINT32]),
        created_unix_ms=draw(SCALARS[FieldDescriptor.CPPTYPE_INT64]),
    )
    blob = bytes(env.SerializeToString(deterministic=True))
    if exact:
        return pb.SubmitResultRequest(
            envelope=blob, signature=holder.key.sign(CTX_RESULT, blob), payload=payload
        )
    if not own:
        blob = draw(mutated(blob, steady))
    signature = draw(
        st.one_of(
            st.just(holder.key.sign(CTX_RESULT, blob)),
            st.just(holder.key.sign(CTX_RESULT, blob)),
            st.just(world.stranger.sign(CTX_RESULT, blob)),
            BYTES,
        )
    )
    return pb.SubmitResultRequest(envelope=blob, signature=signature, payload=payload)


def invoke_as(world: Any, data: Any, method: Any, request: Any, volunteer: Any) -> Any:
    """Call `method` as `volunteer`, mostly signed (the signatures themselves are fuzzed in
    test_fuzzed_request_messages), and check the outcome is an allowed one."""
    metadata = data.draw(
        volunteer_metadata(world, method, request, signed=10, holder=volunteer),
        label="metadata",
    )
    outcome = world.invoke(method, request, metadata)
    assert_allowed(method, outcome, world.token)
    return outcome


@settings(RPC_FUZZ, max_examples=150)
@given(data=st.data())
def test_submit_result_near_the_honest_envelope(world: World, data: Any) -> None:
    """A result near the honest one, from a fresh volunteer holding a lease of its own (the
    world's volunteer is soon quarantined by the fuzzing, and from then on all its calls are
    refused whatever they carry). A lease it still holds afterwards it hands back."""
    method = pb.DESCRIPTOR.services_by_name["VolunteerService"].methods_by_name["SubmitResult"]
    volunteer = RawVolunteer(world.running.address)
    try:
        world.volunteer_ids.append(volunteer.register())
        leases = lease_signed(world, volunteer, 1)
        if leases:
            near = submissions(world, holder=volunteer, lease=leases[0])
        else:
            event("no work left")  # the world's lease, refused
            near = submissions(world)
        request = data.draw(near, label="request")
        outcome = invoke_as(world, data, method, request, volunteer)
        if outcome.code == Code.OK:
            assert outcome.response.status in SUBMIT_STATUSES, outcome
            event(f"SubmitResult: {outcome.response.status}")
        else:
            event(f"SubmitResult: {outcome.code.name}")
        for lease in leases:
            assert_allowed(RELEASE, hand_back(world, volunteer, lease, "fuzz"), world.token)
    finally:
        volunteer.close()
    world.assert_serving()


# ---------------------------------------------------------------- SubmitResults, in depth


@st.composite
def batches(
    draw: st.DrawFn, world: World, holder: RawVolunteer, leases: list[pb.Lease]
) -> pb.SubmitResultsRequest:
    """1 to 4 results near the honest ones for the holder's leases (sometimes one of them
    twice), mostly for the holder and in envelopes that name it."""
    own = draw(st.sampled_from([True, True, False]))
    near = _known(leases).flatmap(lambda lease: submissions(world, own, holder, lease))
    unique = draw(st.lists(near, min_size=1, max_size=4))
    again = draw(st.lists(st.sampled_from(unique), max_size=4 - len(unique)))
    results = draw(st.permutations([*unique, *again]))
    who = draw(st.sampled_from(["holder"] * 4 + ["known", "any"]))
    volunteer_id = holder.volunteer_id
    if who != "holder":
        volunteer_id = draw(_known(world.volunteer_ids) if who == "known" else STRINGS)
    return pb.SubmitResultsRequest(volunteer_id=volunteer_id, results=results)


def check_batch_answers(request: pb.SubmitResultsRequest, outcome: Outcome) -> None:
    """One answer per result, in order, each an outcome or a refusal with its status name."""
    answers = outcome.response.results
    assert len(answers) == len(request.results), outcome
    taken = []
    for sent, answer in zip(request.results, answers, strict=True):
        assert answer.status in (*SUBMIT_STATUSES, "refused"), answer
        if answer.status == "refused":
            assert answer.code in ALLOWED_NAMES, answer
            assert answer.reason, answer
            event(f"SubmitResults: refused {answer.code}")
        else:
            assert not answer.code, answer
            event(f"SubmitResults: {answer.status}")
            taken.append(decode_envelope(sent.envelope).lease_id)
    # A lease takes one result: a second one for it in the same call is refused.
    assert len(taken) == len(set(taken)), f"two results taken for one lease: {answers}"


@settings(RPC_FUZZ, max_examples=150)
@given(data=st.data())
def test_submit_results_near_the_honest_envelope(world: World, data: Any) -> None:
    """Batches of results near the honest ones, from a fresh volunteer holding 1 to 4 leases
    (the world's volunteer is soon quarantined by the fuzzing before, and from then on all its
    calls are refused as a whole). What it still holds afterwards it hands back."""
    service = pb.DESCRIPTOR.services_by_name["VolunteerService"]
    method = service.methods_by_name["SubmitResults"]
    volunteer = RawVolunteer(world.running.address)
    try:
        world.volunteer_ids.append(volunteer.register())
        count = data.draw(st.integers(1, 4), label="units")
        leases = lease_signed(world, volunteer, count)
        if not leases:
            # Still draw the same way: results for the world's lease, refused one by one.
            event("no work left")
        request = data.draw(batches(world, volunteer, leases or [world.lease]), label="request")
        outcome = invoke_as(world, data, method, request, volunteer)
        if outcome.code == Code.OK:
            check_batch_answers(request, outcome)
        for lease in leases:
            assert_allowed(RELEASE, hand_back(world, volunteer, lease, "fuzz"), world.token)
    finally:
        volunteer.close()
    world.assert_serving()


@settings(RPC_FUZZ, max_examples=50)
@given(max_units=st.one_of(st.integers(0, MAX_UNITS + 1), SCALARS[FieldDescriptor.CPPTYPE_UINT32]))
def test_lease_work_with_fuzzed_max_units(world: World, max_units: int) -> None:
    """Up to max_units leases (0 means 1), all distinct; more than 32 is refused. A fresh
    volunteer asks, and hands back what it got, so later tests still find work."""
    service = pb.DESCRIPTOR.services_by_name["VolunteerService"]
    method = service.methods_by_name["LeaseWork"]
    volunteer = RawVolunteer(world.running.address)
    try:
        world.volunteer_ids.append(volunteer.register())
        request = pb.LeaseWorkRequest(volunteer_id=volunteer.volunteer_id, max_units=max_units)
        metadata = sign_request(volunteer.key, path_of(method), request)
        outcome = world.invoke(method, request, metadata)
        assert_allowed(method, outcome, world.token)
        if max_units > MAX_UNITS:
            assert outcome.code == Code.INVALID_ARGUMENT, outcome
            assert "max_units" in outcome.details, outcome
            return
        assert outcome.code == Code.OK, outcome
        record(world, method, request, outcome)
        leases = leases_of(outcome.response)
        event(f"LeaseWork: {len(leases) if len(leases) < 2 else 'several'} lease(s)")
        units = [decode_unit(lease.unit.unit).unit_id for lease in leases]
        assert len(set(units)) == len(units), f"one unit leased twice to one volunteer: {units}"
        for lease in leases:
            verify(
                world.running.coordinator.key.public_key,
                CTX_WORK_UNIT,
                lease.unit.unit,
                lease.unit.signature,
            )
            assert hand_back(world, volunteer, lease, "fuzz").code == Code.OK
    finally:
        volunteer.close()
    world.assert_serving()


MATRIX_KINDS = ["honest", "noisy", "negated", "random", "zeros", "huge", "tiny", "nan", "inf"]


def _matrix(kind: str, texts: tuple[str, ...], dims: int, seed: int, scale: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    honest = text_rows(texts, dims).astype(np.float32)
    if kind == "honest":
        return honest
    if kind == "noisy":
        return (honest + scale * rng.standard_normal(honest.shape)).astype(np.float32)
    if kind == "negated":
        return -honest
    if kind == "random":
        return rng.standard_normal(honest.shape).astype(np.float32)
    if kind == "zeros":
        return np.zeros_like(honest)
    if kind == "huge":
        return (honest * 60000.0 * scale).astype(np.float32)
    if kind == "tiny":
        return (honest * 1e-7).astype(np.float32)
    out = honest.copy()
    out.flat[seed % out.size] = math.nan if kind == "nan" else math.inf
    return out


@settings(RPC_FUZZ, max_examples=50)
@given(
    kind=st.sampled_from(MATRIX_KINDS),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-4, 1e-2, 0.5, 1.0, 2.0]),
)
def test_submitted_matrices_from_fresh_volunteers(
    world: World, kind: str, seed: int, scale: float
) -> None:
    """Well-signed results with fuzzed values, from new volunteers, until units decide."""
    method = pb.DESCRIPTOR.services_by_name["VolunteerService"].methods_by_name["SubmitResult"]
    volunteer = RawVolunteer(world.running.address)
    try:
        world.volunteer_ids.append(volunteer.register())
        offer = volunteer.lease_response()
        if not offer.HasField("lease"):
            event("no work left")
            return
        lease = offer.lease
        world.lease_ids.append(lease.lease_id)
        unit = decode_unit(lease.unit.unit)
        values = _matrix(kind, unit.texts, unit.dims, seed, scale)
        with np.errstate(over="ignore", invalid="ignore"):
            envelope, signature, payload = volunteer.result(lease, values)
        request = pb.SubmitResultRequest(envelope=envelope, signature=signature, payload=payload)
        metadata = sign_request(volunteer.key, path_of(method), request)
        outcome = world.invoke(method, request, metadata)
        assert_allowed(method, outcome, world.token)
        if outcome.code == Code.OK:
            assert outcome.response.status in ("pending", "accepted", "rejected")
            # int8 encoding clips and casts, so only float rows can still carry NaN or inf.
            assert kind not in ("nan", "inf") or unit.result_dtype == "int8"
        else:
            assert_allowed(RELEASE, hand_back(world, volunteer, lease, "refused"), world.token)
    finally:
        volunteer.close()
    world.assert_serving()


@settings(RPC_FUZZ, max_examples=30)
@given(
    kinds=st.lists(st.sampled_from(MATRIX_KINDS), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-4, 1e-2, 0.5, 1.0, 2.0]),
    twice=st.booleans(),
)
def test_submitted_batches_from_fresh_volunteers(
    world: World, kinds: list[str], seed: int, scale: float, twice: bool
) -> None:
    """Well-formed SubmitResults calls (well-signed results with fuzzed values, the first
    one sometimes sent twice) from new volunteers: never refused as a whole, and each result
    judged on its own."""
    service = pb.DESCRIPTOR.services_by_name["VolunteerService"]
    method = service.methods_by_name["SubmitResults"]
    volunteer = RawVolunteer(world.running.address)
    try:
        world.volunteer_ids.append(volunteer.register())
        leases = lease_signed(world, volunteer, len(kinds))
        if not leases:
            event("no work left")
            return
        results, dtypes = [], []
        for lease, kind in zip(leases, kinds, strict=False):
            unit = decode_unit(lease.unit.unit)
            values = _matrix(kind, unit.texts, unit.dims, seed, scale)
            with np.errstate(over="ignore", invalid="ignore"):
                envelope, signature, payload = volunteer.result(lease, values)
            results.append(
                pb.SubmitResultRequest(envelope=envelope, signature=signature, payload=payload)
            )
            dtypes.append(unit.result_dtype)
        if twice:
            results.append(results[0])
        request = pb.SubmitResultsRequest(volunteer_id=volunteer.volunteer_id, results=results)
        metadata = sign_request(volunteer.key, path_of(method), request)
        outcome = world.invoke(method, request, metadata)
        assert outcome.code == Code.OK, outcome
        check_batch_answers(request, outcome)
        answers = outcome.response.results
        if twice:
            assert answers[-1].status == "refused", "the same result was taken twice"
        for kind, dtype, answer in zip(kinds, dtypes, answers, strict=False):
            # int8 encoding clips and casts, so only float rows can still carry NaN or inf.
            if kind in ("nan", "inf") and dtype != "int8":
                assert answer.status == "refused", answer
        for lease, answer in zip(leases, answers, strict=False):
            if answer.status == "refused":
                assert_allowed(RELEASE, hand_back(world, volunteer, lease, "refused"), world.token)
    finally:
        volunteer.close()
    world.assert_serving()


# ---------------------------------------------------------------- known failures


@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_unparseable_request_bytes_are_invalid_argument(
    world: World, method: MethodDescriptor
) -> None:
    garbage = b"\xff"  # a truncated field tag: no message type parses it
    assert parse(method, garbage) is None
    request = [garbage] if method.client_streaming else garbage
    outcome = world.invoke(method, request, world.admin_metadata, raw=True)
    assert outcome.code == Code.INVALID_ARGUMENT, outcome


@pytest.mark.parametrize("offset", [2**63, 2**64 - 1])
def test_download_offset_past_any_file_is_not_internal(world: World, offset: int) -> None:
    method = pb.DESCRIPTOR.services_by_name["DatasetService"].methods_by_name["DownloadFile"]
    request = pb.DownloadFileRequest(job_id=world.done_job, name=world.shards[0], offset=offset)
    outcome = world.invoke(method, request, [])
    assert outcome.code in ALLOWED or (outcome.code == Code.OK and not outcome.response), outcome
    world.assert_serving()


def test_overlong_request_timestamp_is_unauthenticated(world: World) -> None:
    method = pb.DESCRIPTOR.services_by_name["VolunteerService"].methods_by_name["LeaseWork"]
    request = pb.LeaseWorkRequest(volunteer_id=world.volunteer.volunteer_id)
    signed = sign_request(world.volunteer.key, path_of(method), request)
    metadata = [(h, "1" * 4301 if h == TIME_HEADER else v) for h, v in signed]
    outcome = world.invoke(method, request, metadata)
    assert outcome.code == Code.UNAUTHENTICATED, outcome


ECHOING = ["GetJob", "GetManifest", "DownloadFile", "PauseJob", "UnbanVolunteer", "ReleaseWork"]


@pytest.mark.parametrize("name", ECHOING)
def test_a_long_unknown_id_is_refused_with_its_own_status(world: World, name: str) -> None:
    method = next(m for m in METHODS if m.name == name)
    long_id = "x" * 20_000
    cls = GetMessageClass(method.input_type)
    # A volunteer of its own: the fuzzing before may have quarantined the world's one.
    volunteer = RawVolunteer(world.running.address)
    volunteer.register()
    world.volunteer_ids.append(volunteer.volunteer_id)
    request = {
        "DownloadFile": lambda: cls(job_id=world.done_job, name=long_id),
        "UnbanVolunteer": lambda: cls(volunteer_id=long_id),
        "ReleaseWork": lambda: cls(volunteer_id=volunteer.volunteer_id, lease_id=long_id),
    }.get(name, lambda: cls(job_id=long_id))()
    metadata: list[tuple[str, Any]] = world.admin_metadata
    if name == "ReleaseWork":
        metadata = sign_request(volunteer.key, path_of(method), request)
    outcome = world.invoke(method, request, metadata)
    assert outcome.code in (Code.NOT_FOUND, Code.INVALID_ARGUMENT), outcome
    assert len(outcome.details) < 8192


def test_rows_that_are_not_unit_vectors_are_never_valid(
    coordinator: RunningCoordinator, coordinator_home: CoordinatorHome
) -> None:
    admin = RawAdmin(coordinator.address, coordinator_home.load_token())
    scaler, honest = RawVolunteer(coordinator.address), RawVolunteer(coordinator.address)
    try:
        admin.create_job(job_stream(DONE_TEXTS, redundancy=2))
        for volunteer in (scaler, honest):
            volunteer.register()
        leases = [scaler.lease(), honest.lease()]
        unit = decode_unit(leases[0].unit.unit)
        rows = text_rows(unit.texts, unit.dims)
        try:
            scaler.submit(*scaler.result(leases[0], matrix=rows * 100.0))
        except grpc.RpcError as exc:
            error: Any = exc
            assert error.code() == Code.INVALID_ARGUMENT, error.details()
        honest.submit(*honest.result(leases[1]))
    finally:
        for client in (admin, scaler, honest):
            client.close()
    db = coordinator_home.root / "coordinator.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        valid = conn.execute(
            "SELECT r.payload, u.rows, j.dims, j.result_dtype FROM results r "
            "JOIN units u ON u.unit_id = r.unit_id JOIN jobs j ON j.job_id = u.job_id "
            "WHERE r.state = 'valid'"
        ).fetchall()
    finally:
        conn.close()
    for payload, unit_rows, dims, dtype in valid:
        norms = np.linalg.norm(codec.decode(payload, dtype, unit_rows, dims), axis=1)
        assert np.allclose(norms, 1.0, atol=0.01), f"a valid result has row norms {norms}"
