"""A transaction PostgreSQL rolls back to break a deadlock is reported as Unavailable
(clients retry it), and it changed nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from allmende.coordinator.store import open_store
from allmende.coordinator.store import schema as t
from allmende.coordinator.store.records import VolunteerRecord
from allmende.coordinator.store.sql import SqlStore
from allmende.protocol.errors import Unavailable


@pytest.fixture
def pg(postgres_url: str) -> Iterator[SqlStore]:
    store = open_store(postgres_url)
    yield store
    store.close()


def test_a_deadlock_is_unavailable_and_rolled_back(pg: SqlStore) -> None:
    for name in ("a", "b"):
        pg.put_volunteer(VolunteerRecord(name * 64, b"k" * 32, name, "", "", 0))
    both_hold_one = threading.Barrier(2)
    outcomes: dict[str, BaseException | None] = {}

    def cross(first: str, second: str) -> None:
        v = t.volunteers
        try:
            with pg._tx() as conn:
                for n, who in enumerate((first, second)):
                    conn.execute(
                        v.update()
                        .where(v.c.volunteer_id == who * 64)
                        .values(display_name=f"by {first}")
                    )
                    if n == 0:
                        both_hold_one.wait(timeout=10)
            outcomes[first] = None
        except BaseException as exc:  # the outcome is what is checked
            outcomes[first] = exc

    threads = [threading.Thread(target=cross, args=pair) for pair in (("a", "b"), ("b", "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    failed = [who for who, exc in outcomes.items() if exc is not None]
    assert sorted(outcomes) == ["a", "b"] and len(failed) == 1, outcomes
    error = outcomes[failed[0]]
    assert isinstance(error, Unavailable) and "try again" in error.message
    winner = "b" if failed == ["a"] else "a"
    with pg.engine.connect() as conn:
        names = set(conn.execute(select(t.volunteers.c.display_name)).scalars())
    assert names == {f"by {winner}"}  # the loser's first update was rolled back
