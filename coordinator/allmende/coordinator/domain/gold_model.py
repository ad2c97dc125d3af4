"""Gold answers computed on the coordinator, with the same registry model volunteers run.

Optional (`coordinator serve --gold-compute`): it needs torch and the model's weights on
the coordinator. With it, a job has gold rows from its first lease; without it, gold rows
come from units that distinct volunteers agreed on, so the first units of a job are
checked by replication alone. The model is loaded on first use and kept.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from allmende.coordinator.store.records import JobSettings
from allmende.protocol.models import ModelRegistry
from allmende.protocol.wire import WorkUnit


class ModelGold:
    """A `GoldComputer`: answers for texts of a job, computed here."""

    def __init__(self, registry: ModelRegistry | None = None, device: str = "cpu") -> None:
        self.registry = registry or ModelRegistry()
        self.device = device
        self._computer: Any = None
        self._lock = threading.Lock()

    def __call__(self, settings: JobSettings, texts: list[str]) -> np.ndarray:
        with self._lock:
            if self._computer is None:
                # torch only here, and only when gold answers are wanted
                from allmende.client.tasks.computer import TaskComputer

                self._computer = TaskComputer(self.registry, self.device)
            unit = WorkUnit(
                unit_id="gold",
                job_id="",
                kind=settings.kind,
                model=settings.model,
                model_sha256=settings.model_sha256,
                texts=tuple(texts),
                dims=settings.dims,
                result_dtype=settings.result_dtype,
                created_ms=0,
            )
            return np.asarray(self._computer.compute(unit), dtype=np.float32)
