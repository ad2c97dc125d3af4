"""The dashboard of an engine that drives two devices, against a real coordinator in-process
and the real engine: a row per device with its state, temperature and throughput; p and f
act on all devices until a device row is selected, then on that device only. The two "GPUs"
are two fake computers under CUDA names (this machine has none)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.widgets import Static

from allmende.client.connection import CoordinatorClient
from allmende.client.engine import EngineConfig, VolunteerEngine
from allmende.client.engine import events as ev
from allmende.client.probes import FakeProbe, GpuSample, HardwareSample
from allmende.client.settings import SettingsFile, VolunteerSettings
from allmende.client.tui.app import VolunteerApp
from allmende.client.tui.devices import DeviceTable
from allmende.client.tui.messages import EngineEvent
from allmende.coordinator.app import RunningCoordinator
from tests.engine.helpers import SlowComputer
from tests.engine.test_controls import create
from tests.tui.fakes import until


def two_gpus() -> FakeProbe:
    sample = HardwareSample(
        at=0,
        cpu_count=8,
        cpu_percent=20,
        cpu_ours_percent=5,
        gpus=(GpuSample(0, "Fake A", temperature_c=61), GpuSample(1, "Fake B", temperature_c=73)),
    )
    return FakeProbe(
        [sample],
        device_choices=[("cpu", "CPU"), ("cuda:0", "GPU 0: Fake A"), ("cuda:1", "GPU 1: Fake B")],
    )


def two_device_app(
    coordinator: RunningCoordinator, tmp_path: Path
) -> tuple[VolunteerApp, dict[str, SlowComputer], list[VolunteerEngine]]:
    probe = two_gpus()
    computers: dict[str, SlowComputer] = {}
    for name in ("cuda:0", "cuda:1"):
        computers[name] = SlowComputer(delay_s=0.1)
        computers[name].device = name
    engines: list[VolunteerEngine] = []

    def engine(config: EngineConfig, on_event: Any) -> VolunteerEngine:
        made = VolunteerEngine(config, on_event=on_event, computers=computers, probe=probe)  # type: ignore[arg-type]
        engines.append(made)
        return made

    settings = VolunteerSettings(
        coordinator=coordinator.address,
        fingerprint=coordinator.coordinator.key.fingerprint,
        device="all",
        display_name="two-gpus",
    )
    app = VolunteerApp(
        settings=settings,
        home=tmp_path / "home",
        engine_factory=engine,
        settings_file=SettingsFile(tmp_path / "volunteer.toml"),
        probe=probe,
        engine_extra={"sample_interval_s": 0.5, "give_up_after_s": 30},
        tick_s=0.5,
    )
    return app, computers, engines


def cells(app: VolunteerApp, device: str) -> list[str]:
    table = app.screen.query_one(DeviceTable)
    return [str(c) for c in table.get_row(device)]


async def test_each_device_has_a_row_and_p_and_f_act_on_the_selected_one(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    create(admin, units=200, per_unit=16)  # more than the test computes
    app, computers, engines = two_device_app(coordinator, tmp_path)
    async with app.run_test(size=(100, 40)) as pilot:
        board = app.state.board
        assert board is not None and list(board.rows) == ["cuda:0", "cuda:1"]
        await until(pilot, lambda: all(len(c.units) >= 1 for c in computers.values()), 30)
        await until(pilot, lambda: all(r.state == "busy" for r in board.rows.values()), 30)
        assert cells(app, "cuda:0")[2] == "61 °C" and cells(app, "cuda:1")[2] == "73 °C"
        await until(pilot, lambda: cells(app, "cuda:1")[3].endswith("/s"), 30)
        engine = engines[-1]

        # No device selected: p pauses every device, and p again resumes them all.
        await pilot.press("p")
        await until(pilot, lambda: all(r.state == "paused" for r in board.rows.values()), 30)
        assert app.state.paused == "paused by you"
        assert "paused" in str(app.screen.query_one("#title", Static).render())
        await pilot.press("p")
        await until(pilot, lambda: engine.device_state("cuda:0") == "running", 30)
        assert engine.device_state("cuda:1") == "running"

        # Select cuda:1's row: p pauses that device only; cuda:0 goes on computing.
        table = app.screen.query_one(DeviceTable)
        table.focus()
        await pilot.press("down")
        assert app.screen.selected_device == "cuda:1"  # type: ignore[attr-defined]
        await pilot.press("p")
        await until(pilot, lambda: board.rows["cuda:1"].state == "paused", 30)
        assert cells(app, "cuda:1")[1] == "paused: paused by you"
        assert engine.device_state("cuda:0") == "running" and app.state.paused is None
        held = len(computers["cuda:1"].units)
        done = len(computers["cuda:0"].units)
        await until(pilot, lambda: len(computers["cuda:0"].units) > done + 1, 30)
        assert len(computers["cuda:1"].units) == held
        await pilot.press("p")  # the selected device resumes
        await until(pilot, lambda: engine.device_state("cuda:1") == "running", 30)

        # f on the selected device finishes its unit and stops it; the other goes on.
        await pilot.press("f")
        await until(pilot, lambda: board.rows["cuda:1"].state == "stopped", 30)
        assert cells(app, "cuda:1")[1] == "stopped: finished"
        assert app.engine_running and app.state.stopping is None
        assert any(isinstance(e, ev.DeviceStopped) and e.device == "cuda:1" for e in app.events)
        done = len(computers["cuda:0"].units)
        await until(pilot, lambda: len(computers["cuda:0"].units) > done, 30)

        # Escape leaves the table: f finishes the whole engine.
        await pilot.press("escape")
        assert app.screen.selected_device is None  # type: ignore[attr-defined]
        await pilot.press("f")
        await until(pilot, lambda: app.state.stopped is not None, 30)
        assert app.state.stopped is not None and app.state.stopped.exit_code == 0
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)


def test_progress_of_two_devices_never_merges() -> None:
    first = EngineEvent(ev.UnitProgress("u", 10, 100, 5.0, device="cuda:0"))
    assert not first.can_replace(EngineEvent(ev.UnitProgress("v", 1, 100, 5.0, device="cuda:1")))
    assert first.can_replace(EngineEvent(ev.UnitProgress("u", 20, 100, 5.0, device="cuda:0")))
