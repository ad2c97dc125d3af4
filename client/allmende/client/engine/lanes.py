"""One lane per compute device: its computer, its events, and running several at once.

A lane is what the engine's work loop needs to know about one device (devices.py): the
computer for it, whether that computer must be rebuilt for new settings, whether it computes
now (for the energy meter), and the event callback that names the device. The engine with
one device has one lane named None, whose events carry no device, so it reads as before.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass

from allmende.client.engine import events as ev
from allmende.client.engine.compute import Computer


@dataclass
class Lane:
    """One device of the engine. `name` is None for the only device of a one-device engine."""

    name: str | None
    device: str
    computer: Computer | None = None
    owns_computer: bool = True
    rebuild: bool = False  # guarded by the engine's control state, as the settings are
    computing: bool = False
    # How the lane ended ("" while it runs): finished, no work left, or the failure.
    ended: str = ""

    def tag(self, on_event: Callable[[ev.Event], None]) -> Callable[[ev.Event], None]:
        """`on_event`, with the lane's device written into events that have the field."""
        name = self.name
        if name is None:
            return on_event

        def emit(event: ev.Event) -> None:
            named = any(f.name == "device" for f in dataclasses.fields(event))
            if named and not getattr(event, "device", ""):
                event = dataclasses.replace(event, device=name)  # type: ignore[call-arg]
            on_event(event)

        return emit


def run_lanes(
    lanes: list[Lane],
    work: Callable[[Lane], None],
    stop_all: Callable[[], None],
    on_event: Callable[[ev.Event], None],
) -> None:
    """Run `work` for every lane on its own thread until all end; a lane that fails stops
    the others (the failure may be the coordinator's or the identity's) and is raised."""
    if len(lanes) == 1:
        work(lanes[0])
        return
    failures: list[BaseException] = []
    lock = threading.Lock()

    def one(lane: Lane) -> None:
        try:
            work(lane)
            lane.ended = lane.ended or "finished"
        except BaseException as exc:  # handed to the caller's thread below
            lane.ended = f"failed: {exc}"
            with lock:
                failures.append(exc)
            stop_all()
        on_event(ev.DeviceStopped(lane.device, lane.ended))

    threads = [
        threading.Thread(target=one, args=(lane,), name=f"lane-{lane.device}", daemon=True)
        for lane in lanes
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
