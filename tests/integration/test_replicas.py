"""Several `allmende coordinator serve` processes on one PostgreSQL database and one data
folder serve one job together: no unit is leased beyond its replica target at once, no
result is stored twice, and the dataset is written once and served by every replica."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from allmende.client.connection import CoordinatorClient
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.store import open_store
from allmende.coordinator.store import schema as t
from allmende.protocol.signing import SigningKey
from tests.conftest import job_requests
from tests.integration.fleet import (
    ALLMENDE,
    Fleet,
    ServeProcess,
    init_coordinator,
    pull_rows,
    register,
    wait_for_state,
)
from tests.integration.volunteers import HashComputer, text_vector

REPLICAS = 2
HELD = 8  # --unproven-leases


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[list[ServeProcess]]:
    data = tmp_path / "coordinator"
    init_coordinator(data, postgres_url)
    # Volunteers here lease many units before answering any: more than the default cap of an
    # unproven volunteer's leases (4), so that twelve of them can hold every slot.
    flags = ("--unproven-leases", str(HELD))
    started = [ServeProcess(data, postgres_url, flags=flags).start() for _ in range(REPLICAS)]
    yield started
    for replica in started:
        replica.stop()


def admin(replica: ServeProcess) -> CoordinatorClient:
    return CoordinatorClient(
        replica.address, admin_token=(replica.data / "admin.token").read_text().strip()
    )


@pytest.mark.slow
def test_volunteers_racing_through_two_replicas_never_overfill_a_unit(
    replicas: list[ServeProcess], postgres_url: str, tmp_path: Path
) -> None:
    texts = [f"replicated sentence {i}" for i in range(60)]
    with admin(replicas[0]) as client:
        created = client.create_job(job_requests(texts, redundancy=2, unit_size=2))
    units = created.units
    # Twelve volunteers lease as fast as they can, each alternating between the replicas,
    # until nothing is left: every unit must end up with exactly two distinct holders.
    grants: list[tuple[str, str]] = []
    held: dict[str, list[tuple[object, object]]] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(12)

    def lease_all(index: int) -> None:
        key = SigningKey.generate()
        clients = [CoordinatorClient(r.address, signer=key) for r in replicas]
        try:
            volunteer = register(clients[0], key)
            barrier.wait()
            mine = []
            empty = 0  # with SKIP LOCKED, one empty answer may only mean "locked right now"
            for turn in range(10 * units + 20):
                volunteer.client = clients[(index + turn) % len(clients)]
                got = volunteer.lease()
                if got is None:
                    empty += 1
                    if empty >= 10:
                        break
                    time.sleep(0.01)
                    continue
                empty = 0
                mine.append(got)
                with lock:
                    grants.append((volunteer.volunteer_id, got[1].unit_id))
            with lock:
                held[volunteer.volunteer_id] = mine  # type: ignore[assignment]
            # then every lease is answered, through either replica
            for turn, (lease, unit) in enumerate(mine):
                volunteer.client = clients[turn % len(clients)]
                volunteer.submit(lease, unit, HashComputer().compute(unit))  # type: ignore[arg-type]
        finally:
            for client in clients:
                client.close()

    threads = [threading.Thread(target=lease_all, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    per_unit = Counter(unit for _, unit in grants)
    assert len(per_unit) == units
    assert set(per_unit.values()) == {2}
    assert len(set(grants)) == len(grants)  # nobody holds one unit twice
    # the cap on leases held at once holds across replicas (the advisory lock per volunteer)
    assert max(Counter(volunteer for volunteer, _ in grants).values()) <= HELD
    assert wait_for_state(replicas, created.job_id, ("complete",), 60) == "complete"

    store = open_store(postgres_url)
    try:
        r, e = t.results, t.events
        with store.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(r)).scalar_one() == 2 * units
            completed = conn.execute(
                select(func.count()).where(e.c.kind == "job.complete")
            ).scalar_one()
        assert completed == 1
    finally:
        store.close()
    # each replica serves the dataset the other (or it) wrote into the shared folder
    fingerprint = CoordinatorHome(replicas[0].data).load_key().fingerprint
    for n, replica in enumerate(replicas):
        rows = pull_rows(replica.address, created.job_id, fingerprint, tmp_path / f"pulled-{n}")
        assert sorted(rows, key=int) == [str(i) for i in range(len(texts))]
        for item_id, (text, vector) in rows.items():
            assert text == texts[int(item_id)]
            assert float(vector @ text_vector(text, 384)) > 0.999


def stuck(url: str, job_id: str) -> str:
    """What an unfinished job's open units and the volunteers look like, for the message."""
    store = open_store(url)
    try:
        u, le, r, v = t.units, t.leases, t.results, t.volunteers
        with store.engine.connect() as conn:
            units = conn.execute(
                select(u.c.unit_id, u.c.state, u.c.target, u.c.busy, u.c.quorum).where(
                    u.c.job_id == job_id, u.c.state != "accepted"
                )
            ).all()
            leases = conn.execute(
                select(le.c.unit_id, le.c.volunteer_id, le.c.state, le.c.reason).where(
                    le.c.unit_id.in_([row.unit_id for row in units])
                )
            ).all()
            results = conn.execute(
                select(r.c.unit_id, r.c.volunteer_id, r.c.state, r.c.reason).where(
                    r.c.unit_id.in_([row.unit_id for row in units])
                )
            ).all()
            quarantined = conn.execute(
                select(v.c.volunteer_id, v.c.quarantine_reason).where(v.c.quarantined != 0)
            ).all()
        return f"units {units}; leases {leases}; results {results}; quarantined {quarantined}"
    finally:
        store.close()


@pytest.mark.slow
def test_two_replicas_share_the_work_of_one_job(
    replicas: list[ServeProcess], tmp_path: Path, postgres_url: str
) -> None:
    texts = [f"shared sentence {i}" for i in range(200)]
    with admin(replicas[0]) as client:
        created = client.create_job(job_requests(texts, redundancy=2, unit_size=4))
    with Fleet(replicas, 8, seed=1) as fleet:
        state = wait_for_state(replicas, created.job_id, ("complete", "failed"), 90)
    assert state == "complete", (
        f"{stuck(postgres_url, created.job_id)}; errors {fleet.errors}; refused {fleet.refused}"
    )
    assert fleet.errors == [] and not fleet.refused
    with admin(replicas[1]) as client:
        job = client.get_job(created.job_id)
    assert job.units_accepted == created.units and job.results_rejected == 0
    # Every result the volunteers sent landed once; units got 2 each, or 1 where adaptive
    # replication let a trusted volunteer's result stand alone (after 10 valid in a row).
    assert sum(fleet.submitted.values()) == job.results_received
    assert created.units <= job.results_received <= 2 * created.units
    assert job.volunteers == 8
    assert not list((replicas[0].data / "datasets").glob(".*.tmp"))


def test_a_second_coordinator_key_cannot_take_a_shared_database(
    replicas: list[ServeProcess], postgres_url: str, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    refused = subprocess.run(
        [*ALLMENDE, "coordinator", "init", "--data", str(other), "--db", postgres_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "already serves coordinator" in refused.stderr
    assert not other.exists()  # nothing was created
    # a folder with another key, pointed at the database, is refused too
    CoordinatorHome(other).init()
    served = subprocess.run(
        [
            *ALLMENDE,
            "coordinator",
            "serve",
            "--data",
            str(other),
            "--db",
            postgres_url,
            "--listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 1
    assert "must share one data folder" in served.stderr
