"""Adversary simulation: honest volunteers running the real all-MiniLM-L6-v2 on STS-B
sentences, plus one cheater of each kind (random vectors, honest rows plus noise to cosine
0.99, another model, a replayed old result, a copied result, a forged signature, a 10 %
cheater), against a real coordinator over gRPC. See tests/integration/adversary.py for the
behaviours and the driver; bench/adversary.py prints the same run's figures.

The bound: a cheater is quarantined by its 3rd dishonest unit at the latest (BOUND below). A
gold miss quarantines at once; a forged signature, replay or copy counts as a fault, and
three faults quarantine; without gold rows, three results outvoted by the quorum do. With
gold rows from the coordinator, every cheater but the forger is caught on its first
dishonest unit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from allmende.coordinator.domain.trust import TrustPolicy
from tests.conftest import read_stsb
from tests.integration.adversary import (
    Model,
    audit,
    cast,
    collusion_cast,
    dataset_rows,
    hash_model,
    poisoned_gold,
    real_model,
    reputation,
    row_cosines,
    simulation,
)

pytestmark = pytest.mark.slow

HONEST = 4
ITEMS = 800
UNIT_SIZE = 16
TAU = 0.999  # the job default
# A short run: trust (units going out alone) after 5 consecutive valid results, and rows a
# quorum agreed on become gold rows once one of its volunteers has such a streak.
POLICY = TrustPolicy(adaptive_after=5, gold_streak=5)
BOUND = max(POLICY.fault_limit, POLICY.disagreement_limit)
# The 10 % cheater first cheats once it could go out alone and its quorum could be gold.
TRUSTED_AFTER = max(POLICY.adaptive_after, POLICY.gold_streak)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Unique STS-B sentences (train), in file order."""
    unique = dict.fromkeys(s for pair in read_stsb("train") for s in pair[:2])
    return list(unique)[: 3 * ITEMS]


@pytest.fixture(scope="module")
def model(shared_computer: object) -> Model:
    return real_model(shared_computer)


def check_dataset(root: Path, job_id: str, model: Model) -> None:
    """Every row of the written dataset is the honest model's answer for its text."""
    rows_texts, embeddings = dataset_rows(root / "datasets" / job_id)
    assert len(rows_texts) == ITEMS
    cosines = row_cosines(embeddings, model(rows_texts))
    worst = int(np.argmin(cosines))
    assert cosines[worst] >= TAU, f"row {rows_texts[worst]!r}: cosine {cosines[worst]:.4f}"


@pytest.mark.parametrize("gold", [True, False], ids=["coordinator-gold", "quorum-gold-only"])
def test_every_cheater_is_quarantined_and_no_row_rests_on_one(
    tmp_path: Path, texts: list[str], model: Model, gold: bool
) -> None:
    root = tmp_path / "coordinator"
    volunteers = cast(HONEST, trusted_after=TRUSTED_AFTER)
    with simulation(root, model, volunteers, POLICY, gold=gold) as sim:
        job_id = sim.create_job(texts[:ITEMS], unit_size=UNIT_SIZE, redundancy=2)
        run = sim.run(job_id)
        assert run.state == "complete", run

        honest = [v for v in volunteers if v.honest]
        cheaters = [v for v in volunteers if not v.honest]
        table = "\n".join(
            f"{v.kind:28} leased {v.units:3} caught after {v.caught_after:3} "
            f"(dishonest {v.dishonest_when_caught}/{v.dishonest}) {v.reason}"
            for v in volunteers
        )
        for cheater in cheaters:
            assert cheater.dishonest, f"{cheater.kind} never cheated:\n{table}"
            assert cheater.quarantined, f"{cheater.kind} was never quarantined:\n{table}"
            assert cheater.dishonest_when_caught <= BOUND, table
            assert cheater.caught_after <= cheater.first_dishonest + BOUND - 1, table
        # With gold rows from the start, a gold row catches a cheater at its first dishonest
        # unit that gets as far as the gold check (the bench shows 1 for nearly all), and
        # none of it is accepted (audit below). Allow a second: a replayed or copied result
        # may first be refused as malformed (wrong lease, unit hash or row count: a fault),
        # and a lease's gold rows may have been withdrawn meanwhile (harvested from a unit
        # a quarantine re-opened), leaving nothing to check. The forger's results are only
        # ever refused: three faults.
        if gold:
            for cheater in cheaters:
                if cheater.kind != "forged signature":
                    assert cheater.dishonest_when_caught <= 2, table
        for volunteer in honest:
            assert not volunteer.quarantined, table
            record = reputation(sim, volunteer)
            assert record["faults"] == record["disagreements"] == record["gold_missed"] == 0
            assert record["valid"] == volunteer.units > 0
        # The forger tried to submit in honest-1's name: refused before it counted against
        # anyone (the request signer must be the envelope's volunteer).
        assert reputation(sim, honest[0])["faults"] == 0

        honest_ids = {v.volunteer_id for v in honest}
        assert audit(root / "coordinator.db", job_id, honest_ids) == []
        check_dataset(root, job_id, model)


