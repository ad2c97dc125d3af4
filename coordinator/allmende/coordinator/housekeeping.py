"""The threads that run beside a coordinator's server: the assimilator, which writes the
datasets of finished jobs, and the housekeeper, which keeps the gold pool fresh, hands the
memory of large requests back and writes what the store holds back (claimed nonces,
last-seen times)."""

from __future__ import annotations

import logging
import threading
import time

from allmende.coordinator.domain.coordinator import Coordinator
from allmende.coordinator.memory import trim_if_due

log = logging.getLogger("allmende.coordinator")

ASSIMILATE_POLL_S = 5.0
SEEN_FLUSH_S = 2.0  # last-seen times are written this often
GOLD_CHECK_S = 0.5  # and the gold pool checked this often (it reloads when due)
NONCE_PRUNE_S = 60.0  # expired nonces of signed requests are deleted this often


def assimilator(coordinator: Coordinator, stop: threading.Event) -> None:
    while not stop.is_set():
        coordinator.assimilation_wanted.wait(ASSIMILATE_POLL_S)
        coordinator.assimilation_wanted.clear()
        if stop.is_set():
            return
        try:
            coordinator.assimilate_pending()
        except Exception:  # keep serving; the job stays 'assimilating' and is retried
            log.exception("assimilation failed; will retry")


def housekeeper(coordinator: Coordinator, stop: threading.Event) -> None:
    """Keep the gold pool fresh (checked every GOLD_CHECK_S), hand the memory of large
    requests back (memory.py), write claimed nonces the store holds back and delete expired
    ones every NONCE_PRUNE_S, and write the volunteers' last-seen times every SEEN_FLUSH_S,
    and once more at the end."""
    flushed = pruned = time.monotonic()
    while True:
        stopping = stop.wait(GOLD_CHECK_S)
        trim_if_due()
        try:
            coordinator.nonces.flush()
        except Exception:  # they stay pending; the next write transaction takes them
            log.exception("writing claimed nonces failed; will retry")
        if not stopping and time.monotonic() - pruned >= NONCE_PRUNE_S:
            pruned = time.monotonic()
            try:
                coordinator.nonces.prune(coordinator.clock())
            except Exception:  # expired rows only take space; the next round deletes them
                log.exception("deleting expired nonces failed; will retry")
        if not stopping:
            try:
                coordinator.gold.keep()
            except Exception:  # the pool in hand serves; leases reload it if it is expired
                log.exception("reloading gold rows failed; will retry")
        if not stopping and time.monotonic() - flushed < SEEN_FLUSH_S:
            continue
        flushed = time.monotonic()
        try:
            coordinator.flush_seen()
        except Exception:  # the times stay queued for the next round
            log.exception("writing last-seen times failed; will retry")
        if stopping:
            return


class Housekeeping:
    """The assimilator and the housekeeper, started together and stopped together."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=fn, args=(coordinator, self.stop_event), name=name, daemon=True)
            for fn, name in ((assimilator, "assimilator"), (housekeeper, "housekeeper"))
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()
        # Finish any job a previous run left half-written.
        self.coordinator.assimilation_wanted.set()

    def stop(self) -> None:
        self.stop_event.set()
        self.coordinator.assimilation_wanted.set()

    def join(self, timeout_s: float = 30) -> None:
        for thread in self.threads:
            thread.join(timeout=timeout_s)
