"""The engine leases and sends several units per call, against a real coordinator in-process:
a spooled backlog goes in SubmitResults calls with an answer per result, fast volunteers
lease a few units at a time, and quitting hands back every unit held."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import select

from allmende.client.connection import CoordinatorClient
from allmende.client.engine import events as ev
from allmende.client.engine.link import CoordinatorLink
from allmende.client.engine.runner import BUFFER_S, MAX_BUFFER, units_wanted
from allmende.client.engine.spool import Spool
from allmende.client.engine.submission import BATCH, Submitter
from allmende.client.probes import FakeProbe
from allmende.coordinator.app import RunningCoordinator, serve
from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.store import schema as t
from allmende.coordinator.store.sql import SqlStore
from allmende.v1 import allmende_pb2 as pb
from tests.engine.helpers import SlowComputer, start
from tests.engine.test_controls import QUIET, create, make_config
from tests.integration.rawclient import RawVolunteer


@pytest.fixture
def coordinator(coordinator_home: CoordinatorHome) -> Iterator[RunningCoordinator]:
    """These tests lease more units at once than a new volunteer may hold by default (the
    cap is tested in tests/integration/test_trust_limits.py): lift it."""
    policy = TrustPolicy(unproven_leases=64)
    with serve(coordinator_home.root, "127.0.0.1:0", drain_s=0.2, policy=policy) as running:
        yield running


class CountingLink(CoordinatorLink):
    """The engine's real link, counting the calls that carry results."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.batches: list[int] = []
        self.singles = 0

    def submit(self, envelope: bytes, signature: bytes, payload: bytes) -> object:
        self.singles += 1
        return super().submit(envelope, signature, payload)

    def submit_many(self, results: Sequence[tuple[bytes, bytes, bytes]]) -> object:
        self.batches.append(len(results))
        return super().submit_many(results)


def test_units_wanted_keeps_a_few_seconds_of_work_in_hand() -> None:
    assert units_wanted(BUFFER_S * 2) == 1  # a slow volunteer: one unit at a time
    assert units_wanted(BUFFER_S) == 1
    assert units_wanted(BUFFER_S / 3) == 3
    assert units_wanted(0.001) == MAX_BUFFER  # a fast GPU: capped
    assert units_wanted(0.0) == MAX_BUFFER


def test_a_spooled_backlog_goes_in_one_call_with_an_answer_per_result(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    job = create(admin, units=6, per_unit=4)
    raw = RawVolunteer(coordinator.address)
    raw.register()
    events: list[ev.Event] = []
    stop = threading.Event()
    config = make_config(coordinator, tmp_path / "v")
    with CoordinatorClient(coordinator.address) as client:
        link = CountingLink(client, lambda: config, stop, events.append)
        link.registered(raw.volunteer_id, raw.key)
        response = link.lease(5)
        assert isinstance(response, pb.LeaseWorkResponse)
        leases = [response.lease, *response.more_leases]
        assert len(leases) == 5 and len({lease.lease_id for lease in leases}) == 5
        spool = Spool(tmp_path / "spool", coordinator.coordinator.key.fingerprint)
        for lease in leases:
            spool.put(*raw.result(lease))
        spool.put(*raw.result(leases[0]))  # the same result twice: the second is refused
        submitter = Submitter(link, spool, stop, events.append)
        submitter.resend_spooled()
    raw.close()
    assert link.batches == [6] and link.singles == 0
    answers = Counter(
        e.status  # type: ignore[attr-defined]
        for e in events
        if isinstance(e, ev.ResultSubmitted)
    )
    assert answers == Counter({"accepted": 5, "error": 1})
    [refused] = [e for e in events if isinstance(e, ev.ResultSubmitted) and e.status == "error"]
    assert "FAILED_PRECONDITION" in refused.reason  # type: ignore[attr-defined]
    assert spool.count() == 0  # answered, each of them: nothing left to send
    assert submitter.units_done == 5
    assert admin.get_job(job).units_accepted == 5


def test_a_backlog_larger_than_a_batch_is_split(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    create(admin, units=BATCH + 3, per_unit=2)
    raw = RawVolunteer(coordinator.address)
    raw.register()
    stop = threading.Event()
    config = make_config(coordinator, tmp_path / "v")
    events: list[ev.Event] = []
    with CoordinatorClient(coordinator.address) as client:
        link = CountingLink(client, lambda: config, stop, events.append)
        link.registered(raw.volunteer_id, raw.key)
        spool = Spool(tmp_path / "spool", coordinator.coordinator.key.fingerprint)
        leased = 0
        while leased < BATCH + 3:
            response = link.lease(8)
            assert isinstance(response, pb.LeaseWorkResponse) and response.HasField("lease")
            for lease in [response.lease, *response.more_leases]:
                spool.put(*raw.result(lease))
                leased += 1
        Submitter(link, spool, stop, events.append).resend_spooled()
    raw.close()
    assert link.batches == [BATCH, 3]
    assert spool.count() == 0


def _lease_groups(coordinator: RunningCoordinator) -> list[int]:
    """How many leases each lease call made (leases of one call share their creation time)."""
    store = coordinator.coordinator.store
    assert isinstance(store, SqlStore)
    with store.engine.connect() as conn:
        created = conn.execute(select(t.leases.c.created_ms)).scalars().all()
    return sorted(Counter(created).values(), reverse=True)


def test_a_fast_volunteer_leases_several_units_per_call_and_finishes_the_job(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    job = create(admin, units=20, per_unit=4)
    config = make_config(coordinator, tmp_path / "v", exit_when_idle=True)
    run = start(config, SlowComputer(delay_s=0.001), probe=FakeProbe([QUIET]))
    stopped = run.finish(timeout_s=60)
    assert stopped.exit_code == 0 and stopped.units == 20
    status = admin.get_job(job)
    assert (status.units_accepted, status.units_in_progress) == (20, 0)
    groups = _lease_groups(coordinator)
    assert sum(groups) == 20
    assert groups[0] > 1  # after the first unit, leases came several at a time
    assert not run.of(ev.UnitReleased)


def test_quit_hands_back_every_unit_held(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    job = create(admin, units=30, per_unit=8)
    gate = threading.Event()
    computer = SlowComputer(delay_s=0.01, batch=8)
    run = start(make_config(coordinator, tmp_path / "v"), computer, probe=FakeProbe([QUIET]))
    # The first unit decides the buffer; hold the engine inside a later one.
    run.wait_for(ev.UnitComputed)
    computer.gate, computer.started = gate, threading.Event()
    assert computer.started.wait(20)
    run.engine.quit()
    gate.set()
    stopped = run.finish()
    assert stopped.exit_code == 0
    released = run.of(ev.UnitReleased)
    assert len(released) > 1  # the unit in compute, and those held
    status = admin.get_job(job)
    assert status.units_in_progress == 0  # every lease handed back, none left to expire
    assert status.units_accepted == stopped.units
