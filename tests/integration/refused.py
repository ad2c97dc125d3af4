"""Hostile requests that a coordinator must refuse, and what they leave behind: the shared
part of tests/integration/test_refused_memory.py and bench/refused.py.

`refuse_many` sends a hundred requests of up to 15 MiB each to a coordinator process,
refused for their size, for holding millions of empty entries, for lacking a signature or
for being malformed, while an honest volunteer keeps leasing and submitting, and reports
how much the coordinator's resident memory (read from /proc) grew.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from allmende.protocol.limits import MAX_SUBMIT_BYTES, MAX_SUBMIT_RESULTS
from allmende.v1 import allmende_pb2 as pb
from tests.integration.fleet import ServeProcess
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
    """Leases and submits honest results until stopped, timing each call; every call must
    succeed."""

    def __init__(self, address: str) -> None:
        super().__init__(name="honest", daemon=True)
        self.volunteer = RawVolunteer(address)
        self.volunteer.register()
        self.stop = threading.Event()
        self.seconds: list[float] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                response = self.volunteer.lease_response()
                self.seconds.append(time.perf_counter() - started)
                if not response.HasField("lease"):
                    self.stop.wait(0.05)
                    continue
                result = self.volunteer.result(response.lease)
                started = time.perf_counter()
                answer = self.volunteer.submit(*result)
                self.seconds.append(time.perf_counter() - started)
                assert answer.status in ("pending", "accepted"), answer
        except BaseException as exc:  # reported by the caller
            self.errors.append(exc)


@dataclass
class Report:
    refused: int
    rss_before: int
    rss_after: int
    seconds: float
    honest_seconds: list[float] = field(default_factory=list)  # each honest call's time

    @property
    def growth(self) -> int:
        return self.rss_after - self.rss_before


def refuse_many(coordinator: ServeProcess, count: int = REFUSED) -> Report:
    """Send `count` hostile requests to a fresh coordinator process, one after the other,
    while an honest volunteer works; its resident memory is read before and after."""
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
        error: grpc.Call = info.value  # type: ignore[assignment]
        assert error.code() == code, (method, error.code(), error.details())

    honest = HonestVolunteer(coordinator.address)
    try:
        before = rss_bytes(pid)
        started = time.perf_counter()
        honest.start()
        for number in range(count):
            send(number)
        seconds = time.perf_counter() - started
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
    return Report(count, before, after, seconds, honest.seconds)
