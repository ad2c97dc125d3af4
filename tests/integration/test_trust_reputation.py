"""Reputation at work: adaptive replication lets a long-trusted volunteer decide units alone
(only with gold rows to check it), and credit is the lowest claim of the agreeing results,
capped at the coordinator's own count. A real coordinator in-process on port 0 (SQLite),
raw volunteers over gRPC (see trusthelp.py)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import delete

from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.store import schema as t
from allmende.protocol.kinds.base import claimed_tokens
from allmende.v1 import allmende_pb2 as pb
from tests.integration.trusthelp import (
    Net,
    Volunteer,
    launch,
    lockstep,
    random_rows,
    run_honest,
    sentences,
    unit_of,
)

KIND = "embed-text"
ADAPTIVE = TrustPolicy(adaptive_after=3, replication_floor=0.05, gold_streak=0)


def streak(net: Net, volunteer: Volunteer) -> int:
    rep = net.store.get_reputation(volunteer.id).get(KIND)
    return rep.consecutive_valid if rep else 0


def test_a_long_trusted_volunteer_gets_solo_units_and_a_newcomer_never_does(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, ADAPTIVE, gold=True) as net:
        job = net.create(sentences(40), redundancy=2, unit_size=2)
        trusted, partner = net.volunteer(), net.volunteer()
        streaks, solo = [], []
        while (lease := trusted.lease()) is not None:
            streaks.append(streak(net, trusted))
            unit = unit_of(lease)
            row = net.unit(unit.unit_id)
            if row.quorum == 1:
                assert streaks[-1] >= 3  # never before adaptive_after valid results
                assert row.target == 1
                assert net.gold_positions(lease.lease_id)  # a lone unit carries gold rows
                assert trusted.submit(lease, claimed_tokens=10**9).status == "accepted"
                solo.append(unit.unit_id)
                (result,) = net.results(unit.unit_id)
                assert result.state == "valid"
                # its own claim, capped at the unit's and gold rows (decoys are not credited)
                decoys = set(net.decoy_positions(lease.lease_id))
                worked = [t for i, t in enumerate(unit.texts) if i not in decoys]
                assert result.credit == claimed_tokens(worked)
                continue
            assert row.quorum == 2
            other = partner.lease()
            assert other is not None and unit_of(other).unit_id == unit.unit_id
            trusted.submit(lease)
            assert partner.submit(other).status == "accepted"
        assert streaks[:3] == [0, 1, 2]
        assert solo, "a volunteer with a long streak never got a unit alone"
        assert net.wait_state(job, "complete") == "complete"
        for unit_id in solo:
            row = net.unit(unit_id)
            assert (row.state, row.quorum, row.replicas) == ("accepted", 1, 1)
        data = net.dataset(job)
        by_unit = dict(zip(data["unit_id"], data["replicas"], strict=False))
        assert {by_unit[u] for u in solo} == {1}

        # a newcomer's fresh units, gold rows and all, always wait for a replica
        other_job = net.create(sentences(24, "newcomer"), redundancy=2, unit_size=2)
        newcomer = net.volunteer()
        held = []
        while (lease := newcomer.lease()) is not None:
            held.append(lease)
            assert net.gold_positions(lease.lease_id)
            row = net.unit(unit_of(lease).unit_id)
            assert (row.quorum, row.target) == (2, 2)
        # as many as an unproven volunteer may hold at once, of the job's 12
        assert len(held) == ADAPTIVE.unproven_leases < len(net.units(other_job)) == 12
        response = newcomer.submit(held[0])
        assert response.status == "pending" and "waiting for 1 more" in response.reason


def test_a_lone_result_is_replicated_when_nothing_can_check_it(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, ADAPTIVE, gold=True) as net:
        net.create(sentences(24), redundancy=2, unit_size=2)
        trusted, partner = net.volunteer(), net.volunteer()
        lockstep(net, trusted, partner, units=12)
        assert streak(net, trusted) >= 3

        # a job without gold rows: no unit may go out alone, however trusted the volunteer
        no_gold = net.create(sentences(12, "no-gold"), redundancy=2, unit_size=2, gold_fraction=0)
        leases = []
        while (lease := trusted.lease()) is not None and unit_of(lease).job_id == no_gold:
            leases.append(lease)
            assert net.lease_record(lease.lease_id).gold_ids == ()
            row = net.unit(unit_of(lease).unit_id)
            assert (row.quorum, row.target) == (2, 2)
        assert lease is None and len(leases) == 6
        for lease in leases:
            response = trusted.submit(lease)
            assert response.status == "pending" and "waiting for 1 more" in response.reason
        run_honest(net, [partner])

        def solo_lease(job_id: str) -> pb.Lease:
            """Lease until the unit goes out alone (handing back those that do not)."""
            for _ in range(200):
                lease = trusted.lease()
                assert lease is not None and unit_of(lease).job_id == job_id
                if net.unit(unit_of(lease).unit_id).quorum == 1:
                    return lease
                trusted.raw.release(lease.lease_id, "try again")
            raise AssertionError("never went alone")

        checked = net.create(sentences(8, "checked"), redundancy=2, unit_size=2)

        # the lone unit's gold rows are gone by the time its result comes (as when a
        # quarantine withdraws the unit they came from): nothing checks it, so it is replicated
        lone = solo_lease(checked)
        record = net.lease_record(lone.lease_id)
        with net.store.engine.begin() as conn:
            conn.execute(delete(t.gold).where(t.gold.c.gold_id.in_(record.gold_ids)))
        net.c.gold.refresh(force=True)
        response = trusted.submit(lone)
        assert response.status == "pending"
        assert "a lone result without gold rows to check it; replicating" in response.reason
        row = net.unit(record.unit_id)
        assert (row.state, row.quorum, row.target) == ("open", 2, 2)
        other = partner.lease()
        assert other is not None and unit_of(other).unit_id == record.unit_id
        assert partner.submit(other).status == "accepted"
        assert net.unit(record.unit_id).replicas == 2

        # gold rows that pass tau (0.999) but not by the margin (0.9995): replicated too
        lone = solo_lease(checked)
        matrix = trusted.honest(lone)
        for position in net.gold_positions(lone.lease_id):
            row_vec = matrix[position].astype(np.float64)
            off = random_rows(1, matrix.shape[1], seed=position)[0].astype(np.float64)
            off -= off.dot(row_vec) * row_vec
            off /= np.linalg.norm(off)
            cosine = 0.9993
            matrix[position] = cosine * row_vec + np.sqrt(1 - cosine**2) * off
        response = trusted.submit(lone, matrix)
        assert response.status == "pending"
        assert "gold rows agree only to 0.999" in response.reason
        unit_id = unit_of(lone).unit_id
        assert (net.unit(unit_id).quorum, net.unit(unit_id).target) == (2, 2)
        rep = net.store.get_reputation(trusted.id)[KIND]
        assert (rep.faults, rep.gold_missed) == (0, 0)  # suspicious is not guilty


def test_no_unit_goes_alone_before_the_job_has_gold_rows(coordinator_home: CoordinatorHome) -> None:
    with launch(coordinator_home, ADAPTIVE) as net:  # no gold computer: gold comes from quorums
        net.create(sentences(16), redundancy=2, unit_size=2, gold_fraction=0)
        trusted, partner = net.volunteer(), net.volunteer()
        assert lockstep(net, trusted, partner) == []  # 8 units, none alone: no gold rows
        assert streak(net, trusted) == 8
        job = net.create(sentences(20, "later"), redundancy=2, unit_size=2, gold_fraction=0.5)
        assert net.store.gold_count(job) == 0
        first = trusted.lease()
        assert first is not None and net.lease_record(first.lease_id).gold_ids == ()
        assert net.unit(unit_of(first).unit_id).quorum == 2
        other = partner.lease()
        assert other is not None
        trusted.submit(first)
        assert partner.submit(other).status == "accepted"
        assert net.store.gold_count(job) == 2  # two volunteers agreed: the first gold rows
        # ... but both saw its text as an ordinary row, so neither ever gets it as gold
        # (issue 15): gold rows from a unit two others computed reach them
        assert lockstep(net, trusted, partner, units=2) == []
        c, d = net.volunteer(), net.volunteer()
        lockstep(net, c, d, units=1)
        assert net.store.gold_count(job) == 8  # both rows of each unit agreed on
        solo = lockstep(net, trusted, partner)
        assert solo, "gold rows arrived, yet no unit went alone"
        for unit_id in solo:
            (result,) = net.results(unit_id)
            assert net.lease_record(result.lease_id).gold_ids != ()


# ------------------------------------------------------------------ credit


def test_credit_is_the_lowest_claim_of_the_quorum(coordinator_home: CoordinatorHome) -> None:
    with launch(coordinator_home) as net:
        job = net.create(sentences(16), redundancy=2, unit_size=8, gold_fraction=0)
        units = net.units(job)
        a, b = net.volunteer(), net.volunteer()
        # unit 0: B inflates its claim tenfold; it is capped, and both get A's honest claim
        la, lb = a.lease(), b.lease()
        assert la is not None and lb is not None
        honest = claimed_tokens(unit_of(la).texts)
        assert honest == claimed_tokens(net.planned_texts(units[0])) > 0
        assert a.submit(la, claimed_tokens=honest).status == "pending"
        assert b.submit(lb, claimed_tokens=honest * 10).status == "accepted"
        claims = {r.volunteer_id: (r.claimed_tokens, r.credit) for r in net.results(units[0])}
        assert claims == {a.id: (honest, honest), b.id: (honest, honest)}
        # unit 1: A under-claims; both get the lower claim
        la, lb = a.lease(), b.lease()
        assert la is not None and lb is not None
        second = claimed_tokens(unit_of(la).texts)
        assert a.submit(la, claimed_tokens=second - 3).status == "pending"
        assert b.submit(lb, claimed_tokens=second).status == "accepted"
        assert {r.credit for r in net.results(units[1])} == {second - 3}
        for volunteer in (a, b):
            assert net.store.get_reputation(volunteer.id)[KIND].credit == honest + second - 3


def test_a_lone_claim_is_capped_at_the_coordinators_count(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, gold=True) as net:
        # two units: a unit's gold rows never repeat its own texts
        job = net.create(sentences(16), redundancy=1, unit_size=8, gold_fraction=0.25)
        v = net.volunteer()
        lease = v.lease()
        assert lease is not None
        texts = unit_of(lease).texts
        assert len(texts) == 11  # gold rows are work too, and count (2 shared, 1 its own)
        assert v.submit(lease, claimed_tokens=10**12).status == "accepted"
        (result,) = net.results(net.units(job)[0])
        assert result.claimed_tokens == result.credit == claimed_tokens(texts)
        assert net.store.get_reputation(v.id)[KIND].credit == claimed_tokens(texts)


def test_rejected_and_outvoted_results_earn_no_credit(coordinator_home: CoordinatorHome) -> None:
    with launch(coordinator_home, gold=True) as net:
        job = net.create(sentences(8), redundancy=2, unit_size=4, gold_fraction=0.25)
        unit_id = net.units(job)[0]
        cheat, liar, a, b = (net.volunteer() for _ in range(4))
        # a gold miss: refused before anything is stored
        lease = cheat.lease()
        assert lease is not None
        assert cheat.submit(lease, cheat.miss_gold(lease), claimed_tokens=100).status == "rejected"
        # wrong rows where no gold row is: passes the gold check, loses the vote
        lease = liar.lease()
        assert lease is not None
        matrix = liar.honest(lease)
        plain = [i for i in range(len(matrix)) if i not in net.gold_positions(lease.lease_id)]
        matrix[plain] = random_rows(len(plain), matrix.shape[1], seed=3)
        assert liar.submit(lease, matrix).status == "pending"
        for honest in (a, b):
            lease = honest.lease()
            assert lease is not None and unit_of(lease).unit_id == unit_id
            honest.submit(lease)
        assert net.unit(unit_id).state == "accepted"
        credit = {r.volunteer_id: (r.state, r.credit) for r in net.results(unit_id)}
        assert cheat.id not in credit
        assert credit[liar.id] == ("invalid", 0)
        assert credit[a.id][0] == credit[b.id][0] == "valid"
        assert credit[a.id][1] == credit[b.id][1] > 0
        assert net.store.get_reputation(cheat.id)[KIND].credit == 0
        assert net.store.get_reputation(liar.id)[KIND].credit == 0


def test_credit_of_results_a_quarantine_voids_is_withdrawn(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, gold=True) as net:
        job = net.create(sentences(8), redundancy=2, unit_size=4)
        x, y = net.volunteer(), net.volunteer()
        lockstep(net, x, y, units=2)
        earned = net.store.get_reputation(x.id)[KIND].credit
        assert earned > 0
        bait_job = net.create(sentences(8, "bait"), redundancy=2, unit_size=4, gold_fraction=0.5)
        bait = x.lease()
        assert bait is not None and unit_of(bait).job_id == bait_job
        assert x.submit(bait, x.miss_gold(bait)).status == "rejected"
        for unit_id in net.units(job):
            voided = [r for r in net.results(unit_id) if r.volunteer_id == x.id]
            assert [(r.state, r.credit) for r in voided] == [("invalid", 0)]
        assert net.store.get_reputation(x.id)[KIND].credit == 0
        assert net.store.get_reputation(y.id)[KIND].credit == earned  # Y keeps what it earned
