"""The computer that turns a verified unit into rows, and timing it.

A computer whose ``compute`` takes a ``progress`` callback reports progress within a unit and
can be paused and cancelled between batches; others pause and stop between units. The engine
makes its own computer (tasks/, which alone imports torch, lazily) unless it was given one.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from allmende.client.engine import events as ev
from allmende.client.engine.config import EngineConfig
from allmende.client.engine.control import Cancelled
from allmende.protocol.models import ModelRegistry
from allmende.protocol.wire import WorkUnit

# Progress events within a unit are sent at most this often.
PROGRESS_INTERVAL_S = 0.1


class Computer(Protocol):
    """Computes a verified unit. A computer whose ``compute`` also accepts a keyword
    argument ``progress`` (called with the rows done so far, between batches) gets progress
    events, pausing and cancellation within a unit."""

    device: str

    def compute(self, unit: WorkUnit) -> np.ndarray: ...


def default_computer(registry: ModelRegistry, config: EngineConfig) -> Computer:
    from allmende.client.tasks.computer import TaskComputer
    from allmende.client.tasks.gpu_memory import cap_gpu_memory

    fetcher = None
    if config.fetch_urls:  # the volunteer opted in: URL rows are fetched (client/fetch/)
        from allmende.client.fetch.addresses import ALLOW_ALL
        from allmende.client.fetch.pool import UrlFetcher

        fetcher = UrlFetcher(ALLOW_ALL if config.allow_private_addresses else ())
    computer = TaskComputer(
        registry, config.device, config.batch_size, config.threads, fetcher=fetcher
    )
    if config.gpu_memory_gb > 0:
        cap_gpu_memory(computer.device, config.gpu_memory_gb)
    return computer


def takes_progress(computer: Computer) -> bool:
    try:
        parameters = inspect.signature(computer.compute).parameters
    except (TypeError, ValueError):
        return False
    return "progress" in parameters


def compute_unit(
    computer: Computer,
    unit: WorkUnit,
    measured: bool,
    on_event: Callable[[ev.Event], None],
    wait_while_paused: Callable[[], float],
) -> tuple[Any, float]:
    """Compute one unit; returns the rows and the seconds spent (pauses left out).

    With `measured` (the computer takes ``progress``) it reports progress and, between
    batches, calls `wait_while_paused`, which returns the seconds it was paused."""
    started = time.perf_counter()
    if not measured:
        matrix = computer.compute(unit)
        return matrix, time.perf_counter() - started
    total = len(unit.texts)
    last_report = started
    paused_s = 0.0  # paused time within the unit computing now
    rows_done = 0

    def progress(done: int) -> None:
        nonlocal last_report, paused_s, rows_done
        rows_done = done
        now = time.perf_counter()
        if now - last_report >= PROGRESS_INTERVAL_S or done >= total:
            last_report = now
            busy = now - started - paused_s
            rate = done / busy if busy > 0 else 0.0
            on_event(ev.UnitProgress(unit.unit_id, done, total, rate))
        if done < total:  # after the last batch the result is worth keeping
            paused_s += wait_while_paused()

    compute: Any = computer.compute
    try:
        matrix = compute(unit, progress=progress)
    except Cancelled as cancelled:
        cancelled.done = rows_done
        cancelled.seconds = time.perf_counter() - started - paused_s
        raise
    return matrix, time.perf_counter() - started - paused_s
