"""Units composed per lease, and what that stops: copying another volunteer's result and
replaying an old one. A real coordinator in-process on port 0 (SQLite), raw volunteers over
gRPC; see trusthelp.py."""

from __future__ import annotations

import grpc
import numpy as np

from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol.wire import open_unit
from tests.integration.rawclient import expect_error, text_rows
from tests.integration.trusthelp import launch, sentences, unit_of, unit_sha256

KIND = "embed-text"


def test_units_are_composed_per_lease_and_gold_rows_never_reach_the_dataset(
    coordinator_home: CoordinatorHome,
) -> None:
    texts = sentences(32)
    with launch(coordinator_home) as net:
        job = net.create(texts, redundancy=2, unit_size=16)
        units = net.units(job)
        assert len(units) == 2
        a, b = net.volunteer(), net.volunteer()
        la, lb = a.lease(), b.lease()
        assert la is not None and lb is not None
        ua, ub = unit_of(la), unit_of(lb)
        assert ua.unit_id == ub.unit_id == units[0]
        # each lease gets its own copy: its own id, order and bytes, signed for it alone
        assert ua.lease_id == la.lease_id and ub.lease_id == lb.lease_id
        assert la.lease_id != lb.lease_id
        assert ua.texts != ub.texts
        planned = net.planned_texts(units[0])
        assert sorted(ua.texts) == sorted(ub.texts) == sorted(planned)  # no gold rows known yet
        assert net.lease_record(la.lease_id).unit_sha256 == unit_sha256(la)
        assert open_unit(la.unit.unit, la.unit.signature, net.c.key.public_key) == ua
        assert a.submit(la).status == "pending"
        assert b.submit(lb).status == "accepted"

        # two volunteers agreed on unit 0: it yields gold rows, hidden in later leases of
        # volunteers that never saw its text; A and B saw it as an ordinary row, so they
        # never get it as a gold row (issue 15), only repeats of texts they saw as decoys
        assert net.store.gold_count(job) == 4  # HARVEST_ROWS
        second = net.planned_texts(units[1])
        lease = a.lease()
        assert lease is not None
        unit = unit_of(lease)
        assert unit.unit_id == units[1]
        assert net.lease_record(lease.lease_id).gold_ids == ()
        extra = [text for text in unit.texts if text not in second]
        decoys = net.decoy_positions(lease.lease_id)  # every other lease, at random
        assert len(unit.texts) == 16 + len(decoys) and len(extra) == len(decoys) <= 1
        assert all(text in planned for text in extra)
        assert a.submit(lease).status == "pending"
        c = net.volunteer()
        other = c.lease()
        assert other is not None
        unit = unit_of(other)
        assert unit.unit_id == units[1]
        # the unit's rows, k = ceil(16 * 0.02) gold rows for every replica and one of C's own
        # (C has seen no other lease: no decoy)
        assert len(unit.texts) == 16 + 2
        extra = [text for text in unit.texts if text not in second]
        assert len(extra) == 2 and all(text in planned for text in extra)
        record = net.lease_record(other.lease_id)
        assert len(record.gold_ids) == 2
        assert [unit.texts[i] for i in net.gold_positions(other.lease_id)] == extra
        assert sorted(t for t in unit.texts if t in second) == sorted(second)
        assert c.submit(other).status == "accepted"
        for volunteer, checked in ((a, 0), (b, 0), (c, 1)):
            rep = net.store.get_reputation(volunteer.id)[KIND]
            assert (rep.gold_checked, rep.gold_missed) == (checked, 0)

        assert net.wait_state(job, "complete") == "complete"
        data = net.dataset(job)
        assert sorted(data["id"]) == sorted(f"id-{i}" for i in range(32))  # each id once
        assert len(data["id"]) == 32
        expected = text_rows(texts, 384)
        for item_id, text, vector in zip(data["id"], data["text"], data["embedding"], strict=True):
            n = int(item_id.removeprefix("id-"))
            assert text == texts[n]
            assert np.allclose(vector, expected[n], atol=2e-3)  # put back in unit order


