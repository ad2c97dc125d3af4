"""Limits on what one volunteer (or one network) can take: daily quotas, and replicas of a
unit going to distinct network addresses. A real coordinator in-process on port 0 (SQLite);
addresses are passed to `Coordinator.lease_work` directly where a test needs several."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from allmende.coordinator.domain.trust import DAY_MS, TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.store import schema as t
from allmende.protocol.errors import InvalidArgument
from tests.integration.trusthelp import Net, launch, sentences, unit_of


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
        pytest.skip("this machine cannot listen on IPv6 loopback")
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
