"""TrustPolicy: adaptive replication's odds, daily quotas, quarantine reasons, peer addresses
and the checks on the policy's own values (coordinator/allmende/coordinator/domain/trust.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from allmende.coordinator.app import policy_in_force, trust_local_from
from allmende.coordinator.domain.trust import DAY_MS, TrustPolicy, peer_address, utc_day
from allmende.coordinator.store.records import Reputation
from allmende.protocol.errors import InvalidArgument

KIND = "embed-text"


def rep(**counters: int) -> Reputation:
    return Reputation(KIND, **counters)


# ------------------------------------------------------------------ adaptive replication


def test_new_and_unknown_volunteers_are_always_replicated() -> None:
    policy = TrustPolicy(adaptive_after=3, replication_floor=0.05)
    assert policy.replication_chance(None) == 1.0
    assert policy.replication_chance(rep()) == 1.0
    assert policy.replication_chance(rep(consecutive_valid=2, valid=50)) == 1.0


def test_the_chance_falls_as_one_over_the_streak_down_to_the_floor() -> None:
    policy = TrustPolicy(adaptive_after=3, replication_floor=0.05)
    assert policy.replication_chance(rep(consecutive_valid=3, valid=3)) == pytest.approx(1 / 3)
    assert policy.replication_chance(rep(consecutive_valid=10, valid=10)) == pytest.approx(0.1)
    assert policy.replication_chance(rep(consecutive_valid=20, valid=20)) == pytest.approx(0.05)
    assert policy.replication_chance(rep(consecutive_valid=10_000, valid=10_000)) == 0.05


def test_a_fault_or_a_gold_miss_ends_adaptive_replication_for_good() -> None:
    policy = TrustPolicy(adaptive_after=3, replication_floor=0.05)
    assert policy.replication_chance(rep(consecutive_valid=100, valid=100, faults=1)) == 1.0
    assert policy.replication_chance(rep(consecutive_valid=100, valid=100, gold_missed=1)) == 1.0


def test_adaptive_off_always_replicates() -> None:
    policy = TrustPolicy(adaptive=False, adaptive_after=1)
    assert policy.replication_chance(rep(consecutive_valid=1000, valid=1000)) == 1.0
    rng = np.random.default_rng(0)
    assert not any(policy.goes_alone(rep(consecutive_valid=1000), rng) for _ in range(200))


def test_goes_alone_follows_the_chance() -> None:
    policy = TrustPolicy(adaptive_after=3, replication_floor=0.05)
    rng = np.random.default_rng(1234)
    newcomer = [policy.goes_alone(rep(consecutive_valid=2), rng) for _ in range(500)]
    assert not any(newcomer)
    veteran = [policy.goes_alone(rep(consecutive_valid=1000), rng) for _ in range(2000)]
    # replicated with probability 0.05: about 100 of 2000 draws
    assert 40 <= veteran.count(False) <= 170
    halfway = [policy.goes_alone(rep(consecutive_valid=4), rng) for _ in range(2000)]
    assert 350 <= halfway.count(False) <= 650  # replicated with probability 1/4


# ------------------------------------------------------------------ quotas and quarantine


def test_quota_grows_with_validated_results() -> None:
    assert TrustPolicy().quota(0) == 200
    assert TrustPolicy().quota(10) == 220
    assert TrustPolicy(daily_quota=2, quota_per_valid=0).quota(1000) == 2
    assert TrustPolicy(daily_quota=5, quota_per_valid=3).quota(2) == 11


def test_utc_day_is_never_zero_and_changes_at_midnight() -> None:
    assert utc_day(0) == 1
    assert utc_day(DAY_MS - 1) == 1
    assert utc_day(DAY_MS) == 2
    t = 1_700_000_000_000
    assert utc_day(t) + 1 == utc_day(t + DAY_MS)


def test_quarantine_reason_names_what_crossed_its_limit() -> None:
    policy = TrustPolicy(gold_miss_limit=1, fault_limit=3, disagreement_limit=2)
    assert policy.quarantine_reason(rep()) == ""
    assert policy.quarantine_reason(rep(faults=2, disagreements=1, valid=9)) == ""
    assert "gold" in policy.quarantine_reason(rep(gold_missed=1, faults=1))
    assert KIND in policy.quarantine_reason(rep(gold_missed=1, faults=1))
    faulty = policy.quarantine_reason(rep(faults=3))
    assert "3 refused result(s)" in faulty and "replayed" in faulty
    assert "outvoted" in policy.quarantine_reason(rep(disagreements=2))
    lenient = TrustPolicy(gold_miss_limit=2)
    assert lenient.quarantine_reason(rep(gold_missed=1, faults=1)) == ""
    assert "gold" in lenient.quarantine_reason(rep(gold_missed=2, faults=2))


# ------------------------------------------------------------------ policy values


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("adaptive_after", 0),
        ("replication_floor", 0.0),
        ("replication_floor", -0.1),
        ("replication_floor", 1.5),
        ("gold_miss_limit", 0),
        ("fault_limit", 0),
        ("disagreement_limit", 0),
        ("daily_quota", 0),
        ("quota_per_valid", -1),
        ("gold_pool", 0),
    ],
)
def test_invalid_policy_values_are_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(InvalidArgument) as info:
        TrustPolicy(**{field: value})  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(value) in info.value.message


def test_edge_values_are_accepted() -> None:
    TrustPolicy(adaptive_after=1, replication_floor=1.0, quota_per_valid=0, daily_quota=1)
    TrustPolicy(replication_floor=1e-9, gold_pool=1)


# ------------------------------------------------------------------ peer addresses


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.5:50123", "10.0.0.5"),
        ("ipv4:203.0.113.9:1", "203.0.113.9"),
        ("ipv4:127.0.0.1:50123", ""),
        ("ipv4:127.8.9.10:1", ""),
        # gRPC percent-encodes the brackets of IPv6 peers
        ("ipv6:%5B::1%5D:50420", ""),
        ("ipv6:[::1]:50420", ""),
        ("ipv6:%5B0:0:0:0:0:0:0:1%5D:7", ""),
        ("ipv6:%5B2001:db8::1%5D:443", "2001:db8::1"),
        ("ipv6:[2001:db8::1]:443", "2001:db8::1"),
        ("ipv6:%5B2001:DB8::A%5D:443", "2001:db8::a"),
        ("ipv6:%5B::ffff:127.0.0.1%5D:9", ""),
        ("ipv6:%5B::ffff:10.0.0.5%5D:9", "10.0.0.5"),
        ("unix:/tmp/allmende.sock", ""),
        ("unix-abstract:allmende", ""),
        ("", ""),
        ("garbage", ""),
    ],
)
def test_peer_address(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_an_ipv4_and_its_mapped_ipv6_form_are_one_address() -> None:
    assert peer_address("ipv4:198.51.100.7:1") == peer_address("ipv6:%5B::ffff:198.51.100.7%5D:2")


def test_peer_addresses_fit_the_column() -> None:
    assert len(peer_address("ipv6:%5B" + "a" * 100 + "::1%5D:1")) <= 64


def test_trust_local_follows_the_environment_and_refuses_a_bad_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The composition root reads ALLMENDE_TRUST_LOCAL for a policy that does not say.
    assert policy_in_force(TrustPolicy(), {"ALLMENDE_TRUST_LOCAL": "0"}).trust_local is False
    assert policy_in_force(None, {"ALLMENDE_TRUST_LOCAL": "true"}).trust_local is True
    trusting = policy_in_force(TrustPolicy(daily_quota=3), {"ALLMENDE_TRUST_LOCAL": "1"})
    assert trusting.trust_local is True and trusting.daily_quota == 3
    said = TrustPolicy(trust_local=False)  # an explicit value wins
    assert policy_in_force(said, {"ALLMENDE_TRUST_LOCAL": "true"}).trust_local is False
    assert policy_in_force(replace(said, trust_local=True), {}).trust_local is True
    with pytest.raises(InvalidArgument) as err:
        policy_in_force(TrustPolicy(), {"ALLMENDE_TRUST_LOCAL": "maybe"})
    assert err.value.field == "ALLMENDE_TRUST_LOCAL"
    assert policy_in_force(TrustPolicy(), {}).trust_local is False  # loopback earns no trust
    assert TrustPolicy().proven_streak == 10
    # The domain itself reads no environment: unsaid is off until the root decides.
    monkeypatch.setenv("ALLMENDE_TRUST_LOCAL", "1")
    assert TrustPolicy().trust_local is False and TrustPolicy().trust_local_unsaid
    assert not TrustPolicy(trust_local=False).trust_local_unsaid
    # and `coordinator serve` reads it too: the flag or the environment
    monkeypatch.setenv("ALLMENDE_TRUST_LOCAL", "yes")
    assert trust_local_from() is True
