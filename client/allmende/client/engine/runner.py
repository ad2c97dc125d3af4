"""The volunteer engine: lease → verify → compute → encode → sign → submit, in a loop.

The engine trusts nothing it receives: the coordinator's key must match the pinned
fingerprint, every unit's signature must verify over the exact bytes received, and the unit
must name a model and weights hash from the local registry. A unit that fails is handed back
with the reason. Submissions run on their own thread so the next unit computes meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from allmende.client.connection import CoordinatorClient, RemoteError
from allmende.client.engine import events as ev
from allmende.client.engine.identity import default_home, load_identity
from allmende.protocol import codec
from allmende.protocol.errors import AllmendeError, IntegrityError
from allmende.protocol.models import ModelRegistry
from allmende.protocol.signing import CTX_REGISTER, fingerprint, normalise_fingerprint
from allmende.protocol.tasks import RESULT_DTYPES, TASK_KINDS
from allmende.protocol.wire import (
    CODEC,
    ResultEnvelope,
    WorkUnit,
    open_unit,
    sign_envelope,
)
from allmende.v1 import allmende_pb2 as pb

log = logging.getLogger("allmende.volunteer")

CLIENT_VERSION = "allmende/0.1.0"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4


class Computer(Protocol):
    device: str

    def compute(self, unit: WorkUnit) -> np.ndarray: ...


@dataclass
class EngineConfig:
    coordinator: str
    fingerprint: str
    home: Path = field(default_factory=default_home)
    device: str = "auto"
    batch_size: int = 64
    threads: int | None = None
    exit_when_idle: bool = False
    display_name: str = ""
    # Give up after this many units in a row were refused (they cannot be trusted).
    max_refusals: int = 3
    # Give up when the coordinator stays unreachable this long (None: keep trying).
    give_up_after_s: float | None = None
    max_backoff_s: float = 30.0


# What the compute loop hands the submit thread: lease, unit, rows, device, seconds.
_Computed = tuple[pb.Lease, WorkUnit, np.ndarray, str, float]


class Stop(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class VolunteerEngine:
    def __init__(
        self,
        config: EngineConfig,
        on_event: Callable[[ev.Event], None] = lambda e: None,
        computer: Computer | None = None,
        registry: ModelRegistry | None = None,
    ) -> None:
        self.config = config
        self.on_event = on_event
        self.registry = registry or ModelRegistry()
        self._computer = computer
        self._stop = threading.Event()
        self._submit_queue: queue.Queue[_Computed | None] = queue.Queue(2)
        self._submit_error: Stop | None = None
        self.units_done = 0
        self.items_done = 0
        self.volunteer_id = ""

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask the engine to stop after the current unit."""
        self._stop.set()

    # ------------------------------------------------------------------ main loop

    def run(self) -> int:
        """Run until idle (with exit_when_idle), stopped, or refused. Returns an exit code."""
        try:
            pinned = normalise_fingerprint(self.config.fingerprint)
        except AllmendeError as exc:
            return self._finish(EXIT_ERROR, exc.message)
        client = CoordinatorClient(self.config.coordinator)
        submitter = threading.Thread(
            target=self._submit_loop, args=(client,), name="submit", daemon=True
        )
        try:
            coordinator_key = self._connect(client, pinned)
            computer = self._computer or self._default_computer()
            submitter.start()
            self._work(client, computer, coordinator_key)
            code, reason = EXIT_OK, "stopped" if self._stop.is_set() else "no work left"
        except Stop as stop:
            code, reason = stop.code, stop.reason
        except AllmendeError as exc:
            code, reason = EXIT_ERROR, exc.message
        except RemoteError as exc:
            code, reason = EXIT_ERROR, f"coordinator refused ({exc.code}): {exc.details}"
        except Exception as exc:  # a bug or a broken installation: report it, do not hang
            log.exception("volunteer engine failed")
            code, reason = EXIT_ERROR, f"unexpected error: {exc!r}"
        finally:
            if submitter.is_alive():
                self._submit_queue.put(None)
                submitter.join()
            client.close()
        if self._submit_error is not None and code == EXIT_OK:
            code, reason = self._submit_error.code, self._submit_error.reason
        return self._finish(code, reason)

    def _finish(self, code: int, reason: str) -> int:
        self.on_event(ev.Stopped(code, reason, self.units_done, self.items_done))
        return code

    def _default_computer(self) -> Computer:
        from allmende.client.tasks.computer import TaskComputer

        return TaskComputer(
            self.registry, self.config.device, self.config.batch_size, self.config.threads
        )

    def _retrying(self, what: Callable[[], object]) -> object:
        """Call `what`, retrying transient failures with jittered exponential backoff."""
        delay = 0.5
        started = time.monotonic()
        while True:
            try:
                return what()
            except RemoteError as exc:
                if not exc.transient:
                    raise
                limit = self.config.give_up_after_s
                if limit is not None and time.monotonic() - started > limit:
                    raise Stop(
                        EXIT_UNREACHABLE,
                        f"coordinator {self.config.coordinator} unreachable: {exc.details}",
                    ) from None
                wait = random.uniform(0.5, 1.0) * delay
                self.on_event(ev.Retrying(exc.details, wait))
                if self._stop.wait(wait):
                    raise Stop(EXIT_OK, "stopped") from None
                delay = min(delay * 2, self.config.max_backoff_s)

    def _connect(self, client: CoordinatorClient, pinned: str) -> bytes:
        started = time.perf_counter()
        info = self._retrying(client.info)
        assert isinstance(info, pb.GetCoordinatorInfoResponse)
        rtt = (time.perf_counter() - started) * 1000
        actual = fingerprint(info.public_key) if len(info.public_key) == 32 else "(no key)"
        if actual != pinned:
            raise Stop(
                EXIT_REFUSED,
                f"refusing all work: coordinator key fingerprint {actual} does not match the "
                f"pinned fingerprint {pinned}",
            )
        key = load_identity(self.config.home)
        request = pb.RegisterVolunteerRequest(
            public_key=key.public_key,
            display_name=self.config.display_name,
            client_version=CLIENT_VERSION,
            hardware=_hardware(),
            signature=key.sign(CTX_REGISTER, key.public_key),
        )
        volunteer_id = self._retrying(lambda: client.register(request))
        assert isinstance(volunteer_id, str)
        self.volunteer_id = volunteer_id
        self._key = key
        client.signer = key  # every later volunteer call is signed with this key
        self.on_event(ev.Connected(self.config.coordinator, pinned, rtt, volunteer_id))
        return bytes(info.public_key)

    def _work(self, client: CoordinatorClient, computer: Computer, coordinator_key: bytes) -> None:
        """Lease, verify and compute units until idle or stopped.

        The next lease is fetched while the current unit computes, and results are encoded,
        signed and sent on the submit thread, so the compute device rarely waits.
        """
        refusals = 0
        fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")
        ahead: Future[object] | None = None
        try:
            while not self._stop.is_set():
                if self._submit_error is not None:
                    raise self._submit_error
                response = ahead.result() if ahead else self._lease(client)
                ahead = None
                assert isinstance(response, pb.LeaseWorkResponse)
                if not response.HasField("lease"):
                    if self.config.exit_when_idle and not response.work_remaining:
                        self._submit_queue.join()  # nothing left in flight
                        return
                    wait = max(response.retry_after_ms, 200) / 1000
                    self.on_event(ev.Idle(response.work_remaining, wait))
                    self._stop.wait(wait)
                    continue
                lease = response.lease
                try:
                    unit = self._check_unit(lease, coordinator_key)
                except AllmendeError as exc:
                    refusals += 1
                    reason = f"refused: {exc.message}"
                    self.on_event(ev.UnitRefused(_unit_id_hint(lease), reason))
                    self._release(client, lease.lease_id, reason)
                    if refusals >= self.config.max_refusals:
                        raise Stop(
                            EXIT_REFUSED, f"refused {refusals} units in a row; last: {reason}"
                        ) from None
                    continue
                refusals = 0
                self.on_event(
                    ev.UnitLeased(unit.unit_id, unit.job_id, unit.kind, unit.model, len(unit.texts))
                )
                ahead = fetcher.submit(self._lease, client)
                started = time.perf_counter()
                matrix = computer.compute(unit)
                seconds = time.perf_counter() - started
                rate = len(unit.texts) / seconds if seconds > 0 else 0.0
                self.on_event(ev.UnitComputed(unit.unit_id, len(unit.texts), seconds, rate))
                self._submit_queue.put((lease, unit, matrix, computer.device, seconds))
        finally:
            if ahead is not None:  # a unit leased ahead but never started goes back
                self._hand_back(client, ahead)
            fetcher.shutdown(wait=True)

    def _lease(self, client: CoordinatorClient) -> object:
        return self._retrying(lambda: client.lease(self.volunteer_id))

    def _release(self, client: CoordinatorClient, lease_id: str, reason: str) -> None:
        self._retrying(lambda: client.release(self.volunteer_id, lease_id, reason))

    def _hand_back(self, client: CoordinatorClient, ahead: Future[object]) -> None:
        try:
            response = ahead.result()
        except (RemoteError, Stop):
            return
        if isinstance(response, pb.LeaseWorkResponse) and response.HasField("lease"):
            try:
                client.release(self.volunteer_id, response.lease.lease_id, "stopping: not started")
            except RemoteError as exc:
                log.warning("could not hand back lease %s: %s", response.lease.lease_id, exc)

    def _check_unit(self, lease: pb.Lease, coordinator_key: bytes) -> WorkUnit:
        """Verify signature, then that we know the task kind, model and weights hash."""
        blob = lease.unit.unit
        unit = open_unit(blob, lease.unit.signature, coordinator_key)
        if unit.kind not in TASK_KINDS:
            raise IntegrityError(f"unknown task kind {unit.kind!r}")
        spec = self.registry.get(unit.model)
        if unit.model_sha256 != spec.weights_sha256:
            raise IntegrityError(
                f"model {unit.model} weights hash {unit.model_sha256[:16]}… is not the pinned "
                f"{spec.weights_sha256[:16]}…"
            )
        if unit.kind not in spec.task_kinds or unit.dims != spec.dims:
            raise IntegrityError(f"model {unit.model} does not produce {unit.dims}-d {unit.kind}")
        if unit.result_dtype not in RESULT_DTYPES:
            raise IntegrityError(f"unsupported result dtype {unit.result_dtype!r}")
        if not unit.texts:
            raise IntegrityError("unit has no inputs")
        return unit

    def _seal(
        self, lease: pb.Lease, unit: WorkUnit, matrix: np.ndarray, device: str, seconds: float
    ) -> tuple[bytes, bytes, bytes]:
        encoded = codec.encode(matrix, unit.result_dtype)
        envelope = ResultEnvelope(
            unit_id=unit.unit_id,
            lease_id=lease.lease_id,
            volunteer_id=self.volunteer_id,
            dtype=encoded.dtype,
            rows=encoded.rows,
            dims=encoded.dims,
            codec=CODEC,
            payload_sha256=hashlib.sha256(encoded.payload).digest(),
            unit_sha256=hashlib.sha256(lease.unit.unit).digest(),
            model_sha256=unit.model_sha256,
            device=device,
            compute_ms=int(seconds * 1000),
            created_ms=int(time.time() * 1000),
        )
        blob, signature = sign_envelope(self._key, envelope)
        return blob, signature, encoded.payload

    def _submit_loop(self, client: CoordinatorClient) -> None:
        while True:
            item = self._submit_queue.get()
            try:
                if item is None:
                    return
                self._submit(client, *item)
            finally:
                self._submit_queue.task_done()

    def _submit(
        self,
        client: CoordinatorClient,
        lease: pb.Lease,
        unit: WorkUnit,
        matrix: np.ndarray,
        device: str,
        seconds: float,
    ) -> None:
        envelope, signature, payload = self._seal(lease, unit, matrix, device, seconds)
        size = len(payload) + len(envelope) + len(signature)
        try:
            response = self._retrying(lambda: client.submit(envelope, signature, payload))
        except RemoteError as exc:
            self.on_event(ev.ResultSubmitted(unit.unit_id, "error", exc.details, size))
            return
        except Stop as stop:
            self._submit_error = stop
            return
        assert isinstance(response, pb.SubmitResultResponse)
        self.units_done += 1
        self.items_done += len(unit.texts)
        self.on_event(ev.ResultSubmitted(unit.unit_id, response.status, response.reason, size))


def _unit_id_hint(lease: pb.Lease) -> str:
    """The unit id from an unverified unit, for messages only."""
    message = pb.WorkUnit()
    try:
        message.ParseFromString(lease.unit.unit)
    except Exception:
        return "(unreadable unit)"
    return message.unit_id[:96] or "(no id)"


def _hardware() -> str:
    return f"{platform.machine()} {platform.system()}"[:256]
