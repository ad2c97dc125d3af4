"""A refused request costs what its bytes cost while they are read, and nothing after.

Real `allmende coordinator serve` processes (SQLite: the asyncio server; PostgreSQL: the
threaded one) receive a hundred hostile requests of up to 15 MiB each, refused for their
size, for holding millions of empty entries, for lacking a signature or for being
malformed, while an honest volunteer keeps leasing and submitting. The coordinator's
resident memory, read from /proc, must not keep them: before the fix, three such calls
left over a gibibyte behind (reference cycles held the parsed requests).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from allmende.protocol.limits import MAX_SUBMIT_BYTES, MAX_SUBMIT_RESULTS
from allmende.v1 import allmende_pb2 as pb
from tests.integration.fleet import ServeProcess, init_coordinator
from tests.integration.rawclient import RawAdmin, RawVolunteer, channel, job_stream

Code = grpc.StatusCode
VOLUNTEERS = "/allmende.v1.VolunteerService/"
MIB = 1024 * 1024
REFUSED = 100
# Resident memory the coordinator may keep after the refused requests.
GROWTH_LIMIT = 64 * MIB


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


Metadata = list[tuple[str, str | bytes]]


def hostile_requests(signer: RawVolunteer) -> list[tuple[str, bytes, Code, Metadata]]:
    """(method, raw bytes, expected status, metadata): each refused, most of them ~15 MiB."""
    rng = np.random.default_rng(3)
    empty_entries = b"\x12\x00" * (15 * MIB // 2)  # 7.8 million empty `results` entries
    under_cap = b"\x12\x00" * (MAX_SUBMIT_BYTES // 2 - 16)  # within the size cap, too many
    # Fits the size and count limits, so it is parsed, then refused for its missing signature.
    payload = rng.bytes(MAX_SUBMIT_BYTES // MAX_SUBMIT_RESULTS - 4096)
    parsed = pb.SubmitResultsRequest(
        volunteer_id="x" * 64,
        results=[pb.SubmitResultRequest(payload=payload)] * MAX_SUBMIT_RESULTS,
    ).SerializeToString()
    # Signed by a registered volunteer, parsed, then refused by the servicer as a whole.
    signed_request = pb.SubmitResultsRequest(volunteer_id=signer.volunteer_id)
    signed = signed_request.SerializeToString(deterministic=True)
    big_result = pb.SubmitResultRequest(payload=rng.bytes(15 * MIB)).SerializeToString()
    big_lease = pb.LeaseWorkRequest(volunteer_id="y" * (15 * MIB)).SerializeToString()
    return [
        ("SubmitResults", empty_entries, Code.RESOURCE_EXHAUSTED, []),
        ("SubmitResult", big_result, Code.RESOURCE_EXHAUSTED, []),
        ("LeaseWork", big_lease, Code.RESOURCE_EXHAUSTED, []),
        ("SubmitResults", under_cap, Code.INVALID_ARGUMENT, []),
        ("SubmitResults", parsed, Code.UNAUTHENTICATED, []),
        ("SubmitResults", b"\xff" * (MAX_SUBMIT_BYTES - 1), Code.INVALID_ARGUMENT, []),
        (
            "SubmitResults",
            signed,
            Code.INVALID_ARGUMENT,
            signer.signed("SubmitResults", signed_request),
        ),
    ]


class HonestVolunteer(threading.Thread):
    """Leases and submits honest results until stopped; every call must succeed."""

    def __init__(self, address: str) -> None:
        super().__init__(name="honest", daemon=True)
        self.volunteer = RawVolunteer(address)
        self.volunteer.register()
        self.stop = threading.Event()
        self.calls = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                response = self.volunteer.lease_response()
                self.calls += 1
                if not response.HasField("lease"):
                    self.stop.wait(0.05)
                    continue
                answer = self.volunteer.submit(*self.volunteer.result(response.lease))
                assert answer.status in ("pending", "accepted"), answer
                self.calls += 1
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)


def refuse_many(coordinator: ServeProcess) -> tuple[int, int, int]:
    """Send the hostile requests; returns (RSS growth, honest calls meanwhile, refused)."""
    assert coordinator.process is not None
    pid = coordinator.process.pid
    token = (coordinator.data / "admin.token").read_text().strip()
    admin = RawAdmin(coordinator.address, token)
    admin.create_job(job_stream([f"honest sentence {i}" for i in range(4000)], unit_size=4))
    signer = RawVolunteer(coordinator.address)
    signer.register()
    requests = hostile_requests(signer)
    hostile = channel(coordinator.address)
    calls = {m: hostile.unary_unary(VOLUNTEERS + m) for m, *_ in requests}

    def send(number: int) -> None:
        method, body, code, metadata = requests[number % len(requests)]
        if metadata:  # a fresh signature each time: a replay would be refused for that
            metadata = signer.signed(method, pb.SubmitResultsRequest.FromString(body))
        with pytest.raises(grpc.RpcError) as info:
            calls[method](body, timeout=60, metadata=metadata)
        error: grpc.RpcError = info.value
        assert error.code() == code, (method, error.code(), error.details())  # type: ignore[attr-defined]

    honest = HonestVolunteer(coordinator.address)
    try:
        before = rss_bytes(pid)
        honest.start()
        for number in range(REFUSED):
            send(number)
        honest.stop.set()
        honest.join(timeout=60)
        after = rss_bytes(pid)
    finally:
        honest.stop.set()
        hostile.close()
        signer.close()
        admin.close()
        honest.volunteer.close()
    assert not honest.errors, honest.errors
    return after - before, honest.calls, REFUSED


@pytest.fixture
def sqlite_coordinator(tmp_path: Path) -> Iterator[ServeProcess]:
    data = tmp_path / "coordinator"
    init_coordinator(data)
    process = ServeProcess(data).start()
    yield process
    process.stop()


@pytest.fixture
def postgres_coordinator(tmp_path: Path, postgres_url: str) -> Iterator[ServeProcess]:
    data = tmp_path / "coordinator"
    init_coordinator(data, postgres_url)
    process = ServeProcess(data, postgres_url).start()
    yield process
    process.stop()


def test_refused_requests_leave_no_memory_behind_on_sqlite(
    sqlite_coordinator: ServeProcess,
) -> None:
    growth, honest_calls, _ = refuse_many(sqlite_coordinator)
    assert growth < GROWTH_LIMIT, f"RSS grew by {growth / MIB:.0f} MiB after {REFUSED} refusals"
    assert honest_calls > 0


@pytest.mark.slow
def test_refused_requests_leave_no_memory_behind_on_postgres(
    postgres_coordinator: ServeProcess,
) -> None:
    growth, honest_calls, _ = refuse_many(postgres_coordinator)
    assert growth < GROWTH_LIMIT, f"RSS grew by {growth / MIB:.0f} MiB after {REFUSED} refusals"
    assert honest_calls > 0
