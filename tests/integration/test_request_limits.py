"""Per-method request limits, checked on the raw bytes before a request is parsed.

A volunteer's small calls (LeaseWork, ReleaseWork, ...) are refused past 64 KiB, a result
past 10 MiB, and SubmitResults with more entries than it may hold, each with a status
that names the limit; an honest call of each kind still passes.
"""

from __future__ import annotations

import grpc

from allmende.coordinator.app import RunningCoordinator
from allmende.protocol.limits import (
    MAX_LIST_LEASES_REQUEST_BYTES,
    MAX_REQUEST_BYTES,
    MAX_SMALL_REQUEST_BYTES,
    MAX_SUBMIT_BYTES,
    MAX_SUBMIT_RESULTS,
)
from allmende.v1 import allmende_pb2 as pb
from tests.integration.rawclient import RawVolunteer, channel, expect_error

Code = grpc.StatusCode
VOLUNTEERS = "/allmende.v1.VolunteerService/"


def raw_call(coordinator: RunningCoordinator, method: str, body: bytes) -> None:
    with channel(coordinator.address) as open_channel:
        open_channel.unary_unary(VOLUNTEERS + method)(body, timeout=30)


def test_a_small_call_over_its_limit_is_refused_naming_the_limit(
    coordinator: RunningCoordinator,
) -> None:
    body = pb.LeaseWorkRequest(volunteer_id="x" * MAX_SMALL_REQUEST_BYTES).SerializeToString()
    expect_error(lambda: raw_call(coordinator, "LeaseWork", body), Code.RESOURCE_EXHAUSTED,
                 f"at most {MAX_SMALL_REQUEST_BYTES} bytes for LeaseWork", str(len(body)))


def test_a_list_leases_call_has_a_limit_of_its_own(coordinator: RunningCoordinator) -> None:
    request = pb.ListLeasesRequest(volunteer_id="x" * MAX_LIST_LEASES_REQUEST_BYTES)
    body = request.SerializeToString()
    assert len(body) < MAX_SMALL_REQUEST_BYTES  # what any other small call may carry
    expect_error(lambda: raw_call(coordinator, "ListLeases", body), Code.RESOURCE_EXHAUSTED,
                 f"at most {MAX_LIST_LEASES_REQUEST_BYTES} bytes for ListLeases", str(len(body)))


def test_a_result_over_the_result_limit_is_refused_by_grpc_itself(
    coordinator: RunningCoordinator,
) -> None:
    assert MAX_REQUEST_BYTES == MAX_SUBMIT_BYTES  # nothing larger is read at all
    body = pb.SubmitResultRequest(payload=bytes(MAX_SUBMIT_BYTES)).SerializeToString()
    expect_error(lambda: raw_call(coordinator, "SubmitResult", body), Code.RESOURCE_EXHAUSTED,
                 "larger than max")


def test_millions_of_empty_results_are_refused_before_parsing(
    coordinator: RunningCoordinator,
) -> None:
    body = b"\x12\x00" * 3_000_000
    expect_error(lambda: raw_call(coordinator, "SubmitResults", body), Code.INVALID_ARGUMENT,
                 "results", f"1 to {MAX_SUBMIT_RESULTS} results", "top-level fields")


def test_honest_calls_within_the_limits_still_pass(coordinator: RunningCoordinator) -> None:
    volunteer = RawVolunteer(coordinator.address)
    try:
        volunteer.register()
        # No work: an empty answer, not a refusal.
        assert not volunteer.lease_response().HasField("lease")
        # Past the limits, the domain reads it: an empty envelope is its complaint.
        request = pb.SubmitResultsRequest(volunteer_id=volunteer.volunteer_id,
                                          results=[pb.SubmitResultRequest()])
        metadata = volunteer.signed("SubmitResults", request)
        expect_error(lambda: volunteer.stub.SubmitResults(request, timeout=30,
                                                          metadata=metadata),
                     Code.INVALID_ARGUMENT, "results[0].envelope")
    finally:
        volunteer.close()
