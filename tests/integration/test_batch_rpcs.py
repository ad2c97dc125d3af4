"""Several units per call: LeaseWork with `max_units`, and SubmitResults, over a real
coordinator in-process on port 0 (SQLite), with raw volunteers that sign every call and
send real (deterministic, honest unless told otherwise) results; see trusthelp.py."""

from __future__ import annotations

import time
from typing import Any

import grpc
import numpy as np
from sqlalchemy import select

from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.store import schema as t
from allmende.protocol.requests import sign_request
from allmende.protocol.signing import SigningKey
from allmende.protocol.wire import open_unit
from allmende.v1 import allmende_pb2 as pb
from tests.integration.rawclient import TIMEOUT_S, RawVolunteer, expect_error, text_rows
from tests.integration.trusthelp import Net, Volunteer, launch, sentences, unit_of

# These tests lease many units to new volunteers at once: lift the cap on the leases an
# unproven volunteer holds (tested in test_trust_limits.py).
MANY = {"unproven_leases": 64, "gold_streak": 0}

KIND = "embed-text"
LEASE_S = 120
SUBMIT_RESULTS = "/allmende.v1.VolunteerService/SubmitResults"

Result = tuple[bytes, bytes, bytes]  # (envelope, signature, payload)


def lease_many(v: Volunteer, max_units: int) -> tuple[pb.LeaseWorkResponse, list[pb.Lease]]:
    """One signed LeaseWork call asking for `max_units`: the response and all its leases."""
    request = pb.LeaseWorkRequest(volunteer_id=v.id, max_units=max_units)
    response = v.raw.stub.LeaseWork(
        request, timeout=TIMEOUT_S, metadata=v.raw.signed("LeaseWork", request)
    )
    first = [response.lease] if response.HasField("lease") else []
    return response, first + list(response.more_leases)


def submit_many(
    v: Volunteer, results: list[Result], metadata: Any = "signed"
) -> pb.SubmitResultsResponse:
    """One SubmitResults call for `v`, signed by `v` unless other metadata is given."""
    request = pb.SubmitResultsRequest(
        volunteer_id=v.id,
        results=[pb.SubmitResultRequest(envelope=e, signature=s, payload=p) for e, s, p in results],
    )
    if metadata == "signed":
        metadata = v.raw.signed("SubmitResults", request)
    response: pb.SubmitResultsResponse = v.raw.stub.SubmitResults(
        request, timeout=TIMEOUT_S, metadata=metadata
    )
    return response


def corrupt(result: Result) -> Result:
    """The same signed envelope with one payload byte flipped (its sha256 no longer fits)."""
    envelope, signature, payload = result
    flipped = bytes([payload[-1] ^ 0xFF])
    return envelope, signature, payload[:-1] + flipped


def answers(response: pb.SubmitResultsResponse) -> list[tuple[str, str]]:
    return [(r.status, r.code) for r in response.results]


def footprint(net: Net) -> tuple[Any, ...]:
    """Everything a refused call must leave as it was."""
    le, r, rep, v, u = t.leases, t.results, t.reputation, t.volunteers, t.units
    with net.store.engine.connect() as conn:
        return (
            sorted(tuple(row) for row in conn.execute(select(le.c.lease_id, le.c.state))),
            sorted(tuple(row) for row in conn.execute(select(r.c.result_id, r.c.state))),
            sorted(tuple(row) for row in conn.execute(select(rep))),
            sorted(
                tuple(row)
                for row in conn.execute(
                    select(v.c.volunteer_id, v.c.quarantined, v.c.banned, v.c.leased_today)
                )
            ),
            sorted(tuple(row) for row in conn.execute(select(u.c.unit_id, u.c.state, u.c.busy))),
        )


def result_rows(net: Net, unit_id: str) -> list[tuple[str, str]]:
    """(volunteer, lease) of each result stored for a unit."""
    return [(row.volunteer_id, row.lease_id) for row in net.results(unit_id)]


def faults(net: Net, volunteer_id: str) -> int:
    rep = net.store.get_reputation(volunteer_id).get(KIND)
    return 0 if rep is None else rep.faults


# ------------------------------------------------------------------ LeaseWork, max_units


