"""The engine under the volunteer's controls, against a real coordinator in-process:
pause and resume, finish-then-stop, quit, live settings, pause rules from hardware samples,
and the spool that keeps finished results across an unreachable coordinator and a restart."""

from __future__ import annotations

import dataclasses
import threading
from datetime import time as daytime
from pathlib import Path

from allmende.client.connection import CoordinatorClient
from allmende.client.engine import EngineConfig
from allmende.client.engine import events as ev
from allmende.client.engine.spool import Spool
from allmende.client.probes import FakeProbe, HardwareSample
from allmende.coordinator.app import RunningCoordinator, serve
from allmende.coordinator.home import CoordinatorHome
from tests.conftest import job_requests
from tests.engine.helpers import SlowComputer, start

QUIET = HardwareSample(at=0, cpu_count=4, cpu_percent=5, cpu_ours_percent=1)


def make_config(coordinator: RunningCoordinator, home: Path, **overrides: object) -> EngineConfig:
    settings: dict[str, object] = {
        "device": "cpu",
        "sample_interval_s": 0.05,
        "max_backoff_s": 0.2,
        "give_up_after_s": 10,
        **overrides,
    }
    return EngineConfig(
        coordinator=coordinator.address,
        fingerprint=coordinator.coordinator.key.fingerprint,
        home=home,
        **settings,
    )  # type: ignore[arg-type]


def create(admin: CoordinatorClient, units: int, per_unit: int) -> str:
    texts = [f"sentence {i} for the engine" for i in range(units * per_unit)]
    return admin.create_job(job_requests(texts, redundancy=1, unit_size=per_unit)).job_id


def test_pause_holds_the_unit_between_batches_and_resume_finishes_it(
    coordinator: RunningCoordinator,
    admin: CoordinatorClient,
    tmp_path: Path,
) -> None:
    job = create(admin, units=1, per_unit=40)
    run = start(
        make_config(coordinator, tmp_path / "v", exit_when_idle=True),
        SlowComputer(delay_s=0.05),
        probe=FakeProbe([QUIET]),
    )
    run.wait_for(ev.UnitProgress)
    run.engine.pause()
    paused = run.wait_for(ev.Paused)
    assert paused.reason == "paused by you"  # type: ignore[attr-defined]
    assert run.engine.pause_reason == "paused by you"
    progress = len(run.of(ev.UnitProgress))
    threading.Event().wait(0.4)
    assert len(run.of(ev.UnitProgress)) == progress  # nothing computed while paused
    run.engine.resume()
    stopped = run.finish()
    assert stopped.exit_code == 0 and stopped.units == 1
    assert run.of(ev.Resumed)
    [computed] = run.of(ev.UnitComputed)
    assert computed.seconds < 0.5 * 10 / 4 + 0.35  # type: ignore[attr-defined]  # pause left out
    [result] = run.of(ev.ResultSubmitted)
    assert result.status == "accepted" and result.items == 40  # type: ignore[attr-defined]
    assert admin.get_job(job).units_accepted == 1


def test_finish_then_stop_sends_the_current_unit_and_hands_back_the_next(
    coordinator: RunningCoordinator,
    admin: CoordinatorClient,
    tmp_path: Path,
) -> None:
    job = create(admin, units=3, per_unit=20)
    run = start(
        make_config(coordinator, tmp_path / "v"),
        SlowComputer(delay_s=0.05),
        probe=FakeProbe([QUIET]),
    )
    run.wait_for(ev.UnitProgress)
    run.engine.stop()
    stopped = run.finish()
    assert (stopped.exit_code, stopped.reason, stopped.units) == (0, "stopped", 1)
    assert run.of(ev.Stopping)[0].how.startswith("finishing")  # type: ignore[attr-defined]
    assert [e.status for e in run.of(ev.ResultSubmitted)] == ["accepted"]  # type: ignore[attr-defined]
    [released] = run.of(ev.UnitReleased)
    assert "not started" in released.reason  # type: ignore[attr-defined]
    status = admin.get_job(job)
    assert (status.units_accepted, status.units_in_progress) == (1, 0)


