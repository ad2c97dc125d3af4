"""The coordinator's cache of gold rows (domain/gold.py) over a real store: leases read it
on every unit, so one thread reloads it while the others go on with the rows they have."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

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


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HeldStore]:
    """A held store with one job, released and closed after the test."""
    held = held_store(tmp_path)
    make_job(held)
    yield held
    held.hold.set()
    held.close()


def texts(pool: GoldPool, job_id: str = "job-a") -> list[str]:
    return sorted(row.text for row in pool.rows(job_id))


def reload_in_thread(pool: GoldPool, store: HeldStore) -> threading.Thread:
    store.hold.clear()
    store.held.clear()
    thread = threading.Thread(target=pool.refresh)
    thread.start()
    assert store.held.wait(timeout=10)
    return thread


def test_a_reload_in_progress_leaves_other_threads_the_rows_they_had(store: HeldStore) -> None:
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


def test_the_first_load_and_a_forced_reload_wait_for_the_rows(store: HeldStore) -> None:
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


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_added_rows_are_loaded_within_grew_s_not_at_once(store: HeldStore) -> None:
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


def test_a_kept_pool_reloads_on_the_keeper_and_an_expiry_still_reloads_on_lease(
    store: HeldStore,
) -> None:
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


@pytest.mark.parametrize("change", ["expire", "grew"])
def test_rows_added_while_a_reload_runs_are_loaded_by_a_later_refresh(
    store: HeldStore, change: str
) -> None:
    clock = Clock()
    pool = GoldPool(store, refresh_s=3600, grew_s=1.0, clock=clock)
    pool.refresh()
    pool.expire()
    reloading = reload_in_thread(pool, store)  # it has read: no rows yet
    store.add_gold("job-a", [("late", b"\x02" * 8)], "coordinator", T0)
    getattr(pool, change)()
    store.hold.set()
    reloading.join(timeout=10)
    assert texts(pool) == []
    if change == "grew":
        clock.now += 1.0  # added rows may wait up to grew_s
    pool.refresh()  # refresh_s is an hour: only the change makes this reload
    assert texts(pool) == ["late"]


def test_rows_a_process_stores_are_in_its_pool_at_once(store: HeldStore) -> None:
    clock = Clock()
    pool = GoldPool(store, per_job=2, refresh_s=3600, grew_s=1.0, clock=clock)
    store.add_gold("job-a", [("one", b"\x00" * 8), ("two", b"\x01" * 8)], "coordinator", T0)
    pool.refresh()
    new = GoldRow(99, "job-a", "three", b"\x02" * 8)
    pool.add([new])
    assert texts(pool) == ["three", "two"]  # newest first, up to per_job
    assert pool.cached([99]) == {99: new}
