"""Dispatch a verified work unit to the compute code of its task kind.

Models load once per process and are checked against their pinned weights hash first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from allmende.client.tasks.embed_text import TextEmbedder, resolve_model_dir, verify_weights
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.models import ModelRegistry
from allmende.protocol.wire import WorkUnit

# Model loading is serialised process-wide: transformers' lazy imports are not thread-safe,
# and two engines in one process (the demo, tests) may load at the same moment.
_LOAD_LOCK = threading.Lock()


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


class TaskComputer:
    def __init__(
        self,
        registry: ModelRegistry,
        device: str = "auto",
        batch_size: int = 64,
        threads: int | None = None,
    ) -> None:
        self.registry = registry
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.threads = threads
        self._models: dict[str, TextEmbedder] = {}

    def embedder(self, model: str) -> TextEmbedder:
        with _LOAD_LOCK:
            if model not in self._models:
                spec = self.registry.get(model)
                model_dir = resolve_model_dir(spec)
                verify_weights(model_dir, spec.weights_sha256)
                self._models[model] = TextEmbedder(
                    model_dir,
                    device=self.device,
                    batch_size=self.batch_size,
                    max_seq_length=spec.max_seq_length,
                    threads=self.threads,
                )
            return self._models[model]

    def warm_up(self, model: str) -> None:
        self.embedder(model).embed(["warm up"])

    def compute(self, unit: WorkUnit, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """`progress`, when given, is called with the rows done after each batch; an
        exception it raises (the engine's cancellation) ends the computation."""
        if unit.kind == "embed-text":
            return self.embedder(unit.model).embed(list(unit.texts), progress=progress)
        raise InvalidArgument("kind", f"a task kind this client computes, got {unit.kind!r}")
