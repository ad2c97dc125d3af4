"""Replay protection lives in the store: a signed request replayed after the coordinator
restarted on the same data folder, within the clock window, is refused; on PostgreSQL two
coordinators on one database refuse each other's replays.

The coordinators are real `allmende coordinator serve` processes (tests/integration/fleet.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from allmende.v1 import allmende_pb2 as pb
from tests.integration.fleet import ServeProcess, init_coordinator
from tests.integration.rawclient import RawVolunteer, expect_error

Code = grpc.StatusCode
Signed = tuple[pb.LeaseWorkRequest, list[tuple[str, str | bytes]]]


def signed_lease(volunteer: RawVolunteer) -> Signed:
    request = pb.LeaseWorkRequest(volunteer_id=volunteer.volunteer_id)
    return request, volunteer.signed("LeaseWork", request)


def send(address: str, call: Signed) -> pb.LeaseWorkResponse:
    volunteer = RawVolunteer(address)
    try:
        response: pb.LeaseWorkResponse = volunteer.stub.LeaseWork(
            call[0], timeout=20, metadata=call[1]
        )
        return response
    finally:
        volunteer.close()


def refused_as_replay(address: str, call: Signed) -> None:
    expect_error(lambda: send(address, call), Code.UNAUTHENTICATED, "replayed")


@pytest.fixture
def sqlite_coordinator(tmp_path: Path) -> Iterator[ServeProcess]:
    data = tmp_path / "coordinator"
    init_coordinator(data)
    process = ServeProcess(data).start()
    yield process
    process.stop()


def test_a_request_replayed_after_a_restart_is_refused(sqlite_coordinator: ServeProcess) -> None:
    volunteer = RawVolunteer(sqlite_coordinator.address)
    try:
        volunteer.register()
        first, second = signed_lease(volunteer), signed_lease(volunteer)
    finally:
        volunteer.close()
    send(sqlite_coordinator.address, first)  # answered: no work yet, but accepted
    sqlite_coordinator.stop()
    sqlite_coordinator.start()  # the same data folder and database, nothing in memory
    refused_as_replay(sqlite_coordinator.address, first)
    send(sqlite_coordinator.address, second)  # signed before the restart, never sent: fine
    refused_as_replay(sqlite_coordinator.address, second)


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[list[ServeProcess]]:
    data = tmp_path / "coordinator"
    init_coordinator(data, postgres_url)
    started = [ServeProcess(data, postgres_url).start() for _ in range(2)]
    yield started
    for replica in started:
        replica.stop()


def test_replicas_on_one_database_refuse_each_others_replays(
    replicas: list[ServeProcess],
) -> None:
    one, other = replicas
    volunteer = RawVolunteer(one.address)
    try:
        volunteer.register()
        calls = [signed_lease(volunteer) for _ in range(2)]
    finally:
        volunteer.close()
    send(one.address, calls[0])
    refused_as_replay(other.address, calls[0])
    send(other.address, calls[1])
    refused_as_replay(one.address, calls[1])
    refused_as_replay(other.address, calls[1])
