"""Dispatch a verified work unit to the compute class of its task kind, on this machine's
chosen device (protocol/kinds/compute.py loads and checks the models).

A unit with URL rows is computed only with a fetcher (the volunteer opted in with
--fetch-urls): the fetches start together and the compute class decodes each row once its
fetch is done (client/fetch/, tasks/images.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from allmende.protocol.errors import FailedPrecondition, InvalidArgument
from allmende.protocol.kinds.compute import Computers
from allmende.protocol.models import ModelRegistry
from allmende.protocol.wire import WorkUnit

if TYPE_CHECKING:
    from allmende.client.fetch.pool import UrlFetcher
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
        fetcher: UrlFetcher | None = None,
    ) -> None:
        """`fetcher`: fetches URL rows; without one a unit with URL rows is refused."""
        super().__init__(registry, pick_device(device), batch_size, threads)
        self.fetcher = fetcher

    def embedder(self, model: str) -> TextEmbedder:
        """The text embedder behind `embed-text` with `model` (for benches and tests)."""
        from allmende.client.tasks.embed_text import EmbedText

        computer = self.loaded("embed-text", model)
        assert isinstance(computer, EmbedText)
        return computer.embedder

    def compute(self, unit: WorkUnit, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """`progress`, when given, is called with the rows done after each batch; an
        exception it raises (the engine's cancellation) ends the computation."""
        if not any(unit.urls):
            return self.run(unit.kind, unit.model, list(unit.texts), progress, unit.images)
        if self.fetcher is None:
            raise FailedPrecondition(
                f"unit {unit.unit_id} has rows to fetch from URLs, and this volunteer does "
                "not fetch (--fetch-urls is off)"
            )
        computer = self.loaded(unit.kind, unit.model)
        fetches = self.fetcher.start(unit.urls)
        images = unit.images or (b"",) * len(unit.urls)
        sources = [f if f is not None else i for f, i in zip(fetches, images, strict=True)]
        try:
            found = computer.compute(list(unit.texts), progress, images=sources)  # type: ignore[call-arg]
        finally:
            for fetch in fetches:
                if fetch is not None:
                    fetch.cancel()  # those not started yet, when the unit was cancelled
        return np.asarray(found, dtype=np.float32)
