"""The engine's side of the conversation with its coordinator.

One `CoordinatorClient`, every call retried on transient failures with jittered exponential
backoff, until the volunteer stops or the coordinator has stayed unreachable longer than
`give_up_after_s`. The handshake (handshake.py) runs over it first and registers the
volunteer; after that it carries leases, hand-backs and results under the volunteer's id and
key.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from allmende.client.connection import CoordinatorClient, RemoteError
from allmende.client.engine import events as ev
from allmende.client.engine.config import EngineConfig
from allmende.client.engine.exits import EXIT_OK, EXIT_UNREACHABLE, Stop
from allmende.protocol.signing import SigningKey
from allmende.v1 import allmende_pb2 as pb

log = logging.getLogger("allmende.volunteer")


class CoordinatorLink:
    """The coordinator client of one run, with retries; `settings` returns the engine's
    current settings (the backoff limits can change while it runs)."""

    def __init__(
        self,
        client: CoordinatorClient,
        settings: Callable[[], EngineConfig],
        stop_requested: threading.Event,
        on_event: Callable[[ev.Event], None],
    ) -> None:
        self.client = client
        self._settings = settings
        self._stop = stop_requested
        self._on_event = on_event
        self.volunteer_id = ""
        self.key: SigningKey | None = None
        self._connected_once = False
        # Whether a lease call of this run asked for units with URL rows.
        self.asked_for_urls = False

    def registered(self, volunteer_id: str, key: SigningKey) -> None:
        """The handshake is done: from now on the volunteer speaks as `volunteer_id`."""
        self.volunteer_id = volunteer_id
        self.key = key
        self.client.signer = key  # every later volunteer call is signed with this key
        self._connected_once = True

    def retrying(self, what: Callable[[], object]) -> object:
        """Call `what`, retrying transient failures with jittered exponential backoff."""
        delay = 0.5
        started = time.monotonic()
        failed = False
        while True:
            try:
                result = what()
            except RemoteError as exc:
                if not exc.transient:
                    raise
                failed = True
                limit = self._settings().give_up_after_s
                if limit is not None and time.monotonic() - started > limit:
                    raise Stop(
                        EXIT_UNREACHABLE,
                        f"coordinator {self._settings().coordinator} unreachable; gave up "
                        f"after {limit:.0f} s of retrying: {exc.details}",
                    ) from None
                wait = random.uniform(0.5, 1.0) * delay
                self._on_event(ev.Retrying(exc.details, wait))
                if self._stop.wait(wait):
                    raise Stop(EXIT_OK, "stopped") from None
                delay = min(delay * 2, self._settings().max_backoff_s)
            else:
                if failed and self._connected_once:
                    self._on_event(ev.Reconnected(time.monotonic() - started))
                return result

    def lease(self, max_units: int = 1) -> object:
        def call() -> pb.LeaseWorkResponse:
            started = time.perf_counter()
            fetch_urls = self._settings().fetch_urls  # asked afresh: the setting is live
            self.asked_for_urls |= fetch_urls
            response = self.client.lease(self.volunteer_id, max_units, fetch_urls)
            self._on_event(ev.RoundTrip((time.perf_counter() - started) * 1000))
            return response

        return self.retrying(call)

    def held_leases(self) -> list[pb.Lease]:
        """The unexpired leases this volunteer holds (recover.py)."""
        held = self.retrying(lambda: self.client.held_leases(self.volunteer_id))
        assert isinstance(held, list)
        return held

    def release(self, lease_id: str, reason: str) -> None:
        self.retrying(lambda: self.client.release(self.volunteer_id, lease_id, reason))

    def release_quietly(self, lease_id: str, reason: str) -> None:
        """One attempt; while stopping, a lease that cannot be handed back simply expires."""
        try:
            self.client.release(self.volunteer_id, lease_id, reason)
        except RemoteError as exc:
            log.warning("could not hand back lease %s: %s", lease_id, exc)

    def submit(self, envelope: bytes, signature: bytes, payload: bytes) -> object:
        return self.retrying(lambda: self.client.submit(envelope, signature, payload))

    def submit_many(self, results: Sequence[tuple[bytes, bytes, bytes]]) -> object:
        return self.retrying(lambda: self.client.submit_many(self.volunteer_id, results))

    def close(self) -> None:
        self.client.close()
