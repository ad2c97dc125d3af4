"""Job administration, volunteer bans, the overview, metrics, health and graceful drain,
against a real coordinator on port 0."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from allmende.client.connection import CoordinatorClient, RemoteError
from allmende.coordinator.app import RunningCoordinator, serve
from allmende.coordinator.home import CoordinatorHome
from allmende.v1 import allmende_pb2 as pb
from tests.conditions import wait_until
from tests.conftest import job_requests
from tests.integration.volunteers import HashComputer, RawVolunteer


def texts(n: int, tag: str = "") -> list[str]:
    return [f"{tag} sentence {i}" for i in range(n)]


def refused(call: object, code: str, *needles: str) -> str:
    with pytest.raises(RemoteError) as info:
        call()  # type: ignore[operator]
    assert info.value.code == code, info.value
    for needle in needles:
        assert needle in info.value.details, info.value.details
    return info.value.details


@pytest.fixture
def volunteer(admin: CoordinatorClient) -> RawVolunteer:
    raw = RawVolunteer(admin)
    raw.register()
    return raw


def test_pause_stops_leasing_and_resume_restarts_it(
    admin: CoordinatorClient, volunteer: RawVolunteer
) -> None:
    job_id = admin.create_job(job_requests(texts(20), redundancy=1, unit_size=10)).job_id
    assert admin.pause_job(job_id).state == "paused"
    assert volunteer.lease() is None
    refused(lambda: admin.pause_job(job_id), "FAILED_PRECONDITION", "paused")
    assert admin.resume_job(job_id).state == "running"
    _, unit = volunteer.lease()  # type: ignore[misc]
    assert unit.job_id == job_id


def test_cancel_cancels_outstanding_leases(
    admin: CoordinatorClient, volunteer: RawVolunteer
) -> None:
    job_id = admin.create_job(job_requests(texts(20), redundancy=1, unit_size=10)).job_id
    lease, unit = volunteer.lease()  # type: ignore[misc]
    status = admin.cancel_job(job_id)
    assert status.state == "cancelled" and "cancelled" in status.reason
    refused(
        lambda: volunteer.submit(lease, unit, HashComputer().compute(unit)),
        "FAILED_PRECONDITION",
        "cancelled",
    )
    assert volunteer.lease() is None
    refused(lambda: admin.resume_job(job_id), "FAILED_PRECONDITION", "cancelled")


def test_priority_decides_which_job_is_leased_first(
    admin: CoordinatorClient, volunteer: RawVolunteer
) -> None:
    first = admin.create_job(job_requests(texts(10, "a"), redundancy=1)).job_id
    second = admin.create_job(job_requests(texts(10, "b"), redundancy=1)).job_id
    request = pb.UpdateJobRequest(job_id=second, priority=5)
    assert admin.update_job(request).priority == 5
    _, unit = volunteer.lease()  # type: ignore[misc]
    assert unit.job_id == second
    _, unit = volunteer.lease()  # type: ignore[misc]
    assert unit.job_id == first


def test_raising_redundancy_asks_for_more_replicas(
    coordinator: RunningCoordinator, admin: CoordinatorClient
) -> None:
    job_id = admin.create_job(job_requests(texts(5), redundancy=1)).job_id
    status = admin.update_job(pb.UpdateJobRequest(job_id=job_id, redundancy=2, tau=0.99))
    assert (status.spec.redundancy, status.spec.tau) == (2, 0.99)
    first, second = RawVolunteer(admin), RawVolunteer(admin)
    for raw in (first, second):
        raw.register()
    lease, unit = first.lease()  # type: ignore[misc]
    assert first.submit(lease, unit, HashComputer().compute(unit)).status == "pending"
    lease, unit = second.lease()  # type: ignore[misc]
    assert second.submit(lease, unit, HashComputer().compute(unit)).status == "accepted"
    refused(
        lambda: admin.update_job(pb.UpdateJobRequest(job_id=job_id, redundancy=1)),
        "FAILED_PRECONDITION",
    )


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"priority": 5000}, "priority"),
        ({"redundancy": 0}, "redundancy"),
        ({"tau": 1.5}, "tau"),
        ({}, "at least one"),
    ],
)
def test_bad_job_updates_are_refused_and_change_nothing(
    admin: CoordinatorClient, fields: dict[str, object], needle: str
) -> None:
    job_id = admin.create_job(job_requests(texts(5))).job_id
    before = admin.get_job(job_id)
    refused(
        lambda: admin.update_job(pb.UpdateJobRequest(job_id=job_id, **fields)),
        "INVALID_ARGUMENT",
        needle,
    )
    after = admin.get_job(job_id)
    assert (after.priority, after.spec.redundancy, after.spec.tau) == (
        before.priority,
        before.spec.redundancy,
        before.spec.tau,
    )


def test_a_banned_volunteer_gets_no_work_and_its_leases_go_back(
    admin: CoordinatorClient, volunteer: RawVolunteer
) -> None:
    job_id = admin.create_job(job_requests(texts(10), redundancy=1)).job_id
    lease, unit = volunteer.lease()  # type: ignore[misc]
    banned = admin.ban_volunteer(volunteer.volunteer_id, "copied results")
    assert banned.banned and banned.ban_reason == "copied results"
    refused(volunteer.lease, "PERMISSION_DENIED", "banned", "copied results")
    refused(
        lambda: volunteer.submit(lease, unit, HashComputer().compute(unit)),
        "PERMISSION_DENIED",
        "banned",
    )
    other = RawVolunteer(admin)
    other.register()
    _, again = other.lease()  # type: ignore[misc]
    assert again.unit_id == unit.unit_id  # the banned volunteer's lease was freed
    assert not admin.unban_volunteer(volunteer.volunteer_id).banned
    assert admin.get_job(job_id).state == "running"
    listed = {v.volunteer_id: v for v in admin.list_volunteers()}
    assert listed[other.volunteer_id].leases_active == 1
    assert listed[volunteer.volunteer_id].online


def test_the_volunteer_list_shows_when_each_volunteer_last_asked_for_work(
    admin: CoordinatorClient, volunteer: RawVolunteer
) -> None:
    admin.create_job(job_requests(texts(4), redundancy=1))
    registered = {v.volunteer_id: v for v in admin.list_volunteers()}[volunteer.volunteer_id]
    time.sleep(0.05)
    asked_ms = int(time.time() * 1000)
    assert volunteer.lease() is not None
    listed = {v.volunteer_id: v for v in admin.list_volunteers()}[volunteer.volunteer_id]
    assert listed.last_seen_unix_ms >= asked_ms > registered.last_seen_unix_ms
    assert listed.online


def test_admin_calls_need_the_admin_token(coordinator: RunningCoordinator) -> None:
    for token in (None, "wrong-token"):
        with CoordinatorClient(coordinator.address, admin_token=token) as client:
            for call in (
                client.list_volunteers,
                lambda: client.overview(),
                lambda: client.pause_job("job-x"),
                lambda: client.ban_volunteer("x" * 64, ""),
            ):
                refused(call, "UNAUTHENTICATED", "admin token")


def test_unknown_ids_are_named(admin: CoordinatorClient) -> None:
    refused(lambda: admin.pause_job("job-000000000000"), "NOT_FOUND", "job-000000000000")
    refused(lambda: admin.ban_volunteer("f" * 64, "x"), "NOT_FOUND", "volunteer")
    refused(lambda: admin.cancel_job(""), "INVALID_ARGUMENT", "job_id")


def test_overview_reports_jobs_volunteers_validation_and_events(
    admin: CoordinatorClient, volunteer: RawVolunteer
) -> None:
    job_id = admin.create_job(job_requests(texts(10), redundancy=1)).job_id
    lease, unit = volunteer.lease()  # type: ignore[misc]
    volunteer.submit(lease, unit, HashComputer().compute(unit))
    overview = admin.overview(events=20)
    assert [j.job_id for j in overview.jobs] == [job_id]
    assert overview.jobs[0].units_accepted == 1 and overview.jobs[0].items_per_s > 0
    assert [v.volunteer_id for v in overview.volunteers] == [volunteer.volunteer_id]
    assert overview.volunteers[0].results_valid == 1
    assert overview.volunteers[0].items_valid == 10
    assert overview.validation.units_accepted == 1
    kinds = [e.kind for e in overview.events]
    assert "job.created" in kinds and "unit.accepted" in kinds
    refused(lambda: admin.overview(events=5000), "INVALID_ARGUMENT", "events")


@pytest.fixture
def with_metrics(coordinator_home: CoordinatorHome) -> Iterator[RunningCoordinator]:
    with serve(
        coordinator_home.root, "127.0.0.1:0", metrics_listen="127.0.0.1:0", drain_s=5
    ) as running:
        yield running


def test_metrics_count_what_happened(
    with_metrics: RunningCoordinator, coordinator_home: CoordinatorHome
) -> None:
    with CoordinatorClient(with_metrics.address, coordinator_home.load_token()) as admin:
        admin.create_job(job_requests(texts(30), redundancy=1, unit_size=10))
        raw = RawVolunteer(admin)
        raw.register()
        for _ in range(3):
            lease, unit = raw.lease()  # type: ignore[misc]
            raw.submit(lease, unit, HashComputer().compute(unit))
        refused(lambda: admin.get_job("job-nope"), "NOT_FOUND")
    url = f"http://127.0.0.1:{with_metrics.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["allmende_units_leased_total"] == 3
    assert values["allmende_units_accepted_total"] == 3
    assert values["allmende_items_accepted_total"] == 30
    assert values['allmende_results_total{outcome="accepted"}'] == 3
    assert values["allmende_lease_latency_seconds_count"] == 3
    assert values["allmende_active_volunteers"] == 1
    assert values['allmende_rpc_errors_total{code="NOT_FOUND",method="GetJob"}'] == 1


def test_health_serves_and_drain_lets_leased_work_land(
    coordinator_home: CoordinatorHome, tmp_path: Path
) -> None:
    import threading

    with serve(coordinator_home.root, "127.0.0.1:0", drain_s=10) as running:
        channel = grpc.insecure_channel(running.address)
        health = health_pb2_grpc.HealthStub(channel)
        check = health.Check(health_pb2.HealthCheckRequest(service="allmende.v1.VolunteerService"))
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        admin = CoordinatorClient(running.address, coordinator_home.load_token())
        admin.create_job(job_requests(texts(20), redundancy=1, unit_size=10))
        raw = RawVolunteer(admin)
        raw.register()
        lease, unit = raw.lease()  # type: ignore[misc]
        outcome: dict[str, object] = {}

        def draining() -> bool:
            status = health.Check(
                health_pb2.HealthCheckRequest(service="allmende.v1.VolunteerService")
            ).status
            return bool(status == health_pb2.HealthCheckResponse.NOT_SERVING)

        def late_submit() -> None:
            wait_until(draining, "the coordinator to start draining")
            assert raw.lease() is None  # no new work while draining
            outcome["status"] = raw.submit(lease, unit, HashComputer().compute(unit)).status

        worker = threading.Thread(target=late_submit)
        worker.start()
    worker.join()
    assert outcome["status"] == "accepted"
    admin.close()
    channel.close()
