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

import dataclasses
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from allmende.coordinator.domain.admin import Admin
from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.v1 import allmende_pb2 as pb
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
from tests.integration.rawclient import expect_error, text_rows
from tests.integration.trusthelp import (
    launch,
    lockstep,
    random_rows,
    run_honest,
    sentences,
    unit_of,
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
    # The default policy: no trust in loopback. Without coordinator gold, a fresh
    # coordinator starts as its README says: the operator's own (honest) volunteers compute
    # a first job with --trust-local, which leaves them a record and the model gold rows.
    policy = dataclasses.replace(POLICY, trust_local=False)
    with simulation(root, model, volunteers, policy, gold=gold) as sim:
        if not gold:
            sim.operator_warm_up(texts[2 * ITEMS :], unit_size=UNIT_SIZE, redundancy=2)
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
    # plain: 2 replicas of 16 rows, each lease with a shared gold row, one of its own and
    # a decoy every other time (issue 15): about 2 * (16 + 2.5) / 16
    assert 2.0 < plain.overhead < 2.4, plain
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


# ----------------------------------------------------------------------------- issue 15
# Raw volunteers (tests/integration/trusthelp.py: vectors that depend only on each text)
# against a coordinator with the policy `serve` has by default. The test suite otherwise
# runs with ALLMENDE_TRUST_LOCAL=1 (tests/conftest.py); here it is off, as by default, so
# that volunteers on loopback are as unproven as any on another address. (Loopback is only
# exempt from the distinct-address rule, which a pair on two addresses passes anyway.)
DEFAULT = TrustPolicy(trust_local=False)
KIND = "embed-text"


def fabricated(texts: tuple[str, ...], seed: int) -> np.ndarray:
    """The same invented unit rows for the same texts, whoever of a pair computes them."""
    return random_rows(len(texts), DIMS_RAW, seed + len(texts))


DIMS_RAW = 384


def test_a_fresh_colluding_pair_publishes_nothing_under_default_settings(
    coordinator_home: CoordinatorHome,
) -> None:
    """Issue 15, finding 2: two new accounts submitting identical invented vectors got a new
    job published. Now agreeing is not enough: the unit waits for a proven replica."""
    with launch(coordinator_home, DEFAULT) as net:
        job = net.create(sentences(32), redundancy=2, unit_size=8)
        x, y = net.volunteer(), net.volunteer()
        for _ in net.units(job):
            lx, ly = x.lease(), y.lease()
            assert lx is not None and ly is not None
            assert unit_of(lx).unit_id == unit_of(ly).unit_id
            for volunteer, lease in ((x, lx), (y, ly)):
                # identical rows for identical texts, whatever order each copy is in
                rows = np.stack([fabricated((t,), 7)[0] for t in unit_of(lease).texts])
                assert volunteer.submit(lease, rows).status == "pending"
        for unit_id in net.units(job):
            row = net.unit(unit_id)
            assert row.state == "open" and row.canonical_result_id is None
            assert "proven" in row.reason or row.target == 3
            assert {r.state for r in net.results(unit_id)} == {"pending"}
        assert net.job_state(job) == "running"
        assert not (coordinator_home.root / "datasets" / job).exists()
        # an honest volunteer with a record (the operator's, vouched for) settles each unit
        # against them: the proven group wins and the pair is outvoted
        trusted = dataclasses.replace(DEFAULT, trust_local=True)
    with launch(coordinator_home, trusted) as net:
        honest = [net.volunteer(), net.volunteer()]  # a quorum of the operator's own
        run_honest(net, honest)
        assert net.wait_state(job, "complete") == "complete"
        data = net.dataset(job)
        expected = text_rows(data["text"], DIMS_RAW)
        assert all(
            float(np.dot(v, e)) > 0.999 for v, e in zip(data["embedding"], expected, strict=True)
        )
        for unit_id in net.units(job):
            states = {r.volunteer_id: r.state for r in net.results(unit_id)}
            assert states[honest[0].id] == states[honest[1].id] == "valid"
            assert states[x.id] == states[y.id] == "invalid"


def test_with_coordinator_gold_a_pair_lying_on_what_both_copies_hold_is_caught(
    coordinator_home: CoordinatorHome,
) -> None:
    """--gold-compute seeds gold rows: the pair compares its copies, answers the rows only
    one copy holds (each lease's own gold row and decoy) honestly and invents the rest; the
    shared gold rows catch both at once, and honest newcomers finish the job on gold alone."""
    with launch(coordinator_home, DEFAULT, gold=True) as net:
        # an earlier job of the model left gold rows (paused here, so nobody leases its
        # units): the new job draws on them from its first lease, and none is a text of
        # the new job, so newcomers working through all of it still meet fresh gold rows
        earlier = net.create(sentences(32, "earlier"), redundancy=2, unit_size=8)
        Admin(net.c).pause_job(earlier)
        job = net.create(sentences(48), redundancy=2, unit_size=8, gold_fraction=0.25)
        x, y = net.volunteer(), net.volunteer()
        lx, ly = x.lease(), y.lease()
        assert lx is not None and ly is not None
        tx, ty = unit_of(lx).texts, unit_of(ly).texts
        for volunteer, lease, mine, theirs in ((x, lx, tx, ty), (y, ly, ty, tx)):
            rows = volunteer.honest(lease)
            both = [i for i, text in enumerate(mine) if text in set(theirs)]
            rows[both] = np.stack([fabricated((mine[i],), 3)[0] for i in both])
            response = volunteer.submit(lease, rows)
            assert response.status == "rejected" and "gold row" in response.reason
        for volunteer in (x, y):
            assert net.store.get_volunteer(volunteer.id).quarantined  # type: ignore[union-attr]
        a, b = net.volunteer(), net.volunteer()
        run_honest(net, [a, b])
        assert net.wait_state(job, "complete") == "complete"
        data = net.dataset(job)
        expected = text_rows(data["text"], DIMS_RAW)
        assert np.allclose(np.stack(data["embedding"]), expected, atol=2e-3)


def lease_many(volunteer: Any, count: int) -> list[pb.Lease]:
    raw = volunteer.raw
    request = pb.LeaseWorkRequest(volunteer_id=raw.volunteer_id, max_units=count)
    response = raw.stub.LeaseWork(request, timeout=10, metadata=raw.signed("LeaseWork", request))
    return [response.lease, *response.more_leases] if response.HasField("lease") else []


def test_a_volunteer_answering_only_repeated_texts_honestly_is_caught(
    coordinator_home: CoordinatorHome,
) -> None:
    """Issue 15, finding 3: with an honest streak, a volunteer leased 10 units in one call,
    answered texts it saw twice (the gold rows then) honestly and invented the rest. Now
    each lease holds a gold row it was not given before and decoys repeat ordinary texts:
    the first such result misses a gold row, and nothing it invented is published."""
    policy = dataclasses.replace(DEFAULT, adaptive_after=3)
    with launch(coordinator_home, policy, gold=True) as net:
        warm = net.create(sentences(64, "warm-up"), redundancy=2, unit_size=8)
        cheat, partner = net.volunteer(), net.volunteer()
        lockstep(net, cheat, partner)
        assert net.job_state(warm) in ("assimilating", "complete")
        assert net.store.get_reputation(cheat.id)[KIND].consecutive_valid >= 3
        # gold rows from an earlier job of the model nobody works on (paused), as a job
        # meets them once the model has a history; the job itself is large beside the batch
        earlier = net.create(sentences(32, "earlier"), redundancy=2, unit_size=8)
        Admin(net.c).pause_job(earlier)
        job = net.create(sentences(640), redundancy=2, unit_size=8)
        seen: set[str] = set()
        leases = lease_many(cheat, 10)
        assert len(leases) == 10
        counts: dict[str, int] = {}
        for lease in leases:
            for text in unit_of(lease).texts:
                counts[text] = counts.get(text, 0) + 1
        outcomes = []
        for lease in leases:
            texts = unit_of(lease).texts
            rows = cheat.honest(lease)
            fresh = [i for i, t in enumerate(texts) if counts[t] < 2 and t not in seen]
            rows[fresh] = random_rows(len(fresh), DIMS_RAW, seed=len(outcomes))
            seen.update(texts)
            outcomes.append(cheat.submit(lease, rows))
            if net.store.get_volunteer(cheat.id).quarantined:  # type: ignore[union-attr]
                break
        caught = [o for o in outcomes if o.status == "rejected" and "gold row" in o.reason]
        assert caught and len(outcomes) <= 2, [(o.status, o.reason) for o in outcomes]
        assert net.store.get_volunteer(cheat.id).quarantined  # type: ignore[union-attr]
        others = [net.volunteer() for _ in range(2)]
        run_honest(net, [partner, *others])
        assert net.wait_state(job, "complete") == "complete"
        data = net.dataset(job)
        expected = text_rows(data["text"], DIMS_RAW)
        assert np.allclose(np.stack(data["embedding"]), expected, atol=2e-3)


def rotated(rows: np.ndarray, degrees: float, seed: int = 1) -> np.ndarray:
    """Each row turned by `degrees` towards a random direction orthogonal to it."""
    noise = np.random.default_rng(seed).standard_normal(rows.shape)
    noise -= np.sum(noise * rows, axis=1, keepdims=True) * rows
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    angle = np.deg2rad(degrees)
    return np.asarray(np.cos(angle) * rows + np.sin(angle) * noise, dtype=np.float32)


def test_a_rotating_or_scaling_replica_does_not_set_the_published_values(
    coordinator_home: CoordinatorHome,
) -> None:
    """Issue 15, finding 5: rows turned by 2.4 degrees and scaled by 1.015 agree within tau
    = 0.999 and were published as they came, 1.5 % off unit norm. Scaled rows are now
    refused (fp16 rows lie within 0.002 of unit norm); turned rows agree, but what is
    published is the normalised mean of the agreeing replicas."""
    with launch(coordinator_home, dataclasses.replace(DEFAULT, trust_local=True)) as net:
        job = net.create(sentences(8), redundancy=2, unit_size=8)
        tilt, honest = net.volunteer(), net.volunteer()
        lt = tilt.lease()
        assert lt is not None
        turned_rows = rotated(tilt.honest(lt), 2.4)
        expect_error(
            lambda: tilt.submit(lt, turned_rows * 1.015),
            grpc.StatusCode.INVALID_ARGUMENT,
            "payload",
            "norm",
            "float16",
        )
        assert tilt.submit(lt, turned_rows).status == "pending"
        lh = honest.lease()
        assert lh is not None
        assert honest.submit(lh).status == "accepted"
        assert net.wait_state(job, "complete") == "complete"
        data = net.dataset(job)
        published = np.stack(data["embedding"]).astype(np.float64)
        truth = text_rows(data["text"], DIMS_RAW).astype(np.float64)
        tilted = dict(zip(unit_of(lt).texts, turned_rows.astype(np.float64), strict=True))
        norms = np.linalg.norm(published, axis=1)
        assert np.all(np.abs(norms - 1.0) <= 0.002), norms
        for text, row, good in zip(data["text"], published, truth, strict=True):
            bad = tilted[text]
            assert float(np.dot(row, good)) > float(np.dot(bad, good)) + 1e-4  # halfway back
            assert not np.allclose(row, bad, atol=1e-3)  # not the first replica's values


def test_a_result_after_its_unit_was_leased_again_is_refused(
    coordinator_home: CoordinatorHome,
) -> None:
    """Issue 15: a result sent after its lease expired and the unit went to someone else is
    refused (no fault counted: slow is not dishonest), and leaves the unit as it was."""
    with launch(coordinator_home) as net:
        job = net.create(sentences(8), redundancy=2, unit_size=8, lease_seconds=1)
        late, b, c = net.volunteer(), net.volunteer(), net.volunteer()
        held = late.lease()
        assert held is not None
        time.sleep(1.1)
        lb, lc = b.lease(), c.lease()
        assert lb is not None and lc is not None
        assert unit_of(lb).unit_id == unit_of(lc).unit_id == unit_of(held).unit_id
        expect_error(
            lambda: late.submit(held), grpc.StatusCode.FAILED_PRECONDITION, "leased again"
        )
        assert net.results(unit_of(held).unit_id) == []
        assert net.store.get_reputation(late.id).get(KIND) is None  # no fault counted
        assert b.submit(lb).status == "pending"
        assert c.submit(lc).status == "accepted"
        assert net.wait_state(job, "complete") == "complete"
