"""A running engine on a thread, a slow computer that reports progress, and waiting on events."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from allmende.client.engine import EngineConfig, VolunteerEngine
from allmende.client.engine import events as ev
from allmende.protocol.wire import WorkUnit
from tests.integration.volunteers import text_vector


class SlowComputer:
    """Honest rows, computed in batches with a delay, reporting progress like TaskComputer.

    `gate`, when given, holds the first batch until it is set (to stop a coordinator while a
    unit computes, for example)."""

    device = "cpu"

    def __init__(
        self, delay_s: float = 0.02, batch: int = 4, gate: threading.Event | None = None
    ) -> None:
        self.delay_s = delay_s
        self.batch = batch
        self.gate = gate
        self.started = threading.Event()
        self.units: list[str] = []

    def compute(self, unit: WorkUnit, progress: Callable[[int], None] | None = None) -> np.ndarray:
        self.units.append(unit.unit_id)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        for start in range(0, len(unit.texts), self.batch):
            time.sleep(self.delay_s)
            if progress is not None:
                progress(min(start + self.batch, len(unit.texts)))
        return np.stack([text_vector(t, unit.dims) for t in unit.texts])


@dataclass
class Running:
    engine: VolunteerEngine
    thread: threading.Thread
    events: list[ev.Event] = field(default_factory=list)
    code: list[int] = field(default_factory=list)

    def of(self, kind: type[ev.Event]) -> list[ev.Event]:
        return [e for e in list(self.events) if isinstance(e, kind)]

    def wait_for(
        self,
        kind: type[ev.Event],
        timeout_s: float = 20,
        where: Callable[[ev.Event], bool] = lambda e: True,
    ) -> ev.Event:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in list(self.events):
                if isinstance(event, kind) and where(event):
                    return event
            time.sleep(0.01)
        raise AssertionError(f"no {kind.__name__} within {timeout_s} s: {self.events}")

    def finish(self, timeout_s: float = 30) -> ev.Stopped:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "engine did not stop"
        stopped = self.events[-1]
        assert isinstance(stopped, ev.Stopped), self.events[-5:]
        return stopped


def start(config: EngineConfig, computer: object, **kwargs: object) -> Running:
    events: list[ev.Event] = []
    engine = VolunteerEngine(config, on_event=events.append, computer=computer, **kwargs)  # type: ignore[arg-type]
    running = Running(engine, threading.Thread(target=lambda: None), events)
    running.thread = threading.Thread(target=lambda: running.code.append(engine.run()), daemon=True)
    running.thread.start()
    return running
