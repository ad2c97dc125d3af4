"""The coordinator's cache of gold rows (domain/gold.py) over a real store: leases read it
on every unit, so one thread reloads it while the others go on with the rows they have."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from allmende.coordinator.domain.gold import GoldPool
from allmende.coordinator.store.records import GoldRow
from allmende.coordinator.store.sql import SqlStore
from tests.store.helpers import T0, make_job


class HeldStore(SqlStore):
    """A real store whose gold reads can be held mid-way, to catch a reload in the act."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.hold = threading.Event()
        self.held = threading.Event()
        self.hold.set()

    def gold_rows(self, job_ids: Sequence[str], per_job: int) -> list[GoldRow]:
        rows = super().gold_rows(job_ids, per_job)  # read first: an expiry may follow
        self.held.set()
        assert self.hold.wait(timeout=10)
        return rows


def held_store(tmp_path: Path) -> HeldStore:
    from allmende.coordinator.store.engine import make_engine

    url = "sqlite:///" + str(tmp_path / "gold.db")
    return HeldStore(make_engine(url), serialise_writes=True)


def texts(pool: GoldPool, job_id: str = "job-a") -> list[str]:
    return sorted(row.text for row in pool.rows(job_id))


def reload_in_thread(pool: GoldPool, store: HeldStore) -> threading.Thread:
    store.hold.clear()
    store.held.clear()
    thread = threading.Thread(target=pool.refresh)
    thread.start()
    assert store.held.wait(timeout=10)
    return thread


def test_a_reload_in_progress_leaves_other_threads_the_rows_they_had(tmp_path: Path) -> None:
    store = held_store(tmp_path)
    try:
        make_job(store)
        store.add_gold("job-a", [("first", b"\x00" * 8)], "coordinator", T0)
        pool = GoldPool(store, refresh_s=3600)
        pool.refresh()
        store.add_gold("job-a", [("second", b"\x01" * 8)], "coordinator", T0)
        pool.expire()
        reloading = reload_in_thread(pool, store)
        pool.refresh()  # returns at once: the reload is someone else's
        assert texts(pool) == ["first"]
        store.hold.set()
        reloading.join(timeout=10)
        assert texts(pool) == ["first", "second"]
    finally:
        store.hold.set()
        store.close()


def test_the_first_load_and_a_forced_reload_wait_for_the_rows(tmp_path: Path) -> None:
    store = held_store(tmp_path)
    try:
        make_job(store)
        store.add_gold("job-a", [("first", b"\x00" * 8)], "coordinator", T0)
        pool = GoldPool(store, refresh_s=3600)
        loading = reload_in_thread(pool, store)
        waiter = threading.Thread(target=pool.refresh)
        waiter.start()
        waiter.join(timeout=0.3)
        assert waiter.is_alive()  # nothing loaded yet: it waits for the rows
        store.hold.set()
        loading.join(timeout=10)
        waiter.join(timeout=10)
        assert texts(pool) == ["first"]
        store.add_gold("job-a", [("second", b"\x01" * 8)], "coordinator", T0)
        pool.refresh(force=True)
        assert texts(pool) == ["first", "second"]
    finally:
        store.hold.set()
        store.close()


def test_rows_added_while_a_reload_runs_are_loaded_by_the_next_refresh(tmp_path: Path) -> None:
    store = held_store(tmp_path)
    try:
        make_job(store)
        pool = GoldPool(store, refresh_s=3600)
        pool.refresh()
        pool.expire()
        reloading = reload_in_thread(pool, store)  # it has read: no rows yet
        store.add_gold("job-a", [("late", b"\x02" * 8)], "coordinator", T0)
        pool.expire()
        store.hold.set()
        reloading.join(timeout=10)
        assert texts(pool) == []
        pool.refresh()  # refresh_s is an hour: only the expiry makes this reload
        assert texts(pool) == ["late"]
    finally:
        store.hold.set()
        store.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_added_rows_are_loaded_within_grew_s_not_at_once(tmp_path: Path) -> None:
    store = held_store(tmp_path)
    try:
        make_job(store)
        clock = Clock()
        pool = GoldPool(store, refresh_s=3600, grew_s=1.0, clock=clock)
        pool.refresh()
        store.add_gold("job-a", [("added", b"\x00" * 8)], "coordinator", T0)
        pool.grew()
        pool.refresh()
        assert texts(pool) == []  # the rows in hand are still good: no reload yet
        clock.now += 1.0
        pool.refresh()
        assert texts(pool) == ["added"]
    finally:
        store.close()


def test_a_kept_pool_reloads_on_the_keeper_and_an_expiry_still_reloads_on_lease(
    tmp_path: Path,
) -> None:
    store = held_store(tmp_path)
    try:
        make_job(store)
        clock = Clock()
        pool = GoldPool(store, refresh_s=10, grew_s=1.0, clock=clock)
        pool.keep()  # the first load
        store.add_gold("job-a", [("added", b"\x00" * 8)], "coordinator", T0)
        pool.grew()
        clock.now += 60  # both the growth and the periodic reload are due
        pool.refresh()
        assert texts(pool) == []  # leases leave them to the keeper
        pool.keep()
        assert texts(pool) == ["added"]
        store.add_gold("job-a", [("after", b"\x01" * 8)], "coordinator", T0)
        pool.expire()  # as after a quarantine: the next lease must not use the old rows
        pool.refresh()
        assert texts(pool) == ["added", "after"]
    finally:
        store.close()


def test_rows_added_while_a_reload_runs_are_loaded_within_grew_s(tmp_path: Path) -> None:
    store = held_store(tmp_path)
    try:
        make_job(store)
        clock = Clock()
        pool = GoldPool(store, refresh_s=3600, grew_s=1.0, clock=clock)
        pool.refresh()
        pool.expire()
        reloading = reload_in_thread(pool, store)  # it has read: no rows yet
        store.add_gold("job-a", [("late", b"\x02" * 8)], "coordinator", T0)
        pool.grew()
        store.hold.set()
        reloading.join(timeout=10)
        assert texts(pool) == []
        clock.now += 1.0
        pool.refresh()  # refresh_s is an hour: only the growth makes this reload
        assert texts(pool) == ["late"]
    finally:
        store.hold.set()
        store.close()


def test_rows_a_process_stores_are_in_its_pool_at_once(tmp_path: Path) -> None:
    store = held_store(tmp_path)
    try:
        make_job(store)
        clock = Clock()
        pool = GoldPool(store, per_job=2, refresh_s=3600, grew_s=1.0, clock=clock)
        store.add_gold("job-a", [("one", b"\x00" * 8), ("two", b"\x01" * 8)], "coordinator", T0)
        pool.refresh()
        new = GoldRow(99, "job-a", "three", b"\x02" * 8)
        pool.add([new])
        assert texts(pool) == ["three", "two"]  # newest first, up to per_job
        assert pool.cached([99]) == {99: new}
    finally:
        store.close()
