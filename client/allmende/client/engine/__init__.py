"""The volunteer engine: lease → verify → compute → submit. No UI code lives here."""

from allmende.client.engine.events import Event
from allmende.client.engine.runner import EngineConfig, VolunteerEngine

__all__ = ["EngineConfig", "Event", "VolunteerEngine"]
