"""Limits on what one volunteer (or one network) can take: daily quotas, replicas of a unit
going to distinct address blocks, rate limits per block, a block's share of a job's slots,
and the leases an unproven volunteer holds. A real coordinator in-process on port 0
(SQLite); volunteers from several addresses come through `SourceProxy` (127.0.0.2, ...), or
their addresses are passed to `Coordinator.lease_work` directly (IPv6)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from sqlalchemy import func, select

from allmende.coordinator.domain.trust import DAY_MS, TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.store import schema as t
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.signing import CTX_REGISTER, SigningKey
from allmende.v1 import allmende_pb2 as pb
from tests.integration.rawclient import TIMEOUT_S, RawVolunteer, expect_error
from tests.integration.sourceproxy import SourceProxy
from tests.integration.trusthelp import Net, Volunteer, launch, sentences, unit_of


def snapshot(net: Net, volunteer_id: str) -> tuple[Any, ...]:
    """What a refused lease must leave alone."""
    le, u = t.leases, t.units
    with net.store.engine.connect() as conn:
        leases = conn.execute(select(func.count()).select_from(le)).scalar_one()
        units = conn.execute(select(u.c.unit_id, u.c.busy, u.c.target, u.c.quorum)).all()
    v = net.store.get_volunteer(volunteer_id)
    assert v is not None
    return leases, sorted(tuple(row) for row in units), v.quota_day, v.leased_today


# ------------------------------------------------------------------ daily quota


def test_the_daily_quota_stops_leasing_with_a_notice_and_changes_nothing(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, TrustPolicy(daily_quota=2, quota_per_valid=0)) as net:
        net.create(sentences(8), redundancy=2, unit_size=2)
        v, w = net.volunteer(), net.volunteer()
        first, second = v.lease(), v.lease()
        assert first is not None and second is not None
        before = snapshot(net, v.id)
        assert before[3] == 2  # leased today
        response = v.lease_response()
        assert not response.HasField("lease")
        assert response.work_remaining
        assert 0 < response.retry_after_ms <= 10 * 60 * 1000
        assert "daily quota of 2 units reached" in response.notice
        assert "00:00 UTC" in response.notice
        assert snapshot(net, v.id) == before
        # work in hand still counts, and the quota is per volunteer
        assert v.submit(first).status == "pending"
        other = w.lease()
        assert other is not None and unit_of(other).unit_id == unit_of(first).unit_id
        response = v.lease_response()
        assert not response.HasField("lease") and "daily quota" in response.notice


def test_the_quota_grows_with_validated_results_and_resets_the_next_day(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, TrustPolicy(daily_quota=1, quota_per_valid=1)) as net:
        net.create(sentences(12), redundancy=1, unit_size=2)
        v = net.volunteer()
        first = v.lease()
        assert first is not None
        assert "daily quota of 1 units" in v.lease_response().notice
        assert v.submit(first).status == "accepted"  # one valid result: one more a day
        assert v.lease() is not None
        refused = v.lease_response()
        assert not refused.HasField("lease") and "daily quota of 2 units" in refused.notice
        # the next UTC day (asked of the domain: signed requests would be a day stale)
        now = net.c.clock
        net.c.clock = lambda: now() + DAY_MS
        try:
            offer = net.c.lease_work(v.id)
        finally:
            net.c.clock = now
        assert offer.grant is not None and offer.notice == ""
        record = net.store.get_volunteer(v.id)
        assert record is not None and record.leased_today == 1


# ------------------------------------------------------------------ distinct addresses


def test_replicas_of_a_unit_go_to_distinct_addresses(coordinator_home: CoordinatorHome) -> None:
    with launch(coordinator_home) as net:
        job = net.create(sentences(4), redundancy=2, unit_size=4)
        (unit_id,) = net.units(job)
        v1, v2, v3 = net.volunteer(), net.volunteer(), net.volunteer()
        first = net.c.lease_work(v1.id, address="10.0.0.5")
        assert first.grant is not None and first.grant.unit_id == unit_id
        same = net.c.lease_work(v2.id, address="10.0.0.5")
        assert same.grant is None and same.work_remaining  # it may free up later
        elsewhere = net.c.lease_work(v3.id, address="10.0.0.6")
        assert elsewhere.grant is not None and elsewhere.grant.unit_id == unit_id
        le = t.leases
        with net.store.engine.connect() as conn:
            addresses = dict(conn.execute(select(le.c.volunteer_id, le.c.address)).all())
        assert addresses == {v1.id: "10.0.0.5", v3.id: "10.0.0.6"}


def test_a_second_volunteer_at_one_address_gets_another_unit(
    coordinator_home: CoordinatorHome,
) -> None:
    # the distinct-block rule alone: no cap on the block's share of the job's slots
    with launch(coordinator_home, TrustPolicy(gold_streak=0, block_share=1.0)) as net:
        job = net.create(sentences(8), redundancy=2, unit_size=4)
        units = net.units(job)
        v1, v2, v3 = net.volunteer(), net.volunteer(), net.volunteer()
        got = [net.c.lease_work(v.id, address="192.0.2.7").grant for v in (v1, v2, v3)]
        assert [g.unit_id if g else None for g in got] == [units[0], units[1], None]


def test_loopback_volunteers_are_exempt(coordinator_home: CoordinatorHome) -> None:
    with launch(coordinator_home) as net:
        job = net.create(sentences(4), redundancy=2, unit_size=4)
        (unit_id,) = net.units(job)
        v1, v2, v3, v4 = (net.volunteer() for _ in range(4))
        for v in (v1, v2):
            offer = net.c.lease_work(v.id, address="")
            assert offer.grant is not None and offer.grant.unit_id == unit_id
        # over gRPC from 127.0.0.1: the peer address is '' as well
        job = net.create(sentences(4, "grpc"), redundancy=2, unit_size=4)
        (second,) = net.units(job)
        leases = [v3.lease(), v4.lease()]
        assert [unit_of(lease).unit_id for lease in leases if lease] == [second, second]


def test_ipv6_loopback_volunteers_are_exempt(coordinator_home: CoordinatorHome) -> None:
    """gRPC reports IPv6 peers as 'ipv6:%5B::1%5D:PORT' (brackets percent-encoded)."""
    try:
        launched = launch(coordinator_home, listen="[::1]:0")
        net = launched.__enter__()
    except InvalidArgument:
        pytest.skip("this machine cannot listen on IPv6 loopback (::1): enable IPv6 on lo")
    try:
        job = net.create(sentences(4), redundancy=2, unit_size=4)
        (unit_id,) = net.units(job)
        leases = [net.volunteer().lease(), net.volunteer().lease()]
        assert [unit_of(lease).unit_id for lease in leases if lease] == [unit_id, unit_id]
        for lease in leases:
            assert lease is not None
            assert net.lease_record(lease.lease_id).state == "active"
        le = t.leases
        with net.store.engine.connect() as conn:
            assert set(conn.execute(select(le.c.address)).scalars()) == {""}
    finally:
        launched.__exit__(None, None, None)


def test_distinct_addresses_can_be_switched_off(coordinator_home: CoordinatorHome) -> None:
    with launch(coordinator_home, TrustPolicy(distinct_addresses=False, block_share=1.0)) as net:
        job = net.create(sentences(4), redundancy=2, unit_size=4)
        (unit_id,) = net.units(job)
        offers = [net.c.lease_work(net.volunteer().id, address="10.0.0.5") for _ in range(2)]
        assert [o.grant.unit_id for o in offers if o.grant] == [unit_id, unit_id]


# ------------------------------------------------------------------ address blocks
# Real gRPC from distinct loopback addresses (sourceproxy.py), with the loopback exemption
# switched off so that 127.0.0.2 and 127.0.0.3 are address blocks like any other.


def port_of(net: Net) -> int:
    return int(net.running.address.rsplit(":", 1)[1])


def volunteer_via(net: Net, proxy: SourceProxy) -> Volunteer:
    raw = RawVolunteer(proxy.address)
    raw.register()
    net.closers.append(raw)
    return Volunteer(raw, net)


def lease_many(v: Volunteer, max_units: int) -> pb.LeaseWorkResponse:
    request = pb.LeaseWorkRequest(volunteer_id=v.id, max_units=max_units)
    return v.raw.stub.LeaseWork(
        request, timeout=TIMEOUT_S, metadata=v.raw.signed("LeaseWork", request)
    )


def granted(response: pb.LeaseWorkResponse) -> list[pb.Lease]:
    return [response.lease, *response.more_leases] if response.HasField("lease") else []


def count_rows(net: Net, table: Any) -> int:
    with net.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


UNEXEMPT = TrustPolicy(gold_streak=0, loopback_exempt=False)


def test_300_registrations_from_one_block_are_throttled(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, UNEXEMPT) as net:
        before = count_rows(net, t.volunteers)
        stub = RawVolunteer(net.running.address)
        net.closers.append(stub)
        accepted, refusals = 0, []
        for _ in range(300):
            key = SigningKey.generate()
            request = pb.RegisterVolunteerRequest(
                public_key=key.public_key,
                display_name="sybil",
                client_version="raw/0",
                hardware="test",
                signature=key.sign(CTX_REGISTER, key.public_key),
            )
            try:
                stub.stub.RegisterVolunteer(request, timeout=TIMEOUT_S)
                accepted += 1
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                refusals.append(exc.details() or "")
        # the burst of 10, and at most one more refilled (6 a minute) while they ran
        assert 10 <= accepted <= 11
        assert len(refusals) == 300 - accepted
        assert "127.0.0.1" in refusals[0] and "retry in" in refusals[0]
        assert count_rows(net, t.volunteers) == before + accepted  # a refusal adds nothing
        # another block is not held back
        with SourceProxy(port_of(net), "127.0.0.2") as proxy:
            assert volunteer_via(net, proxy).id


def test_loopback_registrations_are_exempt_by_default(coordinator_home: CoordinatorHome) -> None:
    with launch(coordinator_home) as net:
        ids = {net.volunteer().id for _ in range(15)}
        assert len(ids) == 15


def test_lease_calls_from_one_block_are_rate_limited(coordinator_home: CoordinatorHome) -> None:
    policy = TrustPolicy(
        gold_streak=0,
        loopback_exempt=False,
        lease_burst=3,
        leases_per_second=0.01,
        block_share=1.0,
    )
    with launch(coordinator_home, policy) as net:
        net.create(sentences(16), redundancy=1, unit_size=2)
        v, w = net.volunteer(), net.volunteer()
        for _ in range(3):
            assert v.lease() is not None
        before = snapshot(net, w.id)
        details = expect_error(
            w.lease_response, grpc.StatusCode.RESOURCE_EXHAUSTED, "lease calls", "retry in"
        )
        assert "127.0.0.1" in details
        assert snapshot(net, w.id) == before
        with SourceProxy(port_of(net), "127.0.0.2") as proxy:
            assert volunteer_via(net, proxy).lease() is not None


def test_two_addresses_in_one_block_are_not_distinct(coordinator_home: CoordinatorHome) -> None:
    """127.0.0.2 and 127.0.0.3 in one IPv4 /24: replicas of a unit do not go to both."""
    policy = TrustPolicy(gold_streak=0, loopback_exempt=False, ipv4_prefix=24, block_share=1.0)
    with launch(coordinator_home, policy) as net:
        job = net.create(sentences(2), redundancy=2, unit_size=2)
        (unit_id,) = net.units(job)
        with (
            SourceProxy(port_of(net), "127.0.0.2") as a,
            SourceProxy(port_of(net), "127.0.0.3") as b,
        ):
            first = volunteer_via(net, a).lease()
            assert first is not None and unit_of(first).unit_id == unit_id
            assert net.lease_record(first.lease_id) is not None
            assert volunteer_via(net, b).lease() is None
            with net.store.engine.connect() as conn:
                assert conn.execute(select(t.leases.c.address)).scalars().all() == ["127.0.0.0/24"]


def test_two_addresses_in_two_blocks_are_distinct(coordinator_home: CoordinatorHome) -> None:
    policy = TrustPolicy(gold_streak=0, loopback_exempt=False, block_share=1.0)
    with launch(coordinator_home, policy) as net:
        job = net.create(sentences(2), redundancy=2, unit_size=2)
        (unit_id,) = net.units(job)
        with (
            SourceProxy(port_of(net), "127.0.0.2") as a,
            SourceProxy(port_of(net), "127.0.0.3") as b,
        ):
            leases = [volunteer_via(net, a).lease(), volunteer_via(net, b).lease()]
        assert [unit_of(lease).unit_id for lease in leases if lease] == [unit_id, unit_id]


def test_ipv6_addresses_are_grouped_by_their_64(coordinator_home: CoordinatorHome) -> None:
    """Two addresses in one /64 are one block; two /64s are two (asked of the domain: this
    machine has no second IPv6 address to send from)."""
    with launch(coordinator_home, TrustPolicy(gold_streak=0, block_share=1.0)) as net:
        job = net.create(sentences(2), redundancy=2, unit_size=2)
        (unit_id,) = net.units(job)
        v1, v2, v3 = net.volunteer(), net.volunteer(), net.volunteer()
        first = net.c.lease_work(v1.id, address="2001:db8:1:2::5")
        assert first.grant is not None and first.grant.unit_id == unit_id
        same = net.c.lease_work(v2.id, address="2001:db8:1:2:ffff::6")
        assert same.grant is None and same.work_remaining
        other = net.c.lease_work(v3.id, address="2001:db8:1:3::5")
        assert other.grant is not None and other.grant.unit_id == unit_id
        with net.store.engine.connect() as conn:
            blocks = sorted(conn.execute(select(t.leases.c.address)).scalars())
        assert blocks == ["2001:db8:1:2::/64", "2001:db8:1:3::/64"]


def test_one_block_cannot_take_all_replica_slots_while_a_newcomer_waits(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, UNEXEMPT) as net:
        net.create(sentences(8), redundancy=2, unit_size=2)  # 4 units, 8 replica slots
        with (
            SourceProxy(port_of(net), "127.0.0.2") as sybils,
            SourceProxy(port_of(net), "127.0.0.3") as elsewhere,
        ):
            six = [volunteer_via(net, sybils) for _ in range(6)]
            taken = [lease for v in six for lease in granted(lease_many(v, 4))]
            assert len(taken) == 2  # a quarter of the job's 8 slots
            refused = six[-1].lease_response()
            assert not refused.HasField("lease") and refused.work_remaining
            newcomer = volunteer_via(net, elsewhere)
            assert len(granted(lease_many(newcomer, 4))) == 2


def test_an_unproven_volunteer_leasing_many_units_at_once_gets_only_a_few(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home) as net:  # the default caps (loopback is no block here)
        net.create(sentences(64), redundancy=1, unit_size=2)
        v = net.volunteer()
        before = snapshot(net, v.id)
        leases = granted(lease_many(v, 32))
        assert len(leases) == 4
        refused = lease_many(v, 32)
        assert not refused.HasField("lease") and refused.work_remaining
        assert "holding 4 unfinished leases" in refused.notice
        assert snapshot(net, v.id)[0] == before[0] + 4  # the refusal leased nothing
        # one validated result: it may hold one more
        assert v.submit(leases[0]).status == "accepted"
        assert len(granted(lease_many(v, 32))) == 2
        # another new volunteer still gets work
        assert len(granted(lease_many(net.volunteer(), 32))) == 4