def test_quit_cancels_the_unit_in_compute_and_hands_back_every_lease(
    coordinator: RunningCoordinator,
    admin: CoordinatorClient,
    tmp_path: Path,
) -> None:
    job = create(admin, units=2, per_unit=80)
    run = start(
        make_config(coordinator, tmp_path / "v"),
        SlowComputer(delay_s=0.05),
        probe=FakeProbe([QUIET]),
    )
    run.wait_for(ev.UnitProgress)
    run.engine.quit()
    stopped = run.finish()
    assert stopped.exit_code == 0 and stopped.units == 0
    assert not run.of(ev.ResultSubmitted) and not run.of(ev.UnitComputed)
    reasons = sorted(e.reason for e in run.of(ev.UnitReleased))  # type: ignore[attr-defined]
    assert len(reasons) == 2
    assert "quit before the unit was finished" in reasons[1] and "not started" in reasons[0]
    done = [e.done for e in run.of(ev.UnitProgress)]  # type: ignore[attr-defined]
    assert max(done) < 80
    assert admin.get_job(job).units_in_progress == 0
    # the summary says what was handed back, and how much work that was
    part = next(e for e in run.of(ev.UnitReleased) if "quit" in e.reason)  # type: ignore[attr-defined]
    # progress events are merged, so more rows may be done than the last one said
    assert max(done) <= part.done < 80 and part.items == 80 and part.seconds > 0  # type: ignore[attr-defined]
    assert (stopped.handed_back, stopped.handed_back_rows) == (2, part.done)  # type: ignore[attr-defined]
    assert stopped.handed_back_s == part.seconds  # type: ignore[attr-defined]


def test_pause_rules_follow_the_probe_and_settings_apply_live(
    coordinator: RunningCoordinator,
    admin: CoordinatorClient,
    tmp_path: Path,
) -> None:
    create(admin, units=1, per_unit=8)
    unplugged = dataclasses.replace(QUIET, on_battery=True, battery_percent=40)
    probe = FakeProbe([unplugged])
    config = make_config(coordinator, tmp_path / "v", exit_when_idle=True, pause_on_battery=True)
    run = start(config, SlowComputer(), probe=probe, local_time=lambda: daytime(12, 0))
    assert run.wait_for(ev.Paused).reason == "on battery"  # type: ignore[attr-defined]
    assert not run.of(ev.UnitLeased)
    # live: a schedule that excludes noon takes over as the reason ...
    changed = run.engine.apply(dataclasses.replace(config, schedule="22:00-07:00"))
    assert changed == ["schedule"]
    run.wait_for(ev.Paused, where=lambda e: "schedule" in e.reason)  # type: ignore[attr-defined]
    # ... and lifting both rules resumes the work
    run.engine.apply(dataclasses.replace(config, schedule="", pause_on_battery=False))
    probe.samples = [QUIET]
    stopped = run.finish()
    assert stopped.exit_code == 0 and stopped.units == 1
    assert [e.changes for e in run.of(ev.SettingsApplied)] == [  # type: ignore[attr-defined]
        "schedule",
        "pause_on_battery, schedule",
    ]
    assert run.of(ev.Resumed) and run.of(ev.HardwareSampled)


def test_a_result_that_cannot_be_sent_is_kept_on_disk_and_sent_after_a_restart(
    coordinator_home: CoordinatorHome,
    tmp_path: Path,
) -> None:
    home = tmp_path / "volunteer"
    gate = threading.Event()
    with serve(coordinator_home.root, "127.0.0.1:0", drain_s=0.2) as first:
        with CoordinatorClient(first.address, admin_token=coordinator_home.load_token()) as a:
            job = create(a, units=1, per_unit=12)
        config = make_config(first, home, give_up_after_s=1.0)
        computer = SlowComputer(gate=gate)
        run = start(config, computer, probe=FakeProbe([QUIET]))
        assert computer.started.wait(20)
    gate.set()  # the coordinator is gone; the unit finishes now
    stopped = run.finish()
    assert stopped.exit_code == 4 and stopped.spooled == 1  # unreachable; kept on disk
    [spooled] = run.of(ev.ResultSpooled)
    assert "kept on disk" in spooled.reason  # type: ignore[attr-defined]
    fp = first.coordinator.key.fingerprint
    assert Spool(home / "spool", fp).count() == 1

    with serve(coordinator_home.root, "127.0.0.1:0", drain_s=0.2) as second:
        again = start(
            make_config(second, home, exit_when_idle=True), SlowComputer(), probe=FakeProbe([QUIET])
        )
        stopped = again.finish()
        assert stopped.exit_code == 0 and stopped.spooled == 0
        names = [e.name for e in again.events if not e.telemetry and e.name != "credit"]
        assert names[:2] == ["connected", "result.submitted"]  # before any new work
        [resent] = again.of(ev.ResultSubmitted)
        assert resent.resent and resent.status == "accepted"  # type: ignore[attr-defined]
        assert not again.of(ev.UnitLeased)
        with CoordinatorClient(second.address) as client:
            assert client.get_job(job).units_accepted == 1
    assert Spool(home / "spool", fp).count() == 0
