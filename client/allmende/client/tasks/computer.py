"""Dispatch a verified work unit to the compute class of its task kind, on this machine's
chosen device (protocol/kinds/compute.py loads and checks the models)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds.compute import Computers
from allmende.protocol.models import ModelRegistry
from allmende.protocol.wire import WorkUnit

if TYPE_CHECKING:
    from allmende.client.tasks.embed_text import TextEmbedder


def pick_device(device: str) -> str:
    """Resolve "auto" to cuda:0 when a GPU is usable, else cpu; check explicit choices."""
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise InvalidArgument("--device", f"auto, cpu or cuda:N, got {device!r}")
        if not torch.cuda.is_available() or int(index) >= torch.cuda.device_count():
            raise InvalidArgument("--device", f"a CUDA device this machine has, got {device!r}")
        return f"cuda:{index}"
    raise InvalidArgument("--device", f"auto, cpu or cuda:N, got {device!r}")


class TaskComputer(Computers):
    def __init__(
        self,
        registry: ModelRegistry,
        device: str = "auto",
        batch_size: int = 64,
        threads: int | None = None,
    ) -> None:
        super().__init__(registry, pick_device(device), batch_size, threads)

    def embedder(self, model: str) -> TextEmbedder:
        """The text embedder behind `embed-text` with `model` (for benches and tests)."""
        from allmende.client.tasks.embed_text import EmbedText

        computer = self.loaded("embed-text", model)
        assert isinstance(computer, EmbedText)
        return computer.embedder

    def compute(self, unit: WorkUnit, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """`progress`, when given, is called with the rows done after each batch; an
        exception it raises (the engine's cancellation) ends the computation."""
        return self.run(unit.kind, unit.model, list(unit.texts), progress, unit.images)
