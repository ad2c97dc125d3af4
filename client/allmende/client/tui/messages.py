"""The typed message through which the engine's events reach the UI thread.

The engine calls back on its own threads; `EngineEvent` carries one event into Textual's
message queue (posting is thread-safe). Telemetry (progress, hardware samples, round trips)
is merged: a queued telemetry event is replaced by a newer one of the same kind (and device),
so a fast GPU cannot flood the UI.
"""

from __future__ import annotations

from textual.message import Message

from allmende.client.engine.events import Event


class EngineEvent(Message):
    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event

    def can_replace(self, message: Message) -> bool:
        return (
            self.event.telemetry
            and isinstance(message, EngineEvent)
            and type(message.event) is type(self.event)
            # several devices: each one's progress is its own
            and getattr(message.event, "device", "") == getattr(self.event, "device", "")
        )


class FingerprintLooked(Message):
    """The welcome screen's lookup of a coordinator's fingerprint finished."""

    def __init__(self, address: str, fingerprint: str, error: str) -> None:
        super().__init__()
        self.address = address
        self.fingerprint = fingerprint
        self.error = error
