"""What one address block and one volunteer may hold, counted in the lease's own statements
on every backend: a block's share of a job's replica slots, replicas of a unit in distinct
blocks (or not, with `distinct=False`), and the unexpired leases a volunteer holds, which a
lease's `admit` reads with its standing. On PostgreSQL, leases of one block from several
stores (as coordinator replicas) at once still keep the block's share."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import select

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.records import Reputation, VolunteerRecord
from allmende.coordinator.store.sql import SqlStore, open_store
from tests.store.helpers import LEASE_S, T0, add_volunteers, make_job

BLOCK = "2001:db8:1:2::/64"
OTHER = "2001:db8:1:3::/64"
MANY = [f"w{i}" for i in range(12)]


def grant(store: SqlStore, volunteer: str, block: str, share: float, now: int = T0) -> str | None:
    """Lease for `volunteer` from `block`; the unit id or None."""
    got = store.lease_unit(
        volunteer, f"{volunteer}-{now}-{block}", now, address=block, block_share=share
    )
    return None if got is None else got.unit_id


def test_one_block_holds_at_most_its_share_of_a_jobs_slots(store: SqlStore) -> None:
    add_volunteers(store, MANY)
    units = make_job(store, texts=16, unit_size=2, redundancy=2)  # 8 units, 16 slots
    got = [grant(store, v, BLOCK, 0.25) for v in MANY[:8]]
    assert [g for g in got if g] == units[:4]  # a quarter of 16 slots
    assert got[4:] == [None] * 4
    # another block is not held back, and gets its own share
    other = [grant(store, v, OTHER, 0.25) for v in MANY[8:12]]
    assert other == units[:4]
    with store.engine.connect() as conn:
        blocks = conn.execute(select(t.leases.c.address)).scalars().all()
    assert sorted(blocks) == [BLOCK] * 4 + [OTHER] * 4


def test_a_block_holding_no_slot_may_always_take_one(store: SqlStore) -> None:
    add_volunteers(store, MANY)
    units = make_job(store, texts=2, unit_size=2, redundancy=2)  # 1 unit, 2 slots
    assert grant(store, "w0", BLOCK, 0.01) == units[0]
    assert grant(store, "w1", OTHER, 0.01) == units[0]


def test_expired_leases_free_the_blocks_share(store: SqlStore) -> None:
    add_volunteers(store, MANY)
    units = make_job(store, texts=8, unit_size=2, redundancy=1)  # 4 units, 4 slots
    assert grant(store, "w0", BLOCK, 0.5) == units[0]
    assert grant(store, "w1", BLOCK, 0.5) == units[1]
    assert grant(store, "w2", BLOCK, 0.5) is None
    later = T0 + LEASE_S * 1000 + 1
    assert grant(store, "w2", BLOCK, 0.5, now=later) == units[0]


def test_the_share_is_per_job(store: SqlStore) -> None:
    add_volunteers(store, MANY)
    first = make_job(store, "job-a", texts=8, unit_size=2, redundancy=1)
    second = make_job(store, "job-b", texts=8, unit_size=2, redundancy=1, created_ms=T0 + 1)
    got = [grant(store, v, BLOCK, 0.5) for v in MANY[:5]]
    assert got == [first[0], first[1], second[0], second[1], None]


def test_loopback_is_in_no_block(store: SqlStore) -> None:
    add_volunteers(store, MANY)
    units = make_job(store, texts=8, unit_size=2, redundancy=1)
    assert [grant(store, v, "", 0.01) for v in MANY[:4]] == units


def test_replicas_of_a_unit_go_to_distinct_blocks_unless_told(store: SqlStore) -> None:
    add_volunteers(store, MANY)
    units = make_job(store, texts=2, unit_size=2, redundancy=2)
    assert grant(store, "w0", BLOCK, 1.0) == units[0]
    assert grant(store, "w1", BLOCK, 1.0) is None
    together = store.lease_unit("w1", "w1-same", T0, address=BLOCK, distinct=False)
    assert together is not None and together.unit_id == units[0]


def test_admit_reads_the_unexpired_leases_the_volunteer_holds(store: SqlStore) -> None:
    make_job(store, texts=8, unit_size=2, redundancy=1)
    seen: list[int] = []

    def admit(record: VolunteerRecord | None, reputation: dict[str, Reputation]) -> bool:
        assert record is not None
        seen.append(record.live_leases)
        return True

    for n in range(3):
        assert store.lease_unit("v1", f"L{n}", T0 + n, admit=admit) is not None
    assert seen == [0, 1, 2]
    record, _ = store.get_standing("v1", T0)
    assert record is not None and record.live_leases == 3
    # expired leases are not held, swept or not
    record, _ = store.get_standing("v1", T0 + LEASE_S * 1000 + 5)
    assert record is not None and record.live_leases == 0
    assert store.lease_unit("v2", "other", T0, admit=admit) is not None
    assert seen[-1] == 0  # another volunteer's leases are not this one's


def test_a_refusing_admit_leases_nothing(store: SqlStore) -> None:
    make_job(store, texts=8, unit_size=2, redundancy=1)
    assert store.lease_unit("v1", "L0", T0) is not None

    def full(record: VolunteerRecord | None, reputation: dict[str, Reputation]) -> bool:
        return record is not None and record.live_leases < 1

    assert store.lease_unit("v1", "L1", T0, admit=full) is None
    record, _ = store.get_standing("v1", T0)
    assert record is not None and record.live_leases == 1


def at_once(
    postgres_url: str, calls: int, call: Callable[[SqlStore, int], str | None]
) -> list[str | None]:
    """`call(store, n)` for n in range(calls), all released at once from threads spread over
    four stores on one database (coordinator replicas); what each returned."""
    replicas = [open_store(postgres_url) for _ in range(4)]
    got: list[str | None] = []
    barrier = threading.Barrier(calls)

    def run(n: int) -> None:
        barrier.wait()
        got.append(call(replicas[n % len(replicas)], n))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(calls)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for replica in replicas:
            replica.close()
    return got


def test_replicas_leasing_from_one_block_at_once_keep_its_share(
    pg_store: SqlStore, postgres_url: str
) -> None:
    """Several stores (coordinator replicas) lease for one block's volunteers at once; the
    advisory lock on the block makes each count what the one before it committed."""
    add_volunteers(pg_store, MANY)
    units = make_job(pg_store, texts=32, unit_size=2, redundancy=1)  # 16 slots
    got = at_once(postgres_url, len(MANY), lambda store, n: grant(store, MANY[n], BLOCK, 0.25))
    assert len(got) == len(MANY)
    leased = [g for g in got if g]
    assert len(leased) == 4 and set(leased) <= set(units)


def test_held_cap_leases_nothing_once_the_volunteer_holds_that_many(store: SqlStore) -> None:
    units = make_job(store, texts=16, unit_size=2, redundancy=1)
    got = [store.lease_unit("v1", f"L{n}", T0, held_cap=3) for n in range(5)]
    assert [g.unit_id for g in got if g] == units[:3]
    assert got[3:] == [None, None]
    # expired leases are not held
    later = T0 + LEASE_S * 1000 + 1
    assert store.lease_unit("v1", "L-later", later, held_cap=3) is not None


def test_one_volunteer_leasing_through_replicas_at_once_keeps_its_cap(
    pg_store: SqlStore, postgres_url: str
) -> None:
    """The same volunteer's leases through four stores at once: the advisory lock on the
    volunteer makes each count the leases committed before it."""
    make_job(pg_store, texts=64, unit_size=2, redundancy=1)

    def lease(store: SqlStore, n: int) -> str | None:
        got = store.lease_unit("v1", f"L{n}", T0, held_cap=5)
        return None if got is None else got.unit_id

    got = at_once(postgres_url, 16, lease)
    assert len([g for g in got if g]) == 5
