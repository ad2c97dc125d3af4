"""At most VALIDATING_AT_ONCE submit calls validate results at once in a coordinator, and a
lease never waits for them (a volunteer's GPU idles until its lease arrives)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from allmende.coordinator.domain.submit import VALIDATING_AT_ONCE
from allmende.coordinator.home import CoordinatorHome
from tests.conditions import wait_until
from tests.integration.test_batch_rpcs import answers, lease_many, submit_many
from tests.integration.trusthelp import launch, sentences

HOLD_S = 0.05  # how long each validation takes once released, so that calls could overlap


def test_submits_validate_at_most_two_at_once_and_leases_go_by(
    coordinator_home: CoordinatorHome, postgres_url: str
) -> None:
    # PostgreSQL: its calls run on a pool of threads (on SQLite they take turns on the
    # server's event loop, one at a time, and the gate is never contended).
    with launch(coordinator_home, db_url=postgres_url) as net:
        net.create(sentences(24), redundancy=2, unit_size=2)
        volunteers = [net.volunteer() for _ in range(6)]
        leased = [lease_many(v, 2)[1] for v in volunteers]
        assert all(len(pair) == 2 for pair in leased)

        inside = 0
        most = 0
        finished = 0
        lock = threading.Lock()
        release = threading.Event()
        validate: Callable[..., Any] = net.c._submit

        def held(*args: Any, **kwargs: Any) -> Any:  # the real validation, held open
            nonlocal inside, most, finished
            with lock:
                inside += 1
                most = max(most, inside)
            try:
                release.wait(60)  # the first ones hold the gate until the late lease is done
                time.sleep(HOLD_S)  # the rest overlap, if the gate let them
                return validate(*args, **kwargs)
            finally:
                with lock:
                    inside -= 1
                    finished += 1

        net.c._submit = held  # type: ignore[method-assign]
        statuses: list[str] = []

        def send(index: int) -> None:
            v, (first, second) = volunteers[index], leased[index]
            if index % 2:  # SubmitResults, the pair in one call
                statuses.extend(
                    status
                    for status, _ in answers(submit_many(v, [v.result(first), v.result(second)]))
                )
            else:
                statuses.extend(v.submit(lease).status for lease in (first, second))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(volunteers))]
        for thread in threads:
            thread.start()
        wait_until(lambda: inside == VALIDATING_AT_ONCE, "the gate to fill")
        late = net.volunteer()
        assert late.lease() is not None  # registered and leased while the gate is full ...
        assert (inside, finished) == (VALIDATING_AT_ONCE, 0)  # ... and nothing got past it
        release.set()
        for thread in threads:
            thread.join(timeout=60)

        assert most == VALIDATING_AT_ONCE == 2
        assert finished == 12
        assert len(statuses) == 12 and set(statuses) <= {"pending", "accepted"}
