"""The gold rows a coordinator process mixes into units, cached per job.

Gold rows live in the store (accepted by a quorum of distinct volunteers, or computed by
the coordinator). Leasing reads them on every unit, so each process keeps the newest
`per_job` rows of each running job in memory and reloads them every `refresh_s`, outside
any transaction. Answers are float32 rows in the job's result dtype after rounding.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from allmende.coordinator.store.base import Store
from allmende.coordinator.store.records import GoldRow


class GoldPool:
    def __init__(
        self,
        store: Store,
        per_job: int = 256,
        refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.per_job = per_job
        self.refresh_s = refresh_s
        self.clock = clock
        self._rows: dict[str, list[GoldRow]] = {}
        self._by_id: dict[int, GoldRow] = {}
        self._loaded = float("-inf")
        self._lock = threading.Lock()
        self._ever = False  # loaded at least once
        self._expiries = 0

    def refresh(self, force: bool = False) -> None:
        """Reload the pools of running jobs if they are older than `refresh_s`.

        One thread reloads; the others go on with the pools as they are rather than queue
        behind its queries (every lease calls this), unless nothing was loaded yet or
        `force` asks for the reload to be done on return."""
        if not force and self.clock() - self._loaded < self.refresh_s:
            return
        if not self._lock.acquire(blocking=force or not self._ever):
            return  # another thread is reloading; the current pools serve until it is done
        try:
            if not force and self.clock() - self._loaded < self.refresh_s:
                return
            self._reload()
        finally:
            self._lock.release()

    def _reload(self) -> None:
        started, expiries = self.clock(), self._expiries
        jobs = self.store.jobs_in_state("running")
        rows = self.store.gold_rows(jobs, self.per_job)
        pools: dict[str, list[GoldRow]] = {job: [] for job in jobs}
        for row in rows:
            pools[row.job_id].append(row)
        self._rows = pools
        self._by_id = {row.gold_id: row for row in rows}
        # Expired while this reload ran: it may have read too early, so the next one reloads.
        self._loaded = started if expiries == self._expiries else float("-inf")
        self._ever = True

    def expire(self) -> None:
        """Reload at the next `refresh()` (after gold rows were added or dropped)."""
        self._expiries += 1
        self._loaded = float("-inf")

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
