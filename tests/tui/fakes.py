"""Deterministic pieces for TUI tests: a fake engine that records controls, fixed clocks,
fake hardware, and the event scripts the snapshots show."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from textual.pilot import Pilot

from allmende.client.engine import EngineConfig
from allmende.client.engine import events as ev
from allmende.client.probes import FakeProbe, GpuSample, HardwareSample
from allmende.client.settings import SettingsFile, VolunteerSettings
from allmende.client.tui.app import VolunteerApp
from allmende.client.tui.messages import EngineEvent

FP = "3f2a9c1e5d7b4a60" + "c1d2e3f4a5b6c7d8" * 3
ADDRESS = "coordinator.example.org:50051"
JOB = "job-0123456789ab"
GIB = 1 << 30


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


WALL = datetime(2025, 6, 1, 21, 30, 0)


class FakeEngine:
    """Records every control call; run() blocks until stop or quit, then reports Stopped."""

    instances: ClassVar[list[FakeEngine]] = []

    def __init__(self, config: EngineConfig, on_event: Callable[[ev.Event], None]) -> None:
        self.config = config
        self.on_event = on_event
        self.calls: list[str] = []
        self.applied: list[EngineConfig] = []
        self.exit_code = 0
        self._done = threading.Event()
        FakeEngine.instances.append(self)

    def run(self) -> int:
        self.calls.append("run")
        self._done.wait(60)
        self.on_event(ev.Stopped(self.exit_code, "stopped", 3, 768, 0))
        return self.exit_code

    def stop(self) -> None:
        self.calls.append("stop")
        self.on_event(ev.Stopping("finishing the current unit, then stopping"))
        self._done.set()

    def quit(self) -> None:
        self.calls.append("quit")
        self.on_event(ev.Stopping("handing back units not finished, then stopping"))
        self._done.set()

    def pause(self) -> None:
        self.calls.append("pause")
        self.on_event(ev.Paused("paused by you"))

    def resume(self) -> None:
        self.calls.append("resume")
        self.on_event(ev.Resumed())

    def apply(self, config: EngineConfig) -> list[str]:
        self.calls.append("apply")
        self.applied.append(config)
        return []


def gpu_sample(temperature: float = 64.0) -> HardwareSample:
    return HardwareSample(
        at=0.0,
        cpu_count=16,
        cpu_percent=38.0,
        cpu_ours_percent=12.5,
        memory_used_bytes=9 * GIB,
        memory_total_bytes=32 * GIB,
        memory_ours_bytes=2 * GIB,
        gpus=(
            GpuSample(
                0,
                "NVIDIA GeForce RTX 4090",
                utilisation_percent=97.0,
                memory_used_bytes=7 * GIB,
                memory_total_bytes=24 * GIB,
                memory_ours_bytes=6 * GIB,
                temperature_c=temperature,
                power_w=312.0,
            ),
        ),
    )


def probe() -> FakeProbe:
    return FakeProbe(
        [gpu_sample()],
        device_choices=[("cpu", "CPU (16 threads)"), ("cuda:0", "GPU 0: NVIDIA GeForce RTX 4090")],
    )


CONFIGURED = VolunteerSettings(
    coordinator=ADDRESS, fingerprint=FP, display_name="ada-desk", device="cuda:0", batch_size=128
)


def make_app(
    tmp_path: Path,
    settings: VolunteerSettings = CONFIGURED,
    lookup: Callable[[str], str] = lambda address: FP,
    **kwargs: Any,
) -> tuple[VolunteerApp, FakeClock]:
    FakeEngine.instances.clear()
    clock = FakeClock()
    app = VolunteerApp(
        settings=settings,
        home=tmp_path / "home",
        engine_factory=FakeEngine,
        settings_file=SettingsFile(tmp_path / "volunteer.toml"),
        probe=probe(),
        lookup=lookup,
        clock=clock,
        wall=lambda: WALL,
        tick_s=3600,
        **kwargs,
    )
    return app, clock


def feed(app: VolunteerApp, clock: FakeClock, events: list[tuple[float, ev.Event]]) -> None:
    """Deliver events as the engine would, each at its clock time (seconds from now)."""
    start = clock.now
    for offset, event in events:
        clock.now = start + offset
        app.on_engine_event(EngineEvent(event))


async def until(pilot: Pilot[Any], condition: Callable[[], bool], timeout_s: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await pilot.pause(0.02)
    await pilot.pause()


def busy_script() -> list[tuple[float, ev.Event]]:
    """Three minutes of steady work on a GPU, then a unit half done."""
    script: list[tuple[float, ev.Event]] = [
        (0, ev.HardwareSampled(gpu_sample())),
        (0, ev.Connected(ADDRESS, FP, 23.4, "9c1e5d7b4a60" * 5 + "abcd")),
    ]
    t = 0.0
    for n in range(12):
        unit = f"{JOB}-u{n:06d}"
        t += 12 + (n % 4) * 3
        script += [
            (t - 10, ev.UnitLeased(unit, JOB, "embed-text", "all-MiniLM-L6-v2", 256, True)),
            (t - 9, ev.HardwareSampled(dataclass_at(gpu_sample(), t - 9))),
            (t - 1, ev.HardwareSampled(dataclass_at(gpu_sample(), t - 1))),
            (t, ev.UnitComputed(unit, 256, 9.0, 28.4)),
            (
                t,
                ev.ResultSubmitted(
                    unit,
                    "accepted" if n % 3 else "pending",
                    "" if n % 3 else "waiting for 1 more replica(s)",
                    120_000,
                    False,
                    256,
                ),
            ),
        ]
    unit = f"{JOB}-u{12:06d}"
    script += [
        (t + 1, ev.ResultVerdict(f"{JOB}-u000000", JOB, "valid", "", 1_310, 256)),
        (t + 1, ev.ResultVerdict(f"{JOB}-u000003", JOB, "outvoted", "the quorum agreed", 0, 256)),
        (t + 1, ev.CreditTotals(20, 1, 4, 26_200, 5_120, waiting=4)),
        (t + 1, ev.UnitRefused(f"{JOB}-u000099", "refused: signature: does not verify")),
        (t + 2, ev.UnitLeased(unit, JOB, "embed-text", "all-MiniLM-L6-v2", 256, True)),
        (t + 2, ev.RoundTrip(18.0)),
        (t + 6, ev.UnitProgress(unit, 128, 256, 30.5)),
    ]
    return script


def dataclass_at(sample: HardwareSample, at: float) -> HardwareSample:
    return dataclasses.replace(sample, at=at)