def test_max_units_leases_that_many_distinct_units_each_a_lease_of_its_own(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, TrustPolicy(**MANY)) as net:
        job = net.create(sentences(12), redundancy=2, unit_size=2, lease_seconds=LEASE_S)
        units = net.units(job)
        assert len(units) == 6
        v = net.volunteer()
        before = int(time.time() * 1000)
        response, leases = lease_many(v, 4)
        after = int(time.time() * 1000)
        assert len(leases) == 4 and len(response.more_leases) == 3
        assert response.work_remaining and response.notice == ""
        lease_ids = [lease.lease_id for lease in leases]
        assert len(set(lease_ids)) == 4
        opened = [open_unit(x.unit.unit, x.unit.signature, net.c.key.public_key) for x in leases]
        # distinct units, in unit order; each copy composed and signed for its own lease
        assert [unit.unit_id for unit in opened] == units[:4]
        assert [unit.lease_id for unit in opened] == lease_ids
        for n, (lease, unit) in enumerate(zip(leases, opened, strict=True)):
            # after the first, a copy may repeat a text of an earlier one as a decoy
            decoys = net.decoy_positions(lease.lease_id)
            assert len(decoys) <= min(n, 1)
            kept = [t for i, t in enumerate(unit.texts) if i not in decoys]
            assert sorted(kept) == sorted(net.planned_texts(unit.unit_id))
            record = net.lease_record(lease.lease_id)
            assert (record.unit_id, record.volunteer_id, record.state) == (
                unit.unit_id,
                v.id,
                "active",
            )
            assert record.deadline_ms == lease.deadline_unix_ms
            assert before + LEASE_S * 1000 <= lease.deadline_unix_ms <= after + LEASE_S * 1000
        volunteer = net.store.get_volunteer(v.id)
        assert volunteer is not None and volunteer.leased_today == 4  # the quota counts each

        # each lease lives on its own: one handed back, one answered, the others untouched
        v.raw.release(leases[1].lease_id)
        assert v.submit(leases[2]).status == "pending"
        states = [net.lease_record(x).state for x in lease_ids]
        assert states == ["active", "released", "submitted", "active"]

        # max_units 0 means 1: the next free unit alone (v already answered unit 2 and
        # holds units 0 and 3; unit 1's slot is free again)
        response, more = lease_many(v, 0)
        assert len(more) == 1 and len(response.more_leases) == 0
        assert unit_of(more[0]).unit_id == units[1]


def test_max_units_gives_fewer_leases_when_fewer_units_are_free(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, TrustPolicy(**MANY)) as net:
        job = net.create(sentences(6), redundancy=2, unit_size=2)
        units = net.units(job)
        assert len(units) == 3
        v, w, x = net.volunteer(), net.volunteer(), net.volunteer()
        _, first = lease_many(v, 8)
        assert [unit_of(lease).unit_id for lease in first] == units  # never one unit twice
        _, second = lease_many(w, 8)
        assert [unit_of(lease).unit_id for lease in second] == units  # the replicas
        assert not {x.lease_id for x in first} & {x.lease_id for x in second}
        response, third = lease_many(x, 8)
        assert third == [] and not response.HasField("lease")
        assert response.work_remaining  # every slot is held, none answered yet
        assert [net.unit(unit_id).busy for unit_id in units] == [2, 2, 2]
        record = net.store.get_volunteer(x.id)
        assert record is not None and record.leased_today == 0


def test_max_units_is_at_most_32_and_more_is_refused_changing_nothing(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, TrustPolicy(**MANY)) as net:
        job = net.create(sentences(68), redundancy=2, unit_size=2)
        units = net.units(job)
        assert len(units) == 34
        v = net.volunteer()
        before = footprint(net)
        for too_many in (33, 2**32 - 1):
            expect_error(
                lambda n=too_many: lease_many(v, n),  # type: ignore[misc]
                grpc.StatusCode.INVALID_ARGUMENT,
                "max_units",
                "32",
            )
        assert footprint(net) == before
        assert before[0] == []  # no lease rows at all
        _, leases = lease_many(v, 32)
        assert [unit_of(lease).unit_id for lease in leases] == units[:32]
        _, rest = lease_many(v, 32)
        assert [unit_of(lease).unit_id for lease in rest] == units[32:]


