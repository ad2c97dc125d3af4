"""Typed events the engine reports; the headless logger and the TUI both consume them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    name: ClassVar[str] = "event"

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.name, **asdict(self)}

    def as_line(self) -> str:
        parts = [f"event={self.name}"]
        for f in fields(self):
            value = getattr(self, f.name)
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
class Retrying(Event):
    name: ClassVar[str] = "retrying"
    error: str
    delay_s: float


@dataclass(frozen=True)
class UnitLeased(Event):
    name: ClassVar[str] = "unit.leased"
    unit_id: str
    job_id: str
    kind: str
    model: str
    items: int


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


@dataclass(frozen=True)
class ResultSubmitted(Event):
    name: ClassVar[str] = "result.submitted"
    unit_id: str
    status: str
    reason: str
    bytes: int


@dataclass(frozen=True)
class Idle(Event):
    name: ClassVar[str] = "idle"
    work_remaining: bool
    retry_s: float


@dataclass(frozen=True)
class Stopped(Event):
    name: ClassVar[str] = "stopped"
    exit_code: int
    reason: str
    units: int
    items: int
