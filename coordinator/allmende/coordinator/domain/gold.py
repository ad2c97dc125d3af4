"""The gold rows a coordinator process mixes into units, cached per job.

Gold rows live in the store (accepted by a quorum of distinct volunteers, or computed by
the coordinator). Leasing reads them on every unit, so each process keeps the newest
`per_job` rows of each running job in memory and reloads them every `refresh_s`, outside
any transaction. Answers are float32 rows in the job's result dtype after rounding.

Two kinds of change reach the pool. Rows dropped (a quarantined volunteer's) must not be
handed out again: `expire()` makes the next lease reload. Rows added (a pool filling from
accepted units) can wait a moment: `grew()` makes a reload due within `grew_s`, and the
process that stored them adds them at once (`add()`). A server runs `keep()` on its
housekeeping thread, and then the periodic and `grew()` reloads happen there instead of in
the lease that happens to find the pool due. (A reload is a few hundred rows. Reloading
after every accepted unit while a job's pool filled, in whichever lease came next, made
those leases the slowest of their second.)

Per volunteer, the pool also remembers what it has seen (`viewer()`, `saw()`): the units it
leased (read from the store every minute, plus those this process leased to it since),
the gold rows it was given lately, and a few ordinary texts of its leases to repeat as
decoys. A process keeps this for the `VIEWERS` volunteers it served last. What a restart
forgets only makes a repeated gold row a little likelier; the units come from the store,
except those another coordinator replica leased to the volunteer within the last minute
(whose rows rarely become gold that soon: a unit yields gold rows once it is accepted).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from allmende.coordinator.domain.compose import Viewer
from allmende.coordinator.store.base import Store
from allmende.coordinator.store.records import GoldRow

# Volunteers whose views a process keeps, gold rows and decoy texts kept per volunteer.
# A view is read again from the store after VIEW_REFRESH_S: a query per volunteer and
# minute, not per lease (this process adds its own leases to the view at once).
VIEW_REFRESH_S = 60.0
VIEWERS = 10_000
GIVEN = 512
DECOYS = 64


@dataclass
class _View:
    loaded: float  # clock time of the store read
    units: set[str]
    given: deque[int] = field(default_factory=lambda: deque(maxlen=GIVEN))
    decoys: deque[str] = field(default_factory=lambda: deque(maxlen=DECOYS))


class GoldPool:
    def __init__(
        self,
        store: Store,
        per_job: int = 256,
        refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        grew_s: float = 1.0,
    ) -> None:
        self.store = store
        self.per_job = per_job
        self.refresh_s = refresh_s
        self.grew_s = grew_s
        self.clock = clock
        self._rows: dict[str, list[GoldRow]] = {}
        self._by_id: dict[int, GoldRow] = {}
        self._due = float("-inf")  # when the next reload is due (clock time)
        self._lock = threading.Lock()  # held by the thread reloading
        self._add_lock = threading.Lock()
        self._ever = False  # loaded at least once
        self._expiries = 0
        self._growths = 0
        self._kept = False  # a housekeeping thread calls keep()
        self._views: OrderedDict[str, _View] = OrderedDict()
        self._views_lock = threading.Lock()

    def refresh(self, force: bool = False) -> None:
        """Reload the pools of running jobs when a reload is due (every lease calls this).

        One thread reloads; the others go on with the pools as they are rather than queue
        behind its queries, unless nothing was loaded yet or `force` asks for the reload to
        be done on return. While a housekeeping thread keeps the pool (`keep()`), only the
        first load, an expiry and `force` reload here."""
        if not force and not self._due_now(expired_only=self._kept):
            return
        self._reload_once(wait=force or not self._ever, force=force)

    def keep(self) -> None:
        """Reload if due, from a housekeeping thread; from then on, leases leave periodic
        reloads to it."""
        self._kept = True
        if self._due_now(expired_only=False):
            self._reload_once(wait=False, force=False)

    def _due_now(self, expired_only: bool) -> bool:
        if self._due == float("-inf") or not self._ever:
            return True
        return not expired_only and self.clock() >= self._due

    def _reload_once(self, wait: bool, force: bool) -> None:
        if not self._lock.acquire(blocking=wait):
            return  # another thread is reloading; the current pools serve until it is done
        try:
            if force or self._due_now(expired_only=False):
                self._reload()
        finally:
            self._lock.release()

    def _reload(self) -> None:
        started, expiries, growths = self.clock(), self._expiries, self._growths
        jobs = self.store.jobs_in_state("running")
        rows = self.store.gold_rows(jobs, self.per_job)
        pools: dict[str, list[GoldRow]] = {job: [] for job in jobs}
        for row in rows:
            pools[row.job_id].append(row)
        with self._add_lock:  # so that an add() cannot put back the pools this replaces
            self._rows, self._by_id = pools, {row.gold_id: row for row in rows}
        # Expired while this reload ran: it may have read too early, so the next one reloads.
        # Grew meanwhile: the rows may have been read before the new ones.
        due = started + self.refresh_s
        if growths != self._growths:
            due = min(due, self.clock() + self.grew_s)
        self._due = due if expiries == self._expiries else float("-inf")
        self._ever = True

    def expire(self) -> None:
        """Reload at the next `refresh()` (after gold rows were dropped)."""
        self._expiries += 1
        self._due = float("-inf")

    def add(self, rows: Sequence[GoldRow]) -> None:
        """Gold rows this process has just stored: in the pool at once (newest first, up
        to `per_job` a job), and a reload due within `grew_s` to settle with the store."""
        with self._add_lock:
            pools, by_id = dict(self._rows), dict(self._by_id)
            for row in rows:
                pools[row.job_id] = [row, *pools.get(row.job_id, [])][: self.per_job]
                by_id[row.gold_id] = row
            self._rows, self._by_id = pools, by_id
        self.grew()

    def grew(self) -> None:
        """Gold rows were added: reload within `grew_s` (the rows in hand stay valid)."""
        self._growths += 1
        self._due = min(self._due, self.clock() + self.grew_s)

    def rows(self, job_id: str) -> list[GoldRow]:
        return self._rows.get(job_id, [])

    def cached(self, gold_ids: Sequence[int]) -> dict[int, GoldRow]:
        """Gold rows by id from the cache only (safe inside a store transaction)."""
        return {i: self._by_id[i] for i in gold_ids if i in self._by_id}

    def get(self, gold_ids: Sequence[int]) -> dict[int, GoldRow]:
        """Gold rows by id: from the cache, or from the store for rows added elsewhere."""
        found = {i: self._by_id[i] for i in gold_ids if i in self._by_id}
        missing = [i for i in gold_ids if i not in found]
        if missing:
            found.update((row.gold_id, row) for row in self.store.gold_by_ids(missing))
        return found

    # ------------------------------------------------------------------ per volunteer

    def viewer(self, volunteer_id: str) -> Viewer:
        """What `volunteer_id` has seen, for composing its next leases (see compose.Viewer).
        Reads the units it leased that gold rows came from when the copy is older than
        VIEW_REFRESH_S (outside any transaction, once per lease call at most)."""
        now = self.clock()
        with self._views_lock:
            view = self._views.get(volunteer_id)
        if view is None or now - view.loaded >= VIEW_REFRESH_S:
            units = self.store.gold_sources_leased(volunteer_id)
            with self._views_lock:
                view = self._views.get(volunteer_id) or _View(now, set())
                # The store now knows every lease this process noted before the read.
                view.units = units
                view.loaded = now
                self._views[volunteer_id] = view
                self._views.move_to_end(volunteer_id)
                while len(self._views) > VIEWERS:
                    self._views.popitem(last=False)
        with self._views_lock:
            return Viewer(frozenset(view.units), frozenset(view.given), tuple(view.decoys))

    def saw(
        self, volunteer_id: str, unit_id: str, gold_ids: Sequence[int], texts: Sequence[str]
    ) -> None:
        """Note a lease composed for `volunteer_id`: its unit, gold rows and some texts."""
        with self._views_lock:
            view = self._views.get(volunteer_id)
            if view is None:
                return
            view.units.add(unit_id)
            view.given.extend(gold_ids)
            view.decoys.extend(texts)
