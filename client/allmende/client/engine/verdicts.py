"""What became of this volunteer's results: the coordinator's final verdicts and credit.

A result the coordinator answered "pending" or "accepted" is noted here, by unit, and kept
on disk in the volunteer's home (one file per coordinator key, as the spool), so a restart
neither forgets results still waiting for their verdict nor the lifetime totals last
heard. The engine asks the coordinator (GetVerdicts, a signed call) every `POLL_S` while it
works, at start and before it stops; each decided result becomes a `ResultVerdict` event
and the totals, the figures `allmende volunteers list` shows, a `CreditTotals` event.

Asking is best effort: one attempt, no retries, so an unreachable coordinator never holds
up work; the next poll asks again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from allmende.client.connection import CoordinatorClient, RemoteError
from allmende.client.engine import events as ev

log = logging.getLogger("allmende.volunteer.verdicts")

# Seconds between polls while the engine works.
POLL_S = 10.0
# Units asked about per call (the coordinator takes up to 256).
ASK_AT_ONCE = 256
# Results remembered while waiting for a verdict; the oldest are forgotten beyond this
# (units of a job paused for good never get one).
MAX_WAITING = 5000
TOTAL_FIELDS = ("results_valid", "results_invalid", "results_pending", "credit", "items_valid")


class VerdictBook:
    """Results waiting for their verdict, and the lifetime totals last heard, on disk."""

    def __init__(
        self,
        folder: Path,
        fingerprint: str,
        on_event: Callable[[ev.Event], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = folder / f"{fingerprint[:32]}.json"
        self._on_event = on_event
        self._clock = clock
        self._lock = threading.Lock()
        self._polling = threading.Lock()
        self._waiting: dict[str, int] = {}  # unit id -> rows
        self._totals: dict[str, int] | None = None
        self._next_poll = 0.0
        self._supported = True  # False once the coordinator answered UNIMPLEMENTED
        self._heard = False  # the coordinator has answered in this run
        self._load()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable verdict record %s: %s", self.path, exc)
            return
        if not isinstance(data, dict):
            return
        waiting = data.get("waiting", {})
        if isinstance(waiting, dict):
            self._waiting = {str(k): int(v) for k, v in waiting.items() if isinstance(v, int)}
        totals = data.get("totals")
        if isinstance(totals, dict) and all(isinstance(totals.get(f), int) for f in TOTAL_FIELDS):
            self._totals = {f: int(totals[f]) for f in TOTAL_FIELDS}

    def _save(self) -> None:
        data: dict[str, Any] = {"waiting": self._waiting, "totals": self._totals}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(data, sort_keys=True))
            os.replace(temporary, self.path)
        except OSError as exc:  # a full disk must not stop the work
            log.warning("could not save the verdict record %s: %s", self.path, exc)

    def announce(self) -> None:
        """Report the totals remembered from an earlier run (before the coordinator answers)."""
        with self._lock:
            totals = self._totals
        if totals is not None:
            self._on_event(_totals_event(totals, self.waiting, remembered=True))

    def note(self, unit_id: str, rows: int) -> None:
        """A result the coordinator took: its verdict is to come."""
        with self._lock:
            self._waiting[unit_id] = rows
            while len(self._waiting) > MAX_WAITING:
                del self._waiting[next(iter(self._waiting))]
            self._save()

    def due(self) -> bool:
        return self._clock() >= self._next_poll

    def poll(self, client: CoordinatorClient, volunteer_id: str) -> None:
        """Ask for the verdicts still to come, and the totals; report what changed."""
        if not self._supported or not volunteer_id:
            return
        if not self._polling.acquire(blocking=False):
            return  # another thread is asking right now
        try:
            self._next_poll = self._clock() + POLL_S
            with self._lock:
                asked = list(self._waiting)[:ASK_AT_ONCE]
            try:
                response = client.verdicts(volunteer_id, asked)
            except RemoteError as exc:
                if exc.code == "UNIMPLEMENTED":
                    self._supported = False
                log.debug("asking for verdicts failed: %s", exc)
                return
            decided: list[ev.ResultVerdict] = []
            with self._lock:
                for v in response.verdicts:
                    if self._waiting.pop(v.unit_id, None) is None:
                        continue  # not ours to report (or reported already)
                    decided.append(
                        ev.ResultVerdict(
                            v.unit_id, v.job_id, v.verdict, v.reason[:300], int(v.credit), v.rows
                        )
                    )
                t = response.totals
                totals = {f: int(getattr(t, f)) for f in TOTAL_FIELDS}
                changed = totals != self._totals or bool(decided)
                first = not self._heard  # the remembered totals are now confirmed
                self._heard = True
                self._totals = totals
                if changed:
                    self._save()
                waiting = len(self._waiting)
            for event in decided:
                self._on_event(event)
            if changed or first:
                self._on_event(_totals_event(totals, waiting))
        finally:
            self._polling.release()


def _totals_event(
    totals: dict[str, int], waiting: int, remembered: bool = False
) -> ev.CreditTotals:
    return ev.CreditTotals(
        results_valid=totals["results_valid"],
        results_invalid=totals["results_invalid"],
        results_pending=totals["results_pending"],
        credit=totals["credit"],
        items_valid=totals["items_valid"],
        waiting=waiting,
        remembered=remembered,
    )
