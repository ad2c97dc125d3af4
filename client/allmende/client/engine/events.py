"""Typed events the engine reports; the headless logger and the TUI both consume them.

Events are called back on the engine's threads. Telemetry events (progress within a unit,
hardware samples, round-trip times) come often; the headless log leaves them out and the TUI
merges them, so a fast GPU cannot flood either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from allmende.client.probes import HardwareSample


@dataclass(frozen=True)
class Event:
    name: ClassVar[str] = "event"
    # High-rate status, not a change of state: not logged line by line.
    telemetry: ClassVar[bool] = False

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if values.get("device", None) == "":
            del values["device"]  # one device: the record reads as it did before lanes
        return {"event": self.name, **values}

    def as_line(self) -> str:
        parts = [f"event={self.name}"]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "device" and value == "":
                continue
            text = f"{value:.3f}" if isinstance(value, float) else str(value)
            if " " in text or not text:
                text = '"' + text.replace('"', "'") + '"'
            parts.append(f"{f.name}={text}")
        return " ".join(parts)


@dataclass(frozen=True)
class Connected(Event):
    name: ClassVar[str] = "connected"
    address: str
    fingerprint: str
    rtt_ms: float
    volunteer_id: str


@dataclass(frozen=True)
class KeyRotated(Event):
    """The coordinator's key is not the pinned one but a successor it vouched for."""

    name: ClassVar[str] = "key.rotated"
    pinned: str
    current: str


@dataclass(frozen=True)
class Retrying(Event):
    name: ClassVar[str] = "retrying"
    error: str
    delay_s: float


@dataclass(frozen=True)
class Reconnected(Event):
    """The coordinator answered again after failed attempts."""

    name: ClassVar[str] = "reconnected"
    down_s: float


@dataclass(frozen=True)
class RoundTrip(Event):
    name: ClassVar[str] = "rtt"
    telemetry: ClassVar[bool] = True
    rtt_ms: float


@dataclass(frozen=True)
class UnitLeased(Event):
    name: ClassVar[str] = "unit.leased"
    unit_id: str
    job_id: str
    kind: str
    model: str
    items: int
    # True when the computer reports progress within the unit (UnitProgress events follow);
    # otherwise a UI can only estimate it from earlier units' rates.
    measured_progress: bool = False
    # The lane's device when the engine drives several ("" with one).
    device: str = ""


@dataclass(frozen=True)
class UnitProgress(Event):
    name: ClassVar[str] = "unit.progress"
    telemetry: ClassVar[bool] = True
    unit_id: str
    done: int
    total: int
    items_per_s: float
    # The lane's device when the engine drives several ("" with one).
    device: str = ""


@dataclass(frozen=True)
class UnitReleased(Event):
    """A leased unit handed back uncomputed (quitting, cancelled)."""

    name: ClassVar[str] = "unit.released"
    unit_id: str
    reason: str
    # The work given up with it: rows computed of `items`, and the seconds spent on them
    # (0 for a unit handed back before it was started).
    done: int = 0
    items: int = 0
    seconds: float = 0.0
    # The lane's device when the engine drives several ("" with one).
    device: str = ""


@dataclass(frozen=True)
class UnitRefused(Event):
    name: ClassVar[str] = "unit.refused"
    unit_id: str
    reason: str


@dataclass(frozen=True)
class UnitComputed(Event):
    name: ClassVar[str] = "unit.computed"
    unit_id: str
    items: int
    seconds: float
    items_per_s: float
    # The lane's device when the engine drives several ("" with one).
    device: str = ""


@dataclass(frozen=True)
class ResultSubmitted(Event):
    name: ClassVar[str] = "result.submitted"
    unit_id: str
    status: str
    reason: str
    bytes: int
    # True when the result came from the spool (computed by an earlier run or attempt).
    resent: bool = False
    # Rows in the result (the unit's distinct inputs).
    items: int = 0


