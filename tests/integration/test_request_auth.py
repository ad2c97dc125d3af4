"""Volunteer calls are signed (method, body hash, time, nonce) and checked by the server
interceptor: unsigned, stale, replayed, re-targeted or tampered calls are refused."""

from __future__ import annotations

import time

import grpc
import pytest

from allmende.client.connection import CoordinatorClient
from allmende.protocol.requests import NONCE_HEADER, TIME_HEADER, sign_request
from allmende.protocol.signing import SigningKey
from allmende.v1 import allmende_pb2 as pb
from allmende.v1 import allmende_pb2_grpc as rpc
from tests.conftest import job_requests
from tests.integration.volunteers import RawVolunteer

LEASE = "/allmende.v1.VolunteerService/LeaseWork"


@pytest.fixture
def member(admin: CoordinatorClient) -> RawVolunteer:
    admin.create_job(job_requests([f"text {i}" for i in range(10)], redundancy=2))
    volunteer = RawVolunteer(admin)
    volunteer.register()
    return volunteer


@pytest.fixture
def stub(admin: CoordinatorClient) -> rpc.VolunteerServiceStub:
    return rpc.VolunteerServiceStub(admin.channel)


def refused(call: object, code: grpc.StatusCode, needle: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    assert info.value.code() == code, info.value.details()
    assert needle in info.value.details(), info.value.details()


def test_a_signed_lease_works(member: RawVolunteer) -> None:
    assert member.lease() is not None


def test_an_unsigned_call_is_refused(member: RawVolunteer, stub: rpc.VolunteerServiceStub) -> None:
    request = pb.LeaseWorkRequest(volunteer_id=member.volunteer_id)
    refused(lambda: stub.LeaseWork(request), grpc.StatusCode.UNAUTHENTICATED, "metadata")


def test_a_stale_timestamp_is_refused(member: RawVolunteer, stub: rpc.VolunteerServiceStub) -> None:
    request = pb.LeaseWorkRequest(volunteer_id=member.volunteer_id)
    old = int(time.time() * 1000) - 10 * 60 * 1000
    metadata = sign_request(member.key, LEASE, request, now_ms=old)
    refused(
        lambda: stub.LeaseWork(request, metadata=metadata), grpc.StatusCode.UNAUTHENTICATED, "stale"
    )


def test_a_replayed_call_is_refused(member: RawVolunteer, stub: rpc.VolunteerServiceStub) -> None:
    request = pb.LeaseWorkRequest(volunteer_id=member.volunteer_id)
    metadata = sign_request(member.key, LEASE, request)
    assert stub.LeaseWork(request, metadata=metadata).HasField("lease")
    refused(
        lambda: stub.LeaseWork(request, metadata=metadata),
        grpc.StatusCode.UNAUTHENTICATED,
        "replayed",
    )


def test_a_signature_for_another_method_or_body_is_refused(
    member: RawVolunteer, stub: rpc.VolunteerServiceStub
) -> None:
    request = pb.LeaseWorkRequest(volunteer_id=member.volunteer_id)
    for_release = sign_request(member.key, "/allmende.v1.VolunteerService/ReleaseWork", request)
    refused(
        lambda: stub.LeaseWork(request, metadata=for_release),
        grpc.StatusCode.UNAUTHENTICATED,
        "does not verify",
    )
    other_body = pb.LeaseWorkRequest(volunteer_id=member.volunteer_id + "x")
    signed_other = sign_request(member.key, LEASE, other_body)
    refused(
        lambda: stub.LeaseWork(request, metadata=signed_other),
        grpc.StatusCode.UNAUTHENTICATED,
        "does not verify",
    )


def test_a_volunteer_cannot_act_for_another(
    admin: CoordinatorClient, member: RawVolunteer, stub: rpc.VolunteerServiceStub
) -> None:
    other = RawVolunteer(admin)
    other.register()
    request = pb.LeaseWorkRequest(volunteer_id=other.volunteer_id)
    metadata = sign_request(member.key, LEASE, request)
    refused(
        lambda: stub.LeaseWork(request, metadata=metadata),
        grpc.StatusCode.PERMISSION_DENIED,
        "acts for",
    )


def test_an_unknown_key_and_a_malformed_header_are_refused(
    member: RawVolunteer, stub: rpc.VolunteerServiceStub
) -> None:
    stranger = SigningKey.generate()
    request = pb.LeaseWorkRequest(volunteer_id=stranger.fingerprint)
    refused(
        lambda: stub.LeaseWork(request, metadata=sign_request(stranger, LEASE, request)),
        grpc.StatusCode.UNAUTHENTICATED,
        "register first",
    )
    request = pb.LeaseWorkRequest(volunteer_id=member.volunteer_id)
    metadata = [
        (k, "not-a-number") if k == TIME_HEADER else (k, v)
        for k, v in sign_request(member.key, LEASE, request)
    ]
    refused(
        lambda: stub.LeaseWork(request, metadata=metadata),
        grpc.StatusCode.UNAUTHENTICATED,
        TIME_HEADER,
    )
    metadata = [
        (k, "zz") if k == NONCE_HEADER else (k, v)
        for k, v in sign_request(member.key, LEASE, request)
    ]
    refused(
        lambda: stub.LeaseWork(request, metadata=metadata),
        grpc.StatusCode.UNAUTHENTICATED,
        NONCE_HEADER,
    )


def test_a_banned_key_is_refused_even_with_a_good_signature(
    admin: CoordinatorClient, member: RawVolunteer
) -> None:
    admin.ban_volunteer(member.volunteer_id, "gold misses")
    with pytest.raises(Exception) as info:
        member.lease()
    assert "banned" in str(info.value) and "gold misses" in str(info.value)