def test_a_copied_result_is_refused_and_counted(coordinator_home: CoordinatorHome) -> None:
    with launch(coordinator_home, gold=True) as net:
        job = net.create(sentences(16), redundancy=2, unit_size=8, gold_fraction=0.5)
        a, b, c = net.volunteer(), net.volunteer(), net.volunteer()
        la, lb = a.lease(), b.lease()
        assert la is not None and lb is not None
        assert unit_of(la).unit_id == unit_of(lb).unit_id
        # k = ceil(8 * 0.5) hidden gold rows shared by the replicas, and one of its own
        assert len(unit_of(lb).texts) == 8 + 4 + 1
        assert a.submit(la).status == "pending"
        copied = a.honest(la)  # A's rows, in the order of A's lease

        # A's result as it was, re-signed by B for B's own lease: it names A's unit bytes
        expect_error(
            lambda: b.raw.submit(*b.result(lb, copied, unit_sha256=unit_sha256(la))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unit_sha256",
        )
        rep = net.store.get_reputation(b.id)[KIND]
        assert (rep.faults, rep.gold_missed) == (1, 0)
        assert not net.store.get_volunteer(b.id).quarantined  # type: ignore[union-attr]

        # A's rows under B's own unit hash: B's hidden gold rows sit elsewhere
        response = b.submit(lb, copied)
        assert response.status == "rejected"
        assert "gold row" in response.reason
        rep = net.store.get_reputation(b.id)[KIND]
        assert (rep.faults, rep.gold_missed) == (2, 1)
        assert net.lease_record(lb.lease_id).state == "rejected"
        expect_error(b.lease_response, grpc.StatusCode.PERMISSION_DENIED, "quarantined")

        # A is unaffected: C takes B's slot and the unit is accepted with A's result
        lc = c.lease()
        assert lc is not None and unit_of(lc).unit_id == unit_of(la).unit_id
        assert c.submit(lc).status == "accepted"
        states = {r.volunteer_id: r.state for r in net.results(unit_of(la).unit_id)}
        assert states == {a.id: "valid", c.id: "valid"}
        assert net.store.get_reputation(a.id)[KIND].faults == 0
        assert net.job_state(job) == "running"


def test_a_copy_without_gold_rows_disagrees_and_is_outvoted(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, gold=True) as net:
        net.create(sentences(8), redundancy=2, unit_size=8, gold_fraction=0)
        a, b, c = net.volunteer(), net.volunteer(), net.volunteer()
        la, lb = a.lease(), b.lease()
        assert la is not None and lb is not None
        assert net.lease_record(lb.lease_id).gold_ids == ()
        assert a.submit(la).status == "pending"
        response = b.submit(lb, a.honest(la))  # A's rows in A's order: wrong rows for B
        assert response.status == "pending"
        assert "replicas disagree" in response.reason
        lc = c.lease()
        assert lc is not None
        assert c.submit(lc).status == "accepted"
        states = {r.volunteer_id: (r.state, r.credit) for r in net.results(unit_of(la).unit_id)}
        assert states[b.id] == ("invalid", 0)
        assert states[a.id][0] == states[c.id][0] == "valid"
        rep = net.store.get_reputation(b.id)[KIND]
        assert (rep.disagreements, rep.valid, rep.credit) == (1, 0, 0)


def test_an_old_result_replayed_on_a_new_lease_is_refused(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, gold=True) as net:
        job = net.create(sentences(16), redundancy=2, unit_size=8)
        units = net.units(job)
        a, b = net.volunteer(), net.volunteer()
        first = a.lease()
        assert first is not None
        old = a.result(first)  # computed for the first lease, kept back
        a.raw.release(first.lease_id, "pausing")
        second = a.lease()
        assert second is not None
        assert unit_of(second).unit_id == unit_of(first).unit_id == units[0]
        assert second.lease_id != first.lease_id
        assert unit_sha256(second) != unit_sha256(first)

        # the old envelope names a lease that was handed back
        expect_error(lambda: a.raw.submit(*old), grpc.StatusCode.FAILED_PRECONDITION, "released")
        # the old rows re-signed for the new lease still name the old unit bytes
        replay = a.result(second, a.honest(first), unit_sha256=unit_sha256(first))
        expect_error(lambda: a.raw.submit(*replay), grpc.StatusCode.INVALID_ARGUMENT, "unit_sha256")
        assert net.store.get_reputation(a.id)[KIND].faults == 1

        # the honest result for the new lease is taken; replaying it later is refused
        assert a.submit(second).status == "pending"
        lb = b.lease()
        assert lb is not None
        assert b.submit(lb).status == "accepted"
        expect_error(lambda: a.submit(second), grpc.StatusCode.FAILED_PRECONDITION, "already")

        # two more replays reach the fault limit (3): quarantine, and unit 0 is re-verified
        third = a.lease()
        assert third is not None and unit_of(third).unit_id == units[1]
        for _ in range(2):
            stale = a.result(third, a.honest(second), unit_sha256=unit_sha256(second))
            expect_error(
                lambda stale=stale: a.raw.submit(*stale),  # type: ignore[misc]
                grpc.StatusCode.INVALID_ARGUMENT,
                "unit_sha256",
            )
        volunteer = net.store.get_volunteer(a.id)
        assert volunteer is not None and volunteer.quarantined
        assert "3 refused result(s)" in volunteer.quarantine_reason
        expect_error(a.lease_response, grpc.StatusCode.PERMISSION_DENIED, "quarantined")
        assert net.lease_record(third.lease_id).state == "cancelled"
        assert net.unit(units[0]).state == "open"  # it rested on A and B; A's result is void
        assert {r.volunteer_id: r.state for r in net.results(units[0])} == {
            a.id: "invalid",
            b.id: "valid",
        }


def test_two_new_accounts_agreeing_cannot_plant_gold_rows(
    coordinator_home: CoordinatorHome,
) -> None:
    # Agreed rows become gold only once one of the agreeing volunteers has a record
    # (gold_streak consecutive valid results before): otherwise two fresh colluding
    # accounts could define false answers, and honest volunteers would be quarantined.
    with launch(coordinator_home, TrustPolicy(gold_streak=2, adaptive=False)) as net:
        job = net.create(sentences(16), redundancy=2, unit_size=4)
        a, b = net.volunteer(), net.volunteer()
        counts = []
        for _ in range(4):
            la, lb = a.lease(), b.lease()
            assert la is not None and lb is not None
            assert a.submit(la).status == "pending"
            assert b.submit(lb).status == "accepted"
            counts.append(net.store.gold_count(job))
        # streaks before each unit: 0, 1, 2, 3; 4 gold rows per unit (HARVEST_ROWS)
        assert counts == [0, 0, 4, 8]


def test_replicas_of_a_unit_get_the_same_gold_rows_in_their_own_order(
    coordinator_home: CoordinatorHome,
) -> None:
    # Different gold rows per replica would let two volunteers comparing their copies pick
    # out the gold rows (the texts only one of them got) and lie on everything else.
    with launch(coordinator_home, gold=True) as net:
        job = net.create(sentences(64), redundancy=3, unit_size=16, gold_fraction=0.25)
        leases = [v.lease() for v in (net.volunteer(), net.volunteer(), net.volunteer())]
        units = [unit_of(lease) for lease in leases if lease is not None]
        assert len(units) == 3 and len({u.unit_id for u in units}) == 1
        assert units[0].unit_id == net.units(job)[0]
        records = [net.lease_record(lease.lease_id) for lease in leases if lease is not None]
        # 16 rows at 25 % shared by every replica, and one more of each lease's own (issue
        # 15: a copier re-ordering a partner's rows has no answer for it)
        assert [len(r.gold_ids) for r in records] == [5, 5, 5]
        shared = records[0].gold_ids[:4]
        assert records[1].gold_ids[:4] == records[2].gold_ids[:4] == shared
        assert all(r.gold_ids[4] not in shared for r in records)
        common = set(units[0].texts) & set(units[1].texts) & set(units[2].texts)
        assert len(common) == 16 + 4
        assert len({u.texts for u in units}) == 3  # each in an order of its own
