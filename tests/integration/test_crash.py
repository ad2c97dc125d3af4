"""Crash safety: `allmende coordinator serve` killed with SIGKILL at random points of a job,
started again on the same folder and database, and the job finished. The pulled dataset must
hold exactly the rows, with the same canonical embeddings, as an uninterrupted run.

On SQLite the one coordinator is killed; on PostgreSQL one of two replicas is, while the
other keeps serving. The seed is printed; ALLMENDE_CRASH_SEED=N replays a run's kill points.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from allmende.client.connection import CoordinatorClient
from allmende.coordinator.app import serve
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.store import open_store
from allmende.coordinator.store import schema as t
from tests.conftest import job_requests
from tests.integration.fleet import (
    Fleet,
    Reachable,
    ServeProcess,
    init_coordinator,
    pull_rows,
    wait_for_state,
)
from tests.store.helpers import slots_out_of_step

TEXTS = [f"sentence {i} about " + " ".join(["crash", "safety"][: i % 3]) for i in range(320)]
IDS = [f"row-{i}" for i in range(len(TEXTS))]
# Short leases: a lease granted just before a kill, whose answer was lost, comes back soon.
SPEC = {"redundancy": 2, "unit_size": 4, "lease_seconds": 2}
VOLUNTEERS = 6
# Each volunteer's pause per unit: long enough that the job outlasts a few restarts.
COMPUTE_S = (0.01, 0.08)
KILLS = 3

Rows = dict[str, tuple[str, np.ndarray]]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Rows:
    """The dataset of the same job, run by the same volunteers, without a crash."""
    root = tmp_path_factory.mktemp("uninterrupted")
    home = CoordinatorHome(root / "coordinator")
    home.init()
    with serve(home.root, "127.0.0.1:0", drain_s=0) as running:
        with CoordinatorClient(running.address, admin_token=home.load_token()) as admin:
            job_id = admin.create_job(job_requests(TEXTS, IDS, **SPEC)).job_id
        with Fleet([running], VOLUNTEERS, seed=0, compute_s=COMPUTE_S):
            assert wait_for_state([running], job_id, ("complete",), 60) == "complete"
        return pull_rows(
            running.address, job_id, running.coordinator.key.fingerprint, root / "pulled"
        )


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("ALLMENDE_CRASH_SEED") or random.randrange(1 << 30))
    print(f"ALLMENDE_CRASH_SEED={value}")
    return value


def run_with_kills(
    replicas: list[ServeProcess], victims: list[ServeProcess], data: Path, seed: int
) -> tuple[str, list[str]]:
    """Create the job, run volunteers, SIGKILL and restart victims at random moments until
    the job is complete; returns (job id, what was killed when).

    The moments are random points of the job's progress (after a random number of results,
    then a random few milliseconds), so that they fall inside the job however fast the
    machine runs it, and inside whatever a coordinator happens to be doing then."""
    rng = random.Random(seed)
    token = (data / "admin.token").read_text().strip()
    with CoordinatorClient(replicas[0].address, admin_token=token) as admin:
        job_id = admin.create_job(job_requests(TEXTS, IDS, **SPEC)).job_id
    kills: list[str] = []

    restarts: list[threading.Thread] = []
    failed_restarts: list[BaseException] = []

    def kill(victim: ServeProcess, when: str) -> None:
        for restart in restarts:  # the victim is back up before it is killed again
            restart.join(timeout=60)
        victim.kill()
        done = sum(fleet.submitted.values())
        kills.append(f"{when}: replica {replicas.index(victim)} after {done} results")
        pause = rng.uniform(0.0, 0.3)

        def restart() -> None:
            time.sleep(pause)
            try:
                victim.start()
            except BaseException as exc:  # reported below
                failed_restarts.append(exc)

        # In the background, so that the job (served on by any other replica) goes on
        # being killed at its chosen points while the victim comes back.
        restarts.append(threading.Thread(target=restart))
        restarts[-1].start()

    reachable: list[Reachable] = list(replicas)
    total = SPEC["redundancy"] * len(TEXTS) // SPEC["unit_size"]
    thresholds = sorted(rng.sample(range(total // 20, total * 19 // 20), KILLS))
    with Fleet(replicas, VOLUNTEERS, seed, compute_s=COMPUTE_S) as fleet:
        deadline = time.monotonic() + 90
        for n, threshold in enumerate(thresholds):
            while sum(fleet.submitted.values()) < threshold and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.03))
            kill(rng.choice(victims), f"kill {n}")
        # One more as the dataset is being written, if we catch the job in that state.
        state = wait_for_state(reachable, job_id, ("assimilating", "complete", "failed"), 90)
        if state == "assimilating":
            kill(rng.choice(victims), "while assimilating")
        state = wait_for_state(reachable, job_id, ("complete", "failed"), 90)
        for restart in restarts:
            restart.join(timeout=60)
    assert failed_restarts == []
    assert state == "complete", f"job {job_id} ended {state!r} after {kills}"
    print(f"kills: {kills}; results: {dict(fleet.submitted)}; refused: {dict(fleet.refused)}")
    assert fleet.errors == []
    assert fleet.refused["INTERNAL"] == 0, fleet.refused  # no deadlock, no broken invariant
    return job_id, kills


def check_database(db_url: str, job_id: str) -> None:
    """What the kills must not have broken: one result per replica slot, slot counts."""
    store = open_store(db_url)
    try:
        u, r, e = t.units, t.results, t.events
        with store.engine.connect() as conn:
            states = dict(
                conn.execute(
                    select(u.c.state, func.count()).where(u.c.job_id == job_id).group_by(u.c.state)
                ).all()
            )
            assert states == {"accepted": len(TEXTS) // SPEC["unit_size"]}
            # Each unit reached its own quorum: the job's 2, or 1 where adaptive replication
            # let a trusted volunteer's result (its gold rows checked) stand alone.
            short = conn.execute(
                select(func.count()).where(
                    u.c.job_id == job_id, (u.c.replicas < u.c.quorum) | (u.c.quorum < 1)
                )
            ).scalar_one()
            assert short == 0
            valid = conn.execute(
                select(func.count())
                .select_from(r.join(u, u.c.unit_id == r.c.unit_id))
                .where(u.c.job_id == job_id, r.c.state == "valid")
            ).scalar_one()
            quorums = conn.execute(
                select(func.sum(u.c.quorum)).where(u.c.job_id == job_id)
            ).scalar_one()
            # one valid result per unit and quorum seat: none lost, none counted twice
            assert valid == quorums
            assert len(TEXTS) // SPEC["unit_size"] <= valid <= SPEC["redundancy"] * len(
                TEXTS
            ) // SPEC["unit_size"]
            completed = conn.execute(
                select(func.count()).where(e.c.kind == "job.complete", e.c.job_id == job_id)
            ).scalar_one()
            assert completed == 1  # the dataset was recorded once
        assert slots_out_of_step(store) == {}
    finally:
        store.close()


def assert_same_dataset(got: Rows, want: Rows) -> None:
    assert sorted(got) == sorted(want) == sorted(IDS)
    for item_id, (text, vector) in want.items():
        assert got[item_id][0] == text
        assert np.array_equal(got[item_id][1], vector), item_id


@pytest.fixture
def sqlite_coordinator(tmp_path: Path) -> Iterator[ServeProcess]:
    data = tmp_path / "coordinator"
    init_coordinator(data)
    coordinator = ServeProcess(data).start()
    yield coordinator
    coordinator.stop()


@pytest.mark.slow
def test_a_sqlite_coordinator_killed_at_random_finishes_the_same_dataset(
    sqlite_coordinator: ServeProcess, uninterrupted: Rows, seed: int, tmp_path: Path
) -> None:
    data = sqlite_coordinator.data
    job_id, kills = run_with_kills([sqlite_coordinator], [sqlite_coordinator], data, seed)
    assert sqlite_coordinator.starts == len(kills) + 1
    fingerprint = CoordinatorHome(data).load_key().fingerprint
    rows = pull_rows(sqlite_coordinator.address, job_id, fingerprint, tmp_path / "pulled")
    assert_same_dataset(rows, uninterrupted)
    check_database(CoordinatorHome(data).db_url, job_id)
    assert not list((data / "datasets").glob(".*.tmp"))  # no half-written dataset left


@pytest.fixture
def postgres_replicas(tmp_path: Path, postgres_url: str) -> Iterator[list[ServeProcess]]:
    data = tmp_path / "coordinator"
    init_coordinator(data, postgres_url)
    replicas = [ServeProcess(data, postgres_url).start() for _ in range(2)]
    yield replicas
    for replica in replicas:
        replica.stop()


@pytest.mark.slow
def test_one_of_two_postgres_replicas_killed_at_random_finishes_the_same_dataset(
    postgres_replicas: list[ServeProcess],
    postgres_url: str,
    uninterrupted: Rows,
    seed: int,
    tmp_path: Path,
) -> None:
    victim, survivor = postgres_replicas
    data = victim.data
    job_id, kills = run_with_kills(postgres_replicas, [victim], data, seed)
    assert survivor.starts == 1 and victim.starts == len(kills) + 1
    fingerprint = CoordinatorHome(data).load_key().fingerprint
    # pulled from the replica that was never killed, whichever of the two wrote it
    rows = pull_rows(survivor.address, job_id, fingerprint, tmp_path / "pulled")
    assert_same_dataset(rows, uninterrupted)
    check_database(postgres_url, job_id)
    assert not list((data / "datasets").glob(".*.tmp"))
