"""Running a kind's compute class: imported by name, only when something computes.

The volunteer computes; a coordinator that computes gold answers itself
(`coordinator serve --gold-compute`) runs the same class, as a trusted local volunteer
would. Neither role imports the other's code for it: the class is named in the kind's
declaration and imported here, lazily, from the installed `allmende[volunteer]` extra.
Models load once per `Computers`, after their files were checked against the pinned hash.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, cast

import numpy as np

from allmende.protocol.errors import FailedPrecondition, InvalidArgument
from allmende.protocol.kinds import KINDS, check_model_for_kind
from allmende.protocol.kinds.base import KindSpec
from allmende.protocol.models import ModelRegistry, ModelSpec
from allmende.protocol.weights import resolve_model_dir, verify_model

# Model loading is serialised process-wide: transformers' lazy imports are not thread-safe,
# and two engines in one process (the demo, tests) may load at the same moment.
_LOAD_LOCK = threading.Lock()


class Computer(Protocol):
    """What a compute class offers (see kinds/base.py). Classes of kinds that take images
    also accept ``images=``: one image file's bytes per row, beside ``texts``."""

    def compute(
        self, texts: list[str], progress: Callable[[int], None] | None = None
    ) -> np.ndarray: ...

    def warm_up(self) -> None: ...


class ComputerClass(Protocol):
    def __call__(
        self, model_dir: Path, spec: ModelSpec, device: str, batch_size: int, threads: int | None
    ) -> Computer: ...


def compute_class(kind: KindSpec) -> ComputerClass:
    module_name, _, attr = kind.compute.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FailedPrecondition(
            f"computing {kind.name} needs the volunteer's compute code and its model runtime "
            f"(pip install 'allmende[volunteer]'): {exc}"
        ) from None
    return cast(ComputerClass, getattr(module, attr))


class Computers:
    """Compute classes with their models loaded, one per (kind, model), on one device."""

    def __init__(
        self,
        registry: ModelRegistry,
        device: str = "cpu",
        batch_size: int = 64,
        threads: int | None = None,
    ) -> None:
        self.registry = registry
        self.device = device
        self.batch_size = batch_size
        self.threads = threads
        self._loaded: dict[tuple[str, str], Computer] = {}

    def loaded(self, kind_name: str, model: str) -> Computer:
        """The compute class of `kind_name` with `model` loaded, checked against the registry."""
        kind = KINDS.get(kind_name)
        if kind is None:
            raise InvalidArgument("kind", f"a task kind this client computes, got {kind_name!r}")
        with _LOAD_LOCK:
            if (kind.name, model) not in self._loaded:
                spec = self.registry.get(model)
                check_model_for_kind(kind, spec)
                model_dir = resolve_model_dir(spec)
                verify_model(model_dir, spec)
                self._loaded[(kind.name, model)] = compute_class(kind)(
                    model_dir, spec, self.device, self.batch_size, self.threads
                )
            return self._loaded[(kind.name, model)]

    def run(
        self,
        kind: str,
        model: str,
        texts: list[str],
        progress: Callable[[int], None] | None = None,
        images: Sequence[bytes] = (),
    ) -> np.ndarray:
        """One float32 matrix, rows by the kind's result width. `progress`, when given, is
        called with the rows done after each batch; an exception it raises ends the run.
        `images`: one per row for kinds that take images (their inputs say so)."""
        computer = self.loaded(kind, model)
        if KINDS[kind].takes_images:
            found = computer.compute(texts, progress, images=images)  # type: ignore[call-arg]
        else:
            found = computer.compute(texts, progress)
        return np.asarray(found, dtype=np.float32)
