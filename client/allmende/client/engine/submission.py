"""Sealing computed results and sending them, on their own thread so the next unit computes
meanwhile.

Every sealed result is written to the spool on disk before it is sent and leaves it only
once the coordinator has answered, so quitting, a crash or an unreachable coordinator never
loses a computed result: the next start sends what is left before it leases new work.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from allmende.client.connection import RemoteError
from allmende.client.engine import events as ev
from allmende.client.engine.exits import EXIT_OK, Stop
from allmende.client.engine.link import CoordinatorLink
from allmende.client.engine.spool import Spool
from allmende.protocol import codec
from allmende.protocol.tasks import claimed_tokens
from allmende.protocol.wire import CODEC, ResultEnvelope, WorkUnit, sign_envelope
from allmende.v1 import allmende_pb2 as pb

log = logging.getLogger("allmende.volunteer")

# What the compute loop hands the submit thread: lease, unit, rows, device, seconds.
Computed = tuple[pb.Lease, WorkUnit, np.ndarray, str, float]


class Submitter:
    """The submit thread of one run, its queue from the compute loop, and the spool."""

    def __init__(
        self,
        link: CoordinatorLink,
        spool: Spool,
        stop_requested: threading.Event,
        on_event: Callable[[ev.Event], None],
    ) -> None:
        self._link = link
        self._spool = spool
        self._stop = stop_requested
        self._on_event = on_event
        self._queue: queue.Queue[Computed | None] = queue.Queue(2)
        self._thread = threading.Thread(target=self._loop, name="submit", daemon=True)
        # Set when sending gave up (the coordinator stayed unreachable): the work loop stops
        # on it, and results sealed after it go straight to the spool.
        self.error: Stop | None = None
        self.units_done = 0
        self.items_done = 0

    def start(self) -> None:
        self._thread.start()

    def put(self, computed: Computed) -> None:
        self._queue.put(computed)

    def wait_idle(self) -> None:
        """Block until every result handed over so far has been dealt with."""
        self._queue.join()

    def close(self) -> None:
        """Deal with what is queued, then end the submit thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    @property
    def spooled(self) -> int:
        """Results on disk waiting to be sent to this coordinator."""
        return self._spool.count()

    def resend_spooled(self) -> None:
        """Send what earlier runs computed but could not send, before any new work."""
        for item in self._spool.pending():
            if self._stop.is_set():
                return
            self._send(
                item.unit_id,
                item.rows,
                item.envelope,
                item.signature,
                item.payload,
                item.path,
                resent=True,
            )
            if self.error is not None:
                raise self.error

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._submit(*item)
            except Exception:  # keep draining: a stuck queue would hang the compute loop
                log.exception("submitting a result failed")
            finally:
                self._queue.task_done()

    def _seal(
        self, lease: pb.Lease, unit: WorkUnit, matrix: np.ndarray, device: str, seconds: float
    ) -> tuple[bytes, bytes, bytes]:
        key = self._link.key
        assert key is not None  # units are leased only after the handshake registered it
        encoded = codec.encode(matrix, unit.result_dtype)
        envelope = ResultEnvelope(
            unit_id=unit.unit_id,
            lease_id=lease.lease_id,
            volunteer_id=self._link.volunteer_id,
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
            claimed_tokens=claimed_tokens(unit.texts),
        )
        blob, signature = sign_envelope(key, envelope)
        return blob, signature, encoded.payload

    def _submit(
        self, lease: pb.Lease, unit: WorkUnit, matrix: np.ndarray, device: str, seconds: float
    ) -> None:
        envelope, signature, payload = self._seal(lease, unit, matrix, device, seconds)
        path = None
        try:
            path = self._spool.put(envelope, signature, payload)
        except OSError as exc:  # a full disk must not stop the work; try to send it now
            log.warning("could not spool result %s: %s", unit.unit_id, exc)
        self._send(unit.unit_id, len(unit.texts), envelope, signature, payload, path)

    def _send(
        self,
        unit_id: str,
        items: int,
        envelope: bytes,
        signature: bytes,
        payload: bytes,
        path: Path | None,
        resent: bool = False,
    ) -> None:
        size = len(payload) + len(envelope) + len(signature)
        if self.error is not None and path is not None:
            self._spooled(unit_id, self.error.reason)  # known unreachable: keep it
            return
        try:
            response = self._link.submit(envelope, signature, payload)
        except RemoteError as exc:  # a definite no: sending again cannot help
            self._unspool(path)
            self._on_event(ev.ResultSubmitted(unit_id, "error", exc.details, size, resent, items))
            return
        except Stop as stop:
            if stop.code != EXIT_OK:
                self.error = stop
            if path is not None:
                self._spooled(unit_id, stop.reason)
            else:
                self._on_event(
                    ev.ResultSubmitted(unit_id, "error", stop.reason, size, resent, items)
                )
            return
        assert isinstance(response, pb.SubmitResultResponse)
        self._unspool(path)
        self.units_done += 1
        self.items_done += items
        self._on_event(
            ev.ResultSubmitted(unit_id, response.status, response.reason, size, resent, items)
        )

    def _spooled(self, unit_id: str, why: str) -> None:
        waiting = self._spool.count()
        self._on_event(ev.ResultSpooled(unit_id, f"kept on disk to send later ({why})", waiting))

    def _unspool(self, path: Path | None) -> None:
        if path is not None:
            self._spool.remove(path)