def test_the_daily_quota_caps_a_batch(coordinator_home: CoordinatorHome) -> None:
    with launch(coordinator_home, TrustPolicy(daily_quota=3, quota_per_valid=0, **MANY)) as net:
        job = net.create(sentences(16), redundancy=2, unit_size=2)
        units = net.units(job)
        v, w = net.volunteer(), net.volunteer()
        _, first = lease_many(v, 2)
        assert len(first) == 2
        response, second = lease_many(v, 5)  # quota 3, 2 used: one more
        assert len(second) == 1 and response.notice == ""
        response, third = lease_many(v, 5)
        assert third == [] and "daily quota of 3 units reached" in response.notice
        record = net.store.get_volunteer(v.id)
        assert record is not None and record.leased_today == 3
        with net.store.engine.connect() as conn:
            held = conn.execute(
                select(t.leases.c.unit_id).where(t.leases.c.volunteer_id == v.id)
            ).all()
        assert sorted(row.unit_id for row in held) == units[:3]
        _, others = lease_many(w, 8)  # the quota is per volunteer
        assert [unit_of(lease).unit_id for lease in others] == units[:3]


# ------------------------------------------------------------------ SubmitResults


def test_submit_results_judges_each_result_on_its_own(coordinator_home: CoordinatorHome) -> None:
    with launch(coordinator_home, TrustPolicy(**MANY)) as net:
        job = net.create(sentences(8), redundancy=2, unit_size=2)
        units = net.units(job)
        v, w = net.volunteer(), net.volunteer()
        _, (a, b, c) = lease_many(v, 3)
        assert v.submit(a).status == "pending"
        response = submit_many(
            v,
            [
                v.result(b),  # honest
                v.result(a),  # for a lease already answered
                corrupt(v.result(c)),  # a payload that is not the one signed
                v.result(c, lease_id="no-such-lease"),  # a lease that does not exist
            ],
        )
        assert answers(response) == [
            ("pending", ""),
            ("refused", "FAILED_PRECONDITION"),
            ("refused", "INVALID_ARGUMENT"),
            ("refused", "NOT_FOUND"),
        ]
        reasons = [r.reason for r in response.results]
        assert "already submitted" in reasons[1]
        assert "payload" in reasons[2]
        assert "no-such-lease" in reasons[3]

        # the honest result is stored; the refused ones left nothing but the fault
        assert result_rows(net, units[0]) == [(v.id, a.lease_id)]
        assert result_rows(net, units[1]) == [(v.id, b.lease_id)]
        assert result_rows(net, units[2]) == []
        states = [net.lease_record(x.lease_id).state for x in (a, b, c)]
        assert states == ["submitted", "submitted", "active"]
        assert faults(net, v.id) == 1  # the corrupt payload, as SubmitResult counts it

        # the refused result's lease is still open, and the stored one counts to the quorum
        assert v.submit(c).status == "pending"
        _, replicas = lease_many(w, 4)
        assert [unit_of(x).unit_id for x in replicas] == units
        response = submit_many(w, [w.result(x) for x in replicas])
        assert answers(response) == [("accepted", "")] * 3 + [("pending", "")]
        for unit_id in units[:3]:
            assert net.unit(unit_id).state == "accepted"
        assert net.canonical_volunteer(units[1]) in (v.id, w.id)


def test_faults_within_one_batch_quarantine_and_the_rest_is_refused(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, TrustPolicy(fault_limit=3, **MANY)) as net:
        job = net.create(sentences(8), redundancy=2, unit_size=2)
        units = net.units(job)
        v = net.volunteer()
        _, leases = lease_many(v, 4)
        batch = [corrupt(v.result(lease)) for lease in leases[:3]] + [v.result(leases[3])]
        response = submit_many(v, batch)
        assert answers(response)[:3] == [("refused", "INVALID_ARGUMENT")] * 3
        # the third fault quarantined v; its honest result after that is not taken
        assert answers(response)[3] == ("refused", "PERMISSION_DENIED")
        assert "quarantined" in response.results[3].reason
        record = net.store.get_volunteer(v.id)
        assert record is not None and record.quarantined
        assert faults(net, v.id) == 3
        assert all(result_rows(net, unit_id) == [] for unit_id in units)
        # a quarantined volunteer's whole call is refused
        expect_error(
            lambda: submit_many(v, [v.result(leases[3])]),
            grpc.StatusCode.PERMISSION_DENIED,
            "quarantined",
        )
        assert all(result_rows(net, unit_id) == [] for unit_id in units)


