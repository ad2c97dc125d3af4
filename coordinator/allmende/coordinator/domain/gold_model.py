"""Gold answers computed on the coordinator, with the same registry model volunteers run.

Optional (`coordinator serve --gold-compute`): it needs the volunteer's compute code (the
`allmende[volunteer]` extra: torch and the model runtime) and the model's files on the
coordinator. With it, a job has gold rows from its first lease; without it, gold rows come
from units that distinct volunteers agreed on, so the first units of a job are checked by
replication alone. The kind's compute class is found through its declaration
(protocol/kinds/compute.py), so the domain imports no compute code; models load on first
use and are kept.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from allmende.coordinator.store.records import JobSettings
from allmende.protocol.kinds.compute import Computers
from allmende.protocol.models import ModelRegistry


class ModelGold:
    """A `GoldComputer`: answers for texts of a job, computed here."""

    def __init__(self, registry: ModelRegistry | None = None, device: str = "cpu") -> None:
        self.computers = Computers(registry or ModelRegistry(), device)
        self._lock = threading.Lock()

    def share_registry(self, registry: ModelRegistry) -> None:
        """Compute with the coordinator's own registry, which holds the models it serves."""
        self.computers.registry = registry

    def __call__(
        self, settings: JobSettings, texts: list[str], images: Sequence[bytes] = ()
    ) -> np.ndarray:
        with self._lock:
            return self.computers.run(settings.kind, settings.model, texts, images=images)
