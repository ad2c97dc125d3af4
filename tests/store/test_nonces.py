"""The nonces of signed requests in the store (store/nonces_sql.py), on every backend: a
nonce is claimed once, per volunteer; expired ones are deleted and only those; a claim is
in the database once written (at once on PostgreSQL; on SQLite with the next write
transaction, a flush or closing the store), where a second store on the same database
(another process, another replica) sees it; and of PostgreSQL replicas claiming the same
nonce at once exactly one succeeds."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from allmende.coordinator.domain.nonces import KEEP_MS, RequestNonces
from allmende.coordinator.store import schema as t
from allmende.coordinator.store.sql import SqlStore, open_store

A, B = "a" * 64, "b" * 64
N1, N2 = "0" * 32, "1" * 32
T0 = 1_700_000_000_000


def rows(store: SqlStore) -> int:
    """Claims in the database, once those held back are written."""
    store.flush_nonces()
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.nonces)).scalar_one())


def test_a_nonce_is_claimed_once_per_volunteer(store: SqlStore) -> None:
    assert store.claim_nonce(A, N1, T0)
    assert not store.claim_nonce(A, N1, T0)
    assert not store.claim_nonce(A, N1, T0 + 10**9)  # a later expiry changes nothing
    assert store.claim_nonce(B, N1, T0)  # another volunteer's nonce
    assert store.claim_nonce(A, N2, T0)
    assert rows(store) == 3


def test_pruning_deletes_expired_nonces_and_only_those(store: SqlStore) -> None:
    store.claim_nonce(A, N1, T0)
    store.claim_nonce(A, N2, T0 + 1000)
    store.flush_nonces()
    assert store.prune_nonces(T0) == 0  # expiring at now: still kept
    assert store.prune_nonces(T0 + 1) == 1
    assert not store.claim_nonce(A, N2, T0 + 1000)
    assert store.claim_nonce(A, N1, T0 + 5000)  # forgotten (its timestamp is refused anyway)
    assert rows(store) == 2


def test_a_second_store_on_the_database_sees_the_claims_once_written(shared_url: str) -> None:
    first, second = open_store(shared_url), open_store(shared_url)
    try:
        assert first.claim_nonce(A, N1, T0)
        first.flush_nonces()
        assert not second.claim_nonce(A, N1, T0)
        assert second.claim_nonce(A, N2, T0)
        second.flush_nonces()
        assert not first.claim_nonce(A, N2, T0)
    finally:
        first.close()
        second.close()


def test_a_claim_is_written_with_the_next_write_transaction(shared_url: str) -> None:
    store = open_store(shared_url)
    try:
        assert store.claim_nonce(A, N1, T0)
        store.add_event(T0, "test", "any write")  # carries the claim into the database
        with store.engine.connect() as conn:
            assert conn.execute(select(t.nonces.c.nonce)).scalars().all() == [N1]
        assert not store.claim_nonce(A, N1, T0)
    finally:
        store.close()


def test_closing_the_store_writes_the_claims_it_held(shared_url: str) -> None:
    store = open_store(shared_url)
    assert store.claim_nonce(A, N1, T0)
    store.close()
    reopened = open_store(shared_url)
    try:
        assert not reopened.claim_nonce(A, N1, T0)
    finally:
        reopened.close()


def test_of_replicas_claiming_one_nonce_at_once_exactly_one_wins(postgres_url: str) -> None:
    stores = [open_store(postgres_url) for _ in range(2)]
    wins: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def claim(store: SqlStore, nonce: str) -> None:
        start.wait()
        won = store.claim_nonce(A, nonce, T0)
        with lock:
            wins.append(won)

    try:
        for round_ in range(5):
            nonce = f"{round_:032x}"
            threads = [
                threading.Thread(target=claim, args=(stores[n % 2], nonce)) for n in range(8)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sum(wins) == 1, wins
            wins.clear()
    finally:
        for store in stores:
            store.close()


def test_request_nonces_refuse_a_replay_after_a_restart(shared_url: str) -> None:
    now = T0
    before = open_store(shared_url)
    try:
        first = RequestNonces(before)
        assert first.claim(A, N1, now, now)
        first.flush()  # the housekeeper's, twice a second
        assert not first.claim(A, N1, now, now)
    finally:
        before.close()
    after = open_store(shared_url)  # a new process: nothing in memory
    try:
        nonces = RequestNonces(after)
        assert not nonces.claim(A, N1, now, now + 1000)
        assert nonces.claim(A, N2, now, now + 1000)
        assert nonces.prune(now + KEEP_MS) == 0
        assert nonces.prune(now + KEEP_MS + 1) == 2
    finally:
        after.close()