def test_batches_of_honest_results_complete_a_job_and_write_its_dataset(
    coordinator_home: CoordinatorHome,
) -> None:
    texts = sentences(8)
    with launch(coordinator_home, TrustPolicy(**MANY)) as net:
        job = net.create(texts, redundancy=2, unit_size=2)
        units = net.units(job)
        v, w = net.volunteer(), net.volunteer()
        _, mine = lease_many(v, 8)
        assert len(mine) == 4
        response = submit_many(v, [v.result(lease) for lease in mine])
        assert answers(response) == [("pending", "")] * 4
        assert net.job_state(job) == "running"
        _, theirs = lease_many(w, 8)
        assert [unit_of(lease).unit_id for lease in theirs] == units
        response = submit_many(w, [w.result(lease) for lease in theirs])
        assert answers(response) == [("accepted", "")] * 4

        assert net.wait_state(job, "complete") == "complete"
        for volunteer in (v, w):
            assert net.store.get_reputation(volunteer.id)[KIND].valid == 4
        data = net.dataset(job)
        assert sorted(data["id"]) == sorted(f"id-{i}" for i in range(8))
        expected = text_rows(texts, 384)
        for item_id, text, vector in zip(data["id"], data["text"], data["embedding"], strict=True):
            n = int(item_id.removeprefix("id-"))
            assert text == texts[n]
            assert np.allclose(vector, expected[n], atol=2e-3)


def test_malformed_batches_are_refused_whole_and_change_nothing(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, TrustPolicy(**MANY)) as net:
        job = net.create(sentences(4), redundancy=2, unit_size=2)
        units = net.units(job)
        v, w = net.volunteer(), net.volunteer()
        _, (first, second) = lease_many(v, 2)
        _, (theirs,) = lease_many(w, 1)
        honest = v.result(first)
        undecodable = pb.ResultEnvelope(unit_id=units[1]).SerializeToString()
        before = footprint(net)

        def refused(call: Any, code: grpc.StatusCode, *needles: str) -> None:
            expect_error(call, code, *needles)
            assert footprint(net) == before

        refused(lambda: submit_many(v, []), grpc.StatusCode.INVALID_ARGUMENT, "results", "got 0")
        refused(
            lambda: submit_many(v, [honest] * 33),
            grpc.StatusCode.INVALID_ARGUMENT,
            "results",
            "got 33",
        )
        refused(
            lambda: submit_many(v, [honest, (undecodable, b"", b"")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "results[1].envelope.lease_id",
        )
        refused(
            lambda: submit_many(v, [honest, v.result(second), w.result(theirs)]),
            grpc.StatusCode.PERMISSION_DENIED,
            "results[2].envelope",
        )
        refused(
            lambda: submit_many(v, [honest], metadata=None),
            grpc.StatusCode.UNAUTHENTICATED,
            "metadata",
        )

        def signed_by(key: SigningKey) -> Any:
            request = pb.SubmitResultsRequest(
                volunteer_id=v.id,
                results=[
                    pb.SubmitResultRequest(
                        envelope=honest[0], signature=honest[1], payload=honest[2]
                    )
                ],
            )
            return sign_request(key, SUBMIT_RESULTS, request)

        # signed by another volunteer, or by a key nobody registered
        refused(
            lambda: submit_many(v, [honest], metadata=signed_by(w.raw.key)),
            grpc.StatusCode.PERMISSION_DENIED,
            "acts for",
        )
        stranger = RawVolunteer(net.running.address)
        net.closers.append(stranger)
        refused(
            lambda: submit_many(v, [honest], metadata=signed_by(stranger.key)),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        assert result_rows(net, units[0]) == []
        assert faults(net, v.id) == 0

        # the same honest result, sent well-formed, is taken
        assert answers(submit_many(v, [honest, v.result(second)])) == [("pending", "")] * 2
        assert result_rows(net, units[0]) == [(v.id, first.lease_id)]

        # a banned volunteer's call is refused whole
        assert answers(submit_many(w, [w.result(theirs)])) == [("accepted", "")]
        _, (other,) = lease_many(w, 1)
        net.store.set_banned(w.id, True, "test", net.c.clock())
        after_ban = footprint(net)
        expect_error(
            lambda: submit_many(w, [w.result(other)]), grpc.StatusCode.PERMISSION_DENIED, "banned"
        )
        assert footprint(net) == after_ban