@dataclass(frozen=True)
class ResultVerdict(Event):
    """The coordinator's final word on a result: valid (with the credit granted), invalid
    (with the reason), outvoted (the quorum agreed on other results) or cancelled."""

    name: ClassVar[str] = "result.verdict"
    unit_id: str
    job_id: str
    verdict: str
    reason: str
    credit: int
    items: int


@dataclass(frozen=True)
class CreditTotals(Event):
    """This volunteer's lifetime record at the coordinator, as `volunteers list` shows it.

    `remembered`: read from disk at start, before the coordinator answered."""

    name: ClassVar[str] = "credit"
    results_valid: int
    results_invalid: int
    results_pending: int
    credit: int
    items_valid: int
    waiting: int = 0  # results this volunteer still waits to hear about
    remembered: bool = False


@dataclass(frozen=True)
class ResultSpooled(Event):
    """A finished result could not be sent now; it is on disk and will be sent later."""

    name: ClassVar[str] = "result.spooled"
    unit_id: str
    reason: str
    waiting: int


@dataclass(frozen=True)
class Paused(Event):
    name: ClassVar[str] = "paused"
    reason: str
    # The lane's device when the engine drives several ("" with one).
    device: str = ""


@dataclass(frozen=True)
class Resumed(Event):
    name: ClassVar[str] = "resumed"
    # The lane's device when the engine drives several ("" with one).
    device: str = ""


@dataclass(frozen=True)
class Stopping(Event):
    """A stop was asked for; `how` says what happens to the current unit."""

    name: ClassVar[str] = "stopping"
    how: str
    # The lane's device when the engine drives several ("" with one).
    device: str = ""


@dataclass(frozen=True)
class DeviceStopped(Event):
    """One lane of several stopped (finished as asked, idle, or failed); the others go on."""

    name: ClassVar[str] = "device.stopped"
    device: str
    reason: str


@dataclass(frozen=True)
class SettingsApplied(Event):
    name: ClassVar[str] = "settings.applied"
    changes: str


@dataclass(frozen=True)
class HardwareSampled(Event):
    name: ClassVar[str] = "hardware"
    telemetry: ClassVar[bool] = True
    sample: HardwareSample


@dataclass(frozen=True)
class Idle(Event):
    name: ClassVar[str] = "idle"
    work_remaining: bool
    retry_s: float
    notice: str = ""  # the coordinator's reason, e.g. a daily quota reached
    # The lane's device when the engine drives several ("" with one).
    device: str = ""


@dataclass(frozen=True)
class ModelFetching(Event):
    """A unit names a served model this volunteer lacks: its signed manifest checked out,
    its files are being downloaded (`cached_bytes` of them were already here)."""

    name: ClassVar[str] = "model.fetching"
    model: str
    pin: str
    files: int
    total_bytes: int
    cached_bytes: int


@dataclass(frozen=True)
class ModelProgress(Event):
    """Bytes of a model download so far, and the file it is in. Sent at each tenth of the
    model, so the headless log gets about ten lines, not one per chunk or file."""

    name: ClassVar[str] = "model.progress"
    model: str
    done_bytes: int
    total_bytes: int
    file: str = ""


@dataclass(frozen=True)
class ModelReady(Event):
    """Every file of the model matched the signed manifest; it is registered and cached."""

    name: ClassVar[str] = "model.ready"
    model: str
    pin: str
    downloaded_bytes: int
    seconds: float
    folder: str


@dataclass(frozen=True)
class Stopped(Event):
    name: ClassVar[str] = "stopped"
    exit_code: int
    reason: str
    units: int
    items: int
    # Finished results left on disk, to be sent on the next start.
    spooled: int = 0
    # Units handed back uncomputed or part-computed when stopping, and the work they had
    # got (rows computed, seconds spent), given up with them.
    handed_back: int = 0
    handed_back_rows: int = 0
    handed_back_s: float = 0.0
