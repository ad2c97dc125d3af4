"""`coordinator top`: behaviour against a real coordinator, then pixels of fixed data."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from allmende.client.connection import CoordinatorClient, RemoteError
from allmende.coordinator.top.app import ActionDone, FetchFailed, OverviewReceived, TopApp
from allmende.coordinator.top.confirm import ConfirmScreen
from allmende.coordinator.top.remote import RemoteTop
from allmende.v1 import allmende_pb2 as pb
from tests.conftest import job_requests
from tests.integration.volunteers import HashComputer, RawVolunteer


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


def cell(app: TopApp, table_id: str, row: int, column: int) -> str:
    table = app.query_one(table_id)
    return str(table.get_row_at(row)[column])  # type: ignore[attr-defined]


async def test_top_shows_a_live_coordinator_and_its_controls_work(
    admin: CoordinatorClient,
) -> None:
    job_id = admin.create_job(
        job_requests([f"text {i}" for i in range(20)], redundancy=1, unit_size=10, name="captions")
    ).job_id
    volunteer = RawVolunteer(admin)
    volunteer.register()
    lease, unit = volunteer.lease()  # type: ignore[misc]
    volunteer.submit(lease, unit, HashComputer().compute(unit))

    remote = RemoteTop(admin)
    app = TopApp(remote.fetch, remote.act, "test", interval_s=0.2)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(lambda: app.overview is not None)
        assert cell(app, "#jobs-table", 0, 0) == job_id
        assert cell(app, "#jobs-table", 0, 1) == "running"
        assert cell(app, "#jobs-table", 0, 2) == "embed-text"
        assert "1/2" in cell(app, "#jobs-table", 0, 4)
        assert cell(app, "#volunteers-table", 0, 2) == "online"
        assert cell(app, "#volunteers-table", 0, 4) == "1"  # valid results

        await pilot.press("p")
        await until(lambda: admin.get_job(job_id).state == "paused")
        await until(lambda: cell(app, "#jobs-table", 0, 1) == "paused")
        await pilot.press("p")
        await until(lambda: admin.get_job(job_id).state == "running")

        await pilot.press("b", "y")  # ban asks first (test below)
        await until(lambda: admin.list_volunteers()[0].banned)
        await until(lambda: cell(app, "#volunteers-table", 0, 2) == "banned")
        await pilot.press("u")
        await until(lambda: not admin.list_volunteers()[0].banned)

        await pilot.press("c", "y")  # cancel asks first (test below)
        await until(lambda: admin.get_job(job_id).state == "cancelled")
        await pilot.press("c", "y")  # cancelling twice is refused and said so, not a crash
        await until(lambda: any("refused" in line for line in app._log_lines))
        await pilot.press("q")


async def test_top_asks_before_cancel_and_ban_and_only_yes_goes_ahead(
    admin: CoordinatorClient,
) -> None:
    job_id = admin.create_job(job_requests(["a", "b"], redundancy=1, name="captions")).job_id
    volunteer = RawVolunteer(admin)
    volunteer.register()
    remote = RemoteTop(admin)
    app = TopApp(remote.fetch, remote.act, "test", interval_s=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: app.overview is not None)
        for answer in ("n", "escape", "enter"):  # enter presses the focused No button
            await pilot.press("c")
            assert isinstance(app.screen, ConfirmScreen)
            question = str(app.screen.query_one("#question").render())
            assert job_id in question and "captions" in question and "cannot be undone" in question
            await pilot.press(answer)
            assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("b")
        assert isinstance(app.screen, ConfirmScreen)
        assert volunteer.volunteer_id[:16] in str(app.screen.query_one("#question").render())
        await pilot.press("n")
        await pilot.pause(0.5)
        assert admin.get_job(job_id).state == "running"
        assert not admin.list_volunteers()[0].banned
        assert sum("not confirmed" in line for line in app._log_lines) == 4

        await pilot.press("c")
        await pilot.click("#yes")
        await until(lambda: admin.get_job(job_id).state == "cancelled")
        await pilot.press("b", "y")
        await until(lambda: admin.list_volunteers()[0].banned)
        await until(lambda: any(line.startswith("cancelled") for line in app._log_lines))
        await pilot.press("q")


async def test_top_shows_an_unreachable_coordinator_and_keeps_running() -> None:
    def fetch() -> pb.GetOverviewResponse:
        raise RemoteError("UNAVAILABLE", "connection refused", True)

    app = TopApp(fetch, None, "10.0.0.1:50051", interval_s=0.1)
    async with app.run_test(size=(100, 30)):
        await until(lambda: bool(app.last_error))
        status = str(app.query_one("#status").render())
        assert "unreachable" in status and "connection refused" in status
        assert app.is_running


async def test_a_fetch_that_ends_after_quitting_is_dropped() -> None:
    """Quitting while a fetch is in flight (an unreachable coordinator answers slowly): the
    fetch's outcome arrives once the widgets are gone and must be dropped, not crash."""
    release = threading.Event()
    started = threading.Event()

    def fetch() -> pb.GetOverviewResponse:
        started.set()
        release.wait(10)
        raise RemoteError("UNAVAILABLE", "connection refused", True)

    app = TopApp(fetch, None, "10.0.0.1:50051", interval_s=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(started.is_set)
        await pilot.press("q")
    assert not app.is_running
    release.set()
    # What the worker posts now, and what a message processed during shutdown would do:
    app._failed(FetchFailed("connection refused"))
    app._received(OverviewReceived(fixed_overview()))
    app._action_done(ActionDone("ban abc", "information"))
    assert app.last_error == ""  # nothing was shown: the dashboard is gone


async def test_top_names_a_coordinator_error_that_is_not_unreachability() -> None:
    def fetch() -> pb.GetOverviewResponse:
        raise RemoteError("INTERNAL", "internal error", False)

    app = TopApp(fetch, None, "10.0.0.1:50051", interval_s=0.1)
    async with app.run_test(size=(100, 30)):
        await until(lambda: bool(app.last_error))
        status = str(app.query_one("#status").render())
        assert "error INTERNAL: internal error" in status and "unreachable" not in status
        assert app.is_running  # may pass; retried


async def test_top_exits_with_the_reason_when_the_coordinator_refuses_its_token() -> None:
    """A token revoked while top runs: no dashboard going stale under "unreachable"."""
    calls = []

    def fetch() -> pb.GetOverviewResponse:
        calls.append(1)
        if len(calls) == 1:
            return fixed_overview()
        raise RemoteError("UNAUTHENTICATED", "admin calls need the admin token", False)

    app = TopApp(fetch, None, "10.0.0.1:50051", interval_s=0.1)
    async with app.run_test(size=(100, 30)):
        await until(lambda: not app.is_running)
    assert app.return_code == 1
    assert app.refused == (
        "10.0.0.1:50051 refused (UNAUTHENTICATED): admin calls need the admin token"
    )


def fixed_overview() -> pb.GetOverviewResponse:
    now = 1_764_072_000_000
    job = pb.JobStatus(
        job_id="job-4f2a9c1d7e3b",
        name="stsb embeddings",
        state="running",
        spec=pb.JobSpec(kind="embed-text", model="all-MiniLM-L6-v2", redundancy=2, tau=0.999),
        items=8628,
        unique_items=8000,
        units_total=32,
        units_accepted=20,
        units_failed=1,
        failed_units=[
            pb.FailedUnit(unit_id="job-4f2a9c1d7e3b-u000007", reason="no quorum after 5 results")
        ],
        items_per_s=312.5,
        priority=0,
    )
    done = pb.JobStatus(
        job_id="job-0a1b2c3d4e5f",
        name="captions",
        state="complete",
        units_total=4,
        units_accepted=4,
        unique_items=1004,
    )
    volunteers = [
        pb.VolunteerStatus(
            volunteer_id="a" * 64,
            display_name="lab-gpu-01",
            online=True,
            results_valid=40,
            items_per_s=180.0,
            leases_active=1,
            last_seen_unix_ms=now - 3000,
        ),
        pb.VolunteerStatus(
            volunteer_id="b" * 64,
            display_name="laptop",
            online=False,
            results_valid=3,
            results_invalid=2,
            last_seen_unix_ms=now - 600_000,
        ),
        pb.VolunteerStatus(
            volunteer_id="c" * 64,
            display_name="",
            banned=True,
            results_invalid=7,
            last_seen_unix_ms=now - 7_200_000,
        ),
    ]
    events = [
        pb.Event(
            unix_ms=now - 5000,
            kind="unit.accepted",
            unit_id="job-4f2a9c1d7e3b-u000019",
            message="accepted",
        ),
        pb.Event(
            unix_ms=now - 2000,
            kind="unit.failed",
            unit_id="job-4f2a9c1d7e3b-u000007",
            message="no quorum after 5 results",
        ),
    ]
    return pb.GetOverviewResponse(
        jobs=[job, done],
        volunteers=volunteers,
        events=events,
        now_unix_ms=now,
        fingerprint="7a183d94432f30ea1333e4929e60c166da00d297580106ecd4ff19bb01acd2ce",
        validation=pb.ValidationCounts(
            units_accepted=24,
            units_failed=1,
            results_valid=46,
            results_invalid=9,
            disagreements=3,
            volunteers_banned=1,
        ),
    )


def columns(app: TopApp, table_id: str) -> list[str]:
    table = app.query_one(table_id)
    return [str(c.label) for c in table.columns.values()]  # type: ignore[attr-defined]


async def test_top_at_80x24_keeps_the_key_columns_and_every_key_in_the_footer() -> None:
    app = TopApp(fixed_overview, None, "coordinator.example:50051", interval_s=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: app.overview is not None)
        await pilot.pause()
        assert columns(app, "#jobs-table") == [
            "job", "state", "progress", "units", "ETA", "failed", "name"]
        assert columns(app, "#volunteers-table") == [
            "volunteer", "name", "state", "valid", "invalid", "last seen"]
        assert cell(app, "#jobs-table", 0, 0) == "job-4f2a9c1d"  # enough to act on
        assert cell(app, "#jobs-table", 0, 6) == "stsb embeddings"
        assert cell(app, "#volunteers-table", 1, 5) == "10m ago"
        for table_id in ("#jobs-table", "#volunteers-table"):
            table = app.query_one(table_id)
            assert table.virtual_size.width <= table.size.width, table_id  # type: ignore[attr-defined]
        validation = app.query_one("#validation")
        assert validation.size.height >= 8  # every count, none cut off
        footer = app.query_one("Footer")
        text = " ".join(str(w.render()) for w in footer.query("FooterKey"))
        for word in ("Quit", "Refresh", "Pause/resume", "Cancel job", "Ban", "Unban"):
            assert word in text
        assert sum(w.region.right for w in footer.query("FooterKey")[-1:]) <= 80

        await pilot.resize_terminal(160, 48)
        await pilot.pause()
        assert columns(app, "#jobs-table")[2:6] == ["kind", "progress", "units", "items/s"]
        assert cell(app, "#jobs-table", 0, 0) == "job-4f2a9c1d7e3b"
        assert "pending" in columns(app, "#volunteers-table")


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_top_snapshot(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    app = TopApp(fixed_overview, None, "coordinator.example:50051", interval_s=0)
    assert snap_compare(app, terminal_size=size)


def test_top_snapshot_unreachable(snap_compare: Callable[..., bool]) -> None:
    def fetch() -> pb.GetOverviewResponse:
        raise RemoteError("UNAVAILABLE", "failed to connect to all addresses", True)

    app = TopApp(fetch, None, "coordinator.example:50051", interval_s=0)
    assert snap_compare(app, terminal_size=(100, 24))
