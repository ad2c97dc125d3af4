"""Sealing computed results and sending them, on their own thread so the next unit computes
meanwhile.

Every sealed result is written to the spool on disk before it is sent and leaves it only
once the coordinator has answered, so quitting, a crash or an unreachable coordinator never
loses a computed result: the next start sends what is left before it leases new work.

Results waiting together (a backlog in the spool, or several finished while one was being
sent, as on a fast GPU) go in one SubmitResults call of up to `BATCH` results; the
coordinator answers for each. A coordinator without that call gets them one by one.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allmende.client.connection import RemoteError
from allmende.client.engine import events as ev
from allmende.client.engine.exits import EXIT_OK, Stop
from allmende.client.engine.link import CoordinatorLink
from allmende.client.engine.spool import Spool
from allmende.client.engine.verdicts import VerdictBook
from allmende.protocol import codec
from allmende.protocol.kinds import get_kind
from allmende.protocol.limits import MAX_SUBMIT_BYTES
from allmende.protocol.wire import (
    CODEC,
    MAX_ENERGY_WH_PER_1000,
    ResultEnvelope,
    WorkUnit,
    sign_envelope,
)
from allmende.v1 import allmende_pb2 as pb

log = logging.getLogger("allmende.volunteer")

# What the compute loop hands the submit thread: lease, unit, rows, device, seconds, and
# (Wh per 1,000 items, estimated) of the device (0: not known yet).
Computed = tuple[pb.Lease, WorkUnit, np.ndarray, str, float, tuple[float, bool]]
# Results sent in one call at most (the coordinator takes up to 32).
BATCH = 16
# What one result adds to a SubmitResults request beside its bytes (field tags, lengths).
_PER_RESULT_BYTES = 32
# ...and the request itself (the volunteer id).
_REQUEST_BYTES = 256
# Per-result answers a later attempt may change (the call itself is retried by the link).
_RETRY_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


@dataclass(frozen=True)
class Sealed:
    """A result ready to send, and where it is spooled (None: it could not be)."""

    unit_id: str
    items: int
    envelope: bytes
    signature: bytes
    payload: bytes
    path: Path | None
    resent: bool = False

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.envelope) + len(self.signature)


def by_size(batch: list[Sealed]) -> list[list[Sealed]]:
    """`batch` cut into groups that each fit one SubmitResults request (MAX_SUBMIT_BYTES);
    a result too large for that travels alone (and is refused on its own)."""
    groups: list[list[Sealed]] = []
    size = 0
    for sealed in batch:
        cost = sealed.size + _PER_RESULT_BYTES
        if not groups or size + cost > MAX_SUBMIT_BYTES:
            groups.append([])
            size = _REQUEST_BYTES
        groups[-1].append(sealed)
        size += cost
    return groups


class Submitter:
    """The submit thread of one run, its queue from the compute loop, and the spool."""

    def __init__(
        self,
        link: CoordinatorLink,
        spool: Spool,
        stop_requested: threading.Event,
        on_event: Callable[[ev.Event], None],
        verdicts: VerdictBook | None = None,
    ) -> None:
        self._link = link
        self._verdicts = verdicts
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
        self._batches = True  # False once the coordinator answered UNIMPLEMENTED

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
        batch: list[Sealed] = []
        for item in self._spool.pending():
            if self._stop.is_set():
                return
            batch.append(
                Sealed(
                    item.unit_id,
                    item.rows,
                    item.envelope,
                    item.signature,
                    item.payload,
                    item.path,
                    resent=True,
                )
            )
            if len(batch) == BATCH:
                self._send_all(batch)
                batch = []
                if self.error is not None:
                    raise self.error
        if batch and not self._stop.is_set():
            self._send_all(batch)
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        while True:
            taken = [self._queue.get()]
            while taken[-1] is not None and len(taken) < BATCH:  # what else is ready now
                try:
                    taken.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            computed = [item for item in taken if item is not None]
            try:
                if computed:
                    self._send_all([self._sealed(*item) for item in computed])
                    self.poll_verdicts(only_if_due=True)
            except Exception:  # keep draining: a stuck queue would hang the compute loop
                log.exception("submitting a result failed")
            finally:
                for _ in taken:
                    self._queue.task_done()
            if len(computed) < len(taken):
                return

    def _seal(
        self,
        lease: pb.Lease,
        unit: WorkUnit,
        matrix: np.ndarray,
        device: str,
        seconds: float,
        energy: tuple[float, bool] = (0.0, False),
    ) -> tuple[bytes, bytes, bytes]:
        key = self._link.key
        assert key is not None  # units are leased only after the handshake registered it
        kind = get_kind(unit.kind)
        layouts = kind.layouts(unit.dims, unit.result_dtype)
        payload, _ = codec.encode_columns(matrix, [(c.dtype, c.width) for c in layouts])
        envelope = ResultEnvelope(
            unit_id=unit.unit_id,
            lease_id=lease.lease_id,
            volunteer_id=self._link.volunteer_id,
            rows=matrix.shape[0],
            columns=layouts,
            codec=CODEC,
            payload_sha256=hashlib.sha256(payload).digest(),
            unit_sha256=hashlib.sha256(lease.unit.unit).digest(),
            model_sha256=unit.model_sha256,
            device=device,
            compute_ms=int(seconds * 1000),
            created_ms=int(time.time() * 1000),
            claimed_tokens=kind.credit(unit.texts),
            energy_wh_per_1000=min(max(energy[0], 0.0), MAX_ENERGY_WH_PER_1000),
            energy_estimated=energy[1] and energy[0] > 0,
        )
        blob, signature = sign_envelope(key, envelope)
        return blob, signature, payload

    def _sealed(
        self,
        lease: pb.Lease,
        unit: WorkUnit,
        matrix: np.ndarray,
        device: str,
        seconds: float,
        energy: tuple[float, bool] = (0.0, False),
    ) -> Sealed:
        envelope, signature, payload = self._seal(lease, unit, matrix, device, seconds, energy)
        path = None
        try:
            path = self._spool.put(envelope, signature, payload)
        except OSError as exc:  # a full disk must not stop the work; try to send it now
            log.warning("could not spool result %s: %s", unit.unit_id, exc)
        return Sealed(unit.unit_id, len(unit.texts), envelope, signature, payload, path)

    def _send_all(self, batch: list[Sealed]) -> None:
        """Send results, several in one call where the coordinator takes that."""
        for group in by_size(batch):
            self._send_group(group)

    def _send_group(self, batch: list[Sealed]) -> None:
        if len(batch) == 1 or not self._batches or self.error is not None:
            for sealed in batch:
                self._send(sealed)
            return
        try:
            response = self._link.submit_many([(s.envelope, s.signature, s.payload) for s in batch])
        except RemoteError as exc:
            if exc.code == "UNIMPLEMENTED":  # an older coordinator: one call per result
                self._batches = False
            # Refused as a whole (malformed for this coordinator): one by one, each result
            # gets its own answer.
            for sealed in batch:
                self._send(sealed)
            return
        except Stop as stop:
            self._stopped(batch, stop)
            return
        assert isinstance(response, pb.SubmitResultsResponse)
        if len(response.results) != len(batch):  # not an answer for each: ask one by one
            for sealed in batch:
                self._send(sealed)
            return
        for sealed, answer in zip(batch, response.results, strict=True):
            if answer.status != "refused":
                self._answered(sealed, answer.status, answer.reason)
            elif answer.code in _RETRY_CODES:
                self._send(sealed)  # on its own, with the link's retries
            else:
                self._unspool(sealed.path)  # a definite no: sending again cannot help
                self._report(sealed, "error", f"{answer.code}: {answer.reason}")

    def _send(self, sealed: Sealed) -> None:
        if self.error is not None and sealed.path is not None:
            self._spooled(sealed.unit_id, self.error.reason)  # known unreachable: keep it
            return
        try:
            response = self._link.submit(sealed.envelope, sealed.signature, sealed.payload)
        except RemoteError as exc:  # a definite no: sending again cannot help
            self._unspool(sealed.path)
            self._report(sealed, "error", exc.details)
            return
        except Stop as stop:
            self._stopped([sealed], stop)
            return
        assert isinstance(response, pb.SubmitResultResponse)
        self._answered(sealed, response.status, response.reason)

    def poll_verdicts(self, only_if_due: bool = False) -> None:
        """Ask the coordinator what became of results sent earlier (see verdicts.py)."""
        book = self._verdicts
        if book is None or (only_if_due and not book.due()):
            return
        book.poll(self._link.client, self._link.volunteer_id)

    def _answered(self, sealed: Sealed, status: str, reason: str) -> None:
        self._unspool(sealed.path)
        self.units_done += 1
        self.items_done += sealed.items
        if self._verdicts is not None and status in ("pending", "accepted"):
            self._verdicts.note(sealed.unit_id, sealed.items)
        self._report(sealed, status, reason)

    def _report(self, sealed: Sealed, status: str, reason: str) -> None:
        self._on_event(
            ev.ResultSubmitted(
                sealed.unit_id, status, reason, sealed.size, sealed.resent, sealed.items
            )
        )

    def _stopped(self, batch: list[Sealed], stop: Stop) -> None:
        """Sending stopped (the volunteer quit, or the coordinator stayed unreachable)."""
        if stop.code != EXIT_OK:
            self.error = stop
        for sealed in batch:
            if sealed.path is not None:
                self._spooled(sealed.unit_id, stop.reason)
            else:
                self._report(sealed, "error", stop.reason)

    def _spooled(self, unit_id: str, why: str) -> None:
        waiting = self._spool.count()
        self._on_event(ev.ResultSpooled(unit_id, f"kept on disk to send later ({why})", waiting))

    def _unspool(self, path: Path | None) -> None:
        if path is not None:
            self._spool.remove(path)
