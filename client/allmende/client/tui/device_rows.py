"""The devices of an engine that drives several (--device cuda:0,cuda:1 or all): one row
each with its state (busy, idle, paused, finishing, stopped), its temperature and its
throughput, folded from the events that name a device. Plain Python (no textual), like
state.py; devices.py draws it. With one device there is no board.
"""

from __future__ import annotations

from dataclasses import dataclass

from allmende.client.engine import events as ev
from allmende.client.engine.devices import parse_devices
from allmende.client.probes import HardwareProbe, HardwareSample
from allmende.protocol.errors import AllmendeError


def lanes_of(device: str, probe: HardwareProbe | None) -> list[str]:
    """The devices an engine for this setting drives, as the engine itself parses it."""
    try:
        return parse_devices(device, probe)
    except AllmendeError:
        return [device]  # the engine reports the bad setting when it starts


@dataclass
class DeviceRow:
    device: str
    state: str = "starting"  # busy, idle, paused, finishing, stopped
    detail: str = ""  # why paused or stopped
    rate: float | None = None  # items/s of its last unit
    temperature_c: float | None = None
    paused_by_you: bool = False  # asked here; the engine's Paused event confirms it

    @property
    def finished(self) -> bool:
        return self.state in ("finishing", "stopped")


class DeviceBoard:
    """The rows, in the engine's order, updated from events that carry a device."""

    def __init__(self, devices: list[str]) -> None:
        self.rows = {d: DeviceRow(d) for d in devices}

    def reset(self) -> None:
        """A new engine: every device starts again."""
        self.rows = {d: DeviceRow(d) for d in self.rows}

    def apply(self, event: ev.Event) -> str | None:
        """Take an event for one device; returns a log line for it, or None."""
        device = getattr(event, "device", "")
        if isinstance(event, ev.HardwareSampled):
            self._temperatures(event.sample)
            return None
        row = self.rows.get(device)
        if row is None:
            return None
        if isinstance(event, ev.UnitLeased | ev.UnitProgress) and not row.finished:
            row.state, row.detail = "busy", ""
            if isinstance(event, ev.UnitProgress) and event.items_per_s > 0:
                row.rate = event.items_per_s
        elif isinstance(event, ev.UnitComputed):
            row.rate = event.items_per_s
        elif isinstance(event, ev.Idle) and not row.finished:
            row.state, row.detail = "idle", event.notice
        elif isinstance(event, ev.Paused):
            row.state, row.detail = "paused", event.reason
            return f"{device}: {event.reason}"
        elif isinstance(event, ev.Resumed):
            row.state, row.detail = "busy", ""
            return f"{device}: resumed"
        elif isinstance(event, ev.Stopping):
            row.state = "finishing"
            return f"{device}: {event.how}"
        elif isinstance(event, ev.DeviceStopped):
            row.state, row.detail = "stopped", event.reason
            return f"{device}: stopped ({event.reason})"
        return None

    def _temperatures(self, sample: HardwareSample) -> None:
        for row in self.rows.values():
            if row.device == "cpu":
                row.temperature_c = sample.cpu_temperature_c
            else:
                gpu = sample.gpu(row.device)
                row.temperature_c = None if gpu is None else gpu.temperature_c

    def all_paused(self) -> str | None:
        """The reason when every device that still runs is paused for the same one."""
        running = [r for r in self.rows.values() if r.state != "stopped"]
        reasons = {r.detail for r in running if r.state == "paused"}
        if running and len(reasons) == 1 and all(r.state == "paused" for r in running):
            return reasons.pop()
        return None

    def cells(self, row: DeviceRow) -> tuple[str, str, str, str]:
        state = f"{row.state}: {row.detail}" if row.detail else row.state
        celsius = "-" if row.temperature_c is None else f"{row.temperature_c:.0f} °C"
        rate = "-" if row.rate is None else f"{row.rate:,.1f}/s"
        return row.device, state, celsius, rate
