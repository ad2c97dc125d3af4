"""A coordinator's rate limit (RESOURCE_EXHAUSTED with "retry in") is transient to the
volunteer client: the engine's link waits and tries again instead of giving up, while other
RESOURCE_EXHAUSTED answers stay permanent. A real coordinator in-process on port 0 that
counts 127.0.0.1 as an address block."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from allmende.client.connection import CoordinatorClient, RemoteError
from allmende.client.engine import events as ev
from allmende.client.engine.link import CoordinatorLink
from allmende.coordinator.app import RunningCoordinator, serve
from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol.signing import CTX_REGISTER, SigningKey
from allmende.v1 import allmende_pb2 as pb
from tests.engine.test_controls import make_config

# One registration at once, then one every half second, from 127.0.0.1.
POLICY = TrustPolicy(loopback_exempt=False, registration_burst=1, registrations_per_minute=120)


@pytest.fixture
def coordinator(coordinator_home: CoordinatorHome) -> Iterator[RunningCoordinator]:
    with serve(coordinator_home.root, "127.0.0.1:0", drain_s=0.2, policy=POLICY) as running:
        yield running


def registration(key: SigningKey) -> pb.RegisterVolunteerRequest:
    return pb.RegisterVolunteerRequest(
        public_key=key.public_key,
        display_name="v",
        client_version="test",
        hardware="cpu",
        signature=key.sign(CTX_REGISTER, key.public_key),
    )


def test_a_rate_limited_call_is_retried_until_it_passes(
    coordinator: RunningCoordinator, tmp_path: Path
) -> None:
    config = make_config(coordinator, tmp_path / "v")
    events: list[ev.Event] = []
    with CoordinatorClient(coordinator.address) as client:
        assert client.register(registration(SigningKey.generate()))
        second = registration(SigningKey.generate())
        with pytest.raises(RemoteError) as info:
            client.register(second)
        assert info.value.code == "RESOURCE_EXHAUSTED" and info.value.transient
        assert "retry in" in info.value.details
        link = CoordinatorLink(client, lambda: config, threading.Event(), events.append)
        volunteer_id = link.retrying(lambda: client.register(second))
    assert volunteer_id
    assert any(isinstance(e, ev.Retrying) for e in events)


def test_other_resource_exhausted_answers_stay_permanent(coordinator: RunningCoordinator) -> None:
    """A message over the coordinator's size cap is RESOURCE_EXHAUSTED too, and no retry
    would help."""
    key = SigningKey.generate()
    with CoordinatorClient(coordinator.address) as client:
        request = registration(key)
        request.hardware = "x" * (20 * 1024 * 1024)
        with pytest.raises(RemoteError) as info:
            client.register(request)
    assert info.value.code == "RESOURCE_EXHAUSTED"
    assert not info.value.transient