def test_adaptive_replication_costs_far_less_than_quorum_two(
    tmp_path: Path, texts: list[str], model: Model
) -> None:
    """Compute per accepted item (gold rows included): plain quorum 2 spends just over 2;
    adaptive replication after a warm-up job spends little more than 1. The bench measures
    the goal (<= 1.15) on larger jobs; here the job is small and the bound loose."""
    plain_policy = TrustPolicy(adaptive=False)
    with simulation(tmp_path / "plain", model, cast(HONEST, ()), plain_policy) as sim:
        plain = sim.run(sim.create_job(texts[ITEMS : 2 * ITEMS], unit_size=UNIT_SIZE))
    with simulation(tmp_path / "adaptive", model, cast(HONEST, ()), POLICY) as sim:
        sim.run(sim.create_job(texts[2 * ITEMS : 3 * ITEMS], unit_size=UNIT_SIZE))  # warm-up
        adaptive = sim.run(sim.create_job(texts[ITEMS : 2 * ITEMS], unit_size=UNIT_SIZE))
        assert not any(v.quarantined for v in sim.volunteers)
    assert plain.state == adaptive.state == "complete"
    assert 2.0 < plain.overhead < 2.25, plain
    assert adaptive.overhead < 1.4, adaptive
    assert adaptive.overhead < 0.7 * plain.overhead


def test_a_colluding_pair_is_caught(tmp_path: Path, texts: list[str]) -> None:
    """Protocol-only (hash model): the pair lies only on units it holds together, after
    comparing its two copies to find the gold rows (texts only one of them got). Replicas
    of a unit share their gold rows, so nothing stands out, the lie covers gold rows too,
    and both are quarantined. (When each lease had gold rows of its own, this pair got
    its lie accepted.)"""
    root = tmp_path / "coordinator"
    volunteers = collusion_cast(HONEST)
    model = hash_model()
    with simulation(root, model, volunteers, POLICY) as sim:
        job_id = sim.create_job(texts[:ITEMS], unit_size=UNIT_SIZE, redundancy=2)
        run = sim.run(job_id, idle_s=5, stall_ok=True)
        pair = [v for v in volunteers if not v.honest]
        honest = [v for v in volunteers if v.honest]
        poisoned = poisoned_gold(root / "coordinator.db", job_id, model, TAU)
        wrong = 0
        if run.state == "complete":
            rows_texts, embeddings = dataset_rows(root / "datasets" / job_id)
            wrong = int((row_cosines(embeddings, model(rows_texts)) < TAU).sum())
        summary = (
            f"job {run.state}; pair lied on {[v.dishonest for v in pair]} unit(s), "
            f"quarantined {[v.quarantined for v in pair]}; honest quarantined "
            f"{sum(v.quarantined for v in honest)}; poisoned gold rows {poisoned}; wrong "
            f"dataset rows {wrong}"
        )
        assert run.state == "complete", summary
        assert not any(v.quarantined for v in honest), summary
        assert poisoned == wrong == 0, summary
        assert not any(v.dishonest for v in pair) or all(v.quarantined for v in pair), summary
