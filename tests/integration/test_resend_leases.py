"""BOINC's "resend lost results": a volunteer that lost its state gets back the leases it
holds (ListLeases), as the same signed units, and finishes them before leasing new work.

Real coordinators in-process on port 0 on SQLite, real volunteer engines, and a raw volunteer
that leases by hand and then "loses" everything but its key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from sqlalchemy import select

from allmende.client.connection import CoordinatorClient, RemoteError
from allmende.client.engine import EngineConfig
from allmende.client.engine import events as ev
from allmende.client.engine.identity import KEY_NAME
from allmende.client.engine.link import CoordinatorLink
from allmende.client.engine.recover import recover_leases
from allmende.client.engine.spool import Spool
from allmende.coordinator.app import RunningCoordinator, serve
from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.store import schema as t
from allmende.coordinator.transport import bridge, server
from allmende.protocol.signing import fingerprint
from allmende.protocol.wire import decode_unit, open_unit
from allmende.v1 import allmende_pb2 as pb
from tests.conftest import job_requests
from tests.engine.helpers import Running, SlowComputer, start
from tests.integration.fleet import wait_for_state
from tests.integration.trusthelp import launch, sentences
from tests.integration.volunteers import RawVolunteer, text_vector

TEXTS = [f"sentence {i} about lost and found leases" for i in range(16)]


def _leases(volunteer: RawVolunteer, count: int) -> list[pb.Lease]:
    response = volunteer.client.lease(volunteer.volunteer_id, count)
    leases = [response.lease, *response.more_leases] if response.HasField("lease") else []
    assert len(leases) == count, response
    return leases


def _ids(leases: list[pb.Lease]) -> set[str]:
    return {lease.lease_id for lease in leases}


def _raw(running: RunningCoordinator) -> RawVolunteer:
    volunteer = RawVolunteer(CoordinatorClient(running.address))
    volunteer.register()
    return volunteer


def _finished(running: Running, timeout_s: float = 60) -> int:
    """The engine's exit code once it ran out of work (exit_when_idle); one still running
    then (waiting for leases to expire, say) is stopped and fails the test."""
    running.thread.join(timeout_s)
    if running.thread.is_alive():
        running.engine.quit()
        running.finish()
        raise AssertionError(f"the engine was still working after {timeout_s} s")
    return running.finish().exit_code


def _lease_states(running: RunningCoordinator, volunteer_id: str) -> dict[str, str]:
    le = t.leases
    with running.coordinator.store.engine.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(
            select(le.c.lease_id, le.c.state).where(le.c.volunteer_id == volunteer_id)
        ).all()
    return {row.lease_id: row.state for row in rows}


def test_a_volunteer_that_lost_its_home_gets_the_same_units_back_and_finishes_the_job(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    # One replica per unit: every unit is held by this volunteer, so without ListLeases the
    # job could only finish once its leases expired (600 s by default).
    job_id = admin.create_job(job_requests(TEXTS, redundancy=1, unit_size=4)).job_id
    raw = _raw(coordinator)
    given = _leases(raw, 3)

    # The same key, in a home with nothing else: no spool, no verdicts, no record of leases.
    home = tmp_path / "wiped-home"
    home.mkdir()
    raw.key.save(home / KEY_NAME)
    with CoordinatorClient(coordinator.address, signer=raw.key) as again:
        listed = again.held_leases(raw.volunteer_id)
    # Oldest first; leases of one call share their time, so their order is the store's.
    listed.sort(key=lambda lease: [x.lease_id for x in given].index(lease.lease_id))
    assert [lease.lease_id for lease in listed] == [lease.lease_id for lease in given]
    public_key = coordinator.coordinator.key.public_key
    for old, new in zip(given, listed, strict=True):
        assert new.unit.unit == old.unit.unit  # the same composition, the same bytes
        assert new.unit.signature == old.unit.signature
        assert new.deadline_unix_ms == old.deadline_unix_ms
        unit = open_unit(new.unit.unit, new.unit.signature, public_key)  # verifies
        assert unit.lease_id == old.lease_id

    computer = SlowComputer(delay_s=0.0)
    config = EngineConfig(
        coordinator=coordinator.address,
        fingerprint=coordinator.coordinator.key.fingerprint,
        home=home,
        device="cpu",
        exit_when_idle=True,
        give_up_after_s=30,
    )
    running = start(config, computer)
    assert _finished(running) == 0
    assert wait_for_state([coordinator], job_id, ("complete", "failed"), 30) == "complete"
    # Computed under the leases it was given, first; no new lease was needed for them.
    states = _lease_states(coordinator, raw.volunteer_id)
    assert {lease.lease_id: states[lease.lease_id] for lease in given} == {
        lease.lease_id: "submitted" for lease in given
    }
    assert sorted(computer.units[:3]) == sorted(decode_unit(x.unit.unit).unit_id for x in given)
    assert len(states) == len(TEXTS) // 4  # the one unit left was leased anew
    submitted = [e for e in running.of(ev.ResultSubmitted) if isinstance(e, ev.ResultSubmitted)]
    assert len(submitted) == len(TEXTS) // 4
    assert all(e.status == "accepted" for e in submitted), submitted


def test_expired_released_and_submitted_leases_are_not_returned(
    coordinator: RunningCoordinator, admin: CoordinatorClient
) -> None:
    admin.create_job(job_requests(TEXTS, redundancy=1, unit_size=4, lease_seconds=1))
    raw = _raw(coordinator)
    first = _leases(raw, 1)[0]
    while time.time() * 1000 <= first.deadline_unix_ms + 50:  # let it expire
        time.sleep(0.05)
    assert raw.client.held_leases(raw.volunteer_id) == []
    admin.create_job(job_requests(TEXTS, redundancy=1, unit_size=4, lease_seconds=600))
    kept, released, submitted = _leases(raw, 3)
    raw.client.release(raw.volunteer_id, released.lease_id, "not wanted")
    unit = decode_unit(submitted.unit.unit)
    matrix = np.stack([text_vector(text, unit.dims) for text in unit.texts])
    assert raw.submit(submitted, unit, matrix).status in ("accepted", "pending")
    assert [lease.lease_id for lease in raw.client.held_leases(raw.volunteer_id)] == [kept.lease_id]


def test_a_volunteer_never_gets_another_volunteers_leases(
    coordinator: RunningCoordinator, admin: CoordinatorClient
) -> None:
    admin.create_job(job_requests(TEXTS, redundancy=2, unit_size=4))
    alice, bob = _raw(coordinator), _raw(coordinator)
    alices, bobs = _leases(alice, 2), _leases(bob, 2)
    assert _ids(alice.client.held_leases(alice.volunteer_id)) == _ids(alices)
    assert _ids(bob.client.held_leases(bob.volunteer_id)) == _ids(bobs)
    # Asking for Bob's with Alice's key: the signer is the volunteer, so this is refused.
    with pytest.raises(RemoteError) as refused:
        alice.client.held_leases(bob.volunteer_id)
    assert refused.value.code == "PERMISSION_DENIED"
    # A key the coordinator does not know.
    stranger = RawVolunteer(CoordinatorClient(coordinator.address))
    stranger.client = CoordinatorClient(coordinator.address, signer=stranger.key)
    with pytest.raises(RemoteError) as unknown:
        stranger.client.held_leases(fingerprint(stranger.key.public_key))
    assert unknown.value.code == "UNAUTHENTICATED"
    assert _lease_states(coordinator, bob.volunteer_id) == {x.lease_id: "active" for x in bobs}


def test_leases_whose_results_are_spooled_are_not_recovered(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    admin.create_job(job_requests(TEXTS, redundancy=1, unit_size=4))
    raw = _raw(coordinator)
    done, todo = _leases(raw, 2)
    spool = Spool(tmp_path / "spool", coordinator.coordinator.key.fingerprint)
    unit = decode_unit(done.unit.unit)
    spool.put(*raw.result(done, unit, np.stack([text_vector(x, unit.dims) for x in unit.texts])))
    link = CoordinatorLink(
        CoordinatorClient(coordinator.address),
        lambda: _config(coordinator, tmp_path),
        threading.Event(),
        lambda e: None,
    )
    link.registered(raw.volunteer_id, raw.key)
    try:
        assert [x.lease_id for x in recover_leases(link, spool)] == [todo.lease_id]
    finally:
        link.close()


def _config(running: RunningCoordinator, home: Path) -> EngineConfig:
    return EngineConfig(
        coordinator=running.address,
        fingerprint=running.coordinator.key.fingerprint,
        home=home,
        device="cpu",
        exit_when_idle=True,
        give_up_after_s=30,
    )


@pytest.fixture
def older_coordinator(
    coordinator_home: CoordinatorHome, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningCoordinator]:
    """A coordinator from before ListLeases: the method is not served, so grpc answers
    UNIMPLEMENTED."""

    def older(*registrations: Callable[[Any], None]) -> dict[str, grpc.RpcMethodHandler]:
        handlers = bridge.collect(*registrations)
        del handlers["/allmende.v1.VolunteerService/ListLeases"]
        return handlers

    monkeypatch.setattr(server, "collect", older)
    with serve(coordinator_home.root, "127.0.0.1:0", drain_s=0.2) as running:
        yield running


def test_an_older_coordinator_without_list_leases_is_worked_for_as_before(
    older_coordinator: RunningCoordinator, coordinator_home: CoordinatorHome, tmp_path: Path
) -> None:
    with CoordinatorClient(
        older_coordinator.address, admin_token=coordinator_home.load_token()
    ) as admin:
        job_id = admin.create_job(job_requests(TEXTS, redundancy=1, unit_size=4)).job_id
    raw = _raw(older_coordinator)
    with pytest.raises(RemoteError) as missing:
        raw.client.held_leases(raw.volunteer_id)
    assert missing.value.code == grpc.StatusCode.UNIMPLEMENTED.name
    running = start(_config(older_coordinator, tmp_path / "home"), SlowComputer(delay_s=0.0))
    assert _finished(running) == 0
    assert wait_for_state([older_coordinator], job_id, ("complete", "failed"), 30) == "complete"


def test_units_with_gold_rows_and_decoys_come_back_byte_for_byte(
    coordinator_home: CoordinatorHome,
) -> None:
    policy = TrustPolicy(gold_streak=0, unproven_leases=12)  # 12 leases in hand at once
    with launch(coordinator_home, policy, gold=True) as net:
        net.create(sentences(48), redundancy=2, unit_size=4, gold_fraction=0.25)
        volunteer = net.volunteer()
        given: list[pb.Lease] = []
        while len(given) < 12 and not any(net.decoy_positions(x.lease_id) for x in given):
            lease = volunteer.lease()
            if lease is None:
                break
            given.append(lease)
        assert all(net.gold_positions(x.lease_id) for x in given)  # hidden gold rows in each
        # A decoy comes with every other lease at random from the second on: 12 leases
        # leave 1 chance in 2,048 of none.
        assert any(net.decoy_positions(x.lease_id) for x in given)
        with CoordinatorClient(net.running.address, signer=volunteer.raw.key) as again:
            listed = {x.lease_id: x for x in again.held_leases(volunteer.id)}
        assert set(listed) == _ids(given)
        for lease in given:
            assert listed[lease.lease_id].unit == lease.unit  # rows, gold rows, decoys, signature
        # Answered as given back, the gold rows check out: the composition is the one stored.
        for lease in given:
            response = volunteer.submit(listed[lease.lease_id])
            assert response.status in ("accepted", "pending"), response.reason
