"""Address blocks (TrustPolicy.block), the loopback exemption, the token buckets that limit
calls per block, and the cap on leases a volunteer holds."""

from __future__ import annotations

import pytest

from allmende.cli.main import build_parser
from allmende.coordinator.cli.limit_flags import limit_settings
from allmende.coordinator.domain.ratelimit import TokenBuckets, refuse
from allmende.coordinator.domain.trust import TrustPolicy, peer_address
from allmende.protocol.errors import InvalidArgument


@pytest.mark.parametrize(
    ("address", "block"),
    [
        ("10.0.0.5", "10.0.0.5"),
        ("2001:db8:1:2::5", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:10.0.0.5", "10.0.0.5"),  # an IPv4-mapped address is its IPv4 address
        ("127.0.0.1", ""),  # loopback: exempt
        ("127.3.4.5", ""),
        ("::1", ""),
        ("", ""),  # a local socket
        ("not an address", ""),
    ],
)
def test_the_default_blocks(address: str, block: str) -> None:
    assert TrustPolicy().block(address) == block


def test_two_addresses_in_one_64_are_one_block_and_two_64s_are_two() -> None:
    policy = TrustPolicy()
    assert policy.block("2001:db8:1:2::1") == policy.block("2001:db8:1:2:abcd::9")
    assert policy.block("2001:db8:1:2::1") != policy.block("2001:db8:1:3::1")
    assert policy.block("10.0.0.1") != policy.block("10.0.0.2")


def test_the_prefixes_are_settable() -> None:
    policy = TrustPolicy(ipv4_prefix=24, ipv6_prefix=48)
    assert policy.block("10.0.0.77") == "10.0.0.0/24"
    assert policy.block("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert TrustPolicy(ipv6_prefix=128).block("2001:db8::5") == "2001:db8::5"


def test_blocks_fit_the_lease_column() -> None:
    policy = TrustPolicy(ipv6_prefix=127)
    assert len(policy.block("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")) <= 64


def test_the_loopback_exemption_can_be_switched_off() -> None:
    policy = TrustPolicy(loopback_exempt=False)
    assert policy.block("127.0.0.1") == "127.0.0.1"
    assert policy.block("127.0.0.2") != policy.block("127.0.0.1")
    assert policy.block("::1") == "::/64"
    assert policy.block("") == ""  # a local socket is still no block


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.2:50123", "127.0.0.2"),
        ("ipv6:%5B::1%5D:50420", "::1"),
        ("ipv6:%5B::ffff:127.0.0.1%5D:9", "127.0.0.1"),
        ("ipv4:10.0.0.5:1", "10.0.0.5"),
        ("unix:/tmp/allmende.sock", ""),
    ],
)
def test_peer_address_can_keep_loopback(peer: str, address: str) -> None:
    assert peer_address(peer, keep_loopback=True) == address


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ipv4_prefix", 0),
        ("ipv4_prefix", 33),
        ("ipv6_prefix", 0),
        ("ipv6_prefix", 129),
        ("registrations_per_minute", 0.0),
        ("registration_burst", 0),
        ("leases_per_second", -1.0),
        ("lease_burst", 0),
        ("block_share", 0.0),
        ("block_share", 1.5),
        ("unproven_leases", 0),
        ("leases_per_valid", -1),
    ],
)
def test_bad_limits_name_their_field(field: str, value: float) -> None:
    with pytest.raises(InvalidArgument) as info:
        TrustPolicy(**{field: value})  # type: ignore[arg-type]
    assert field in str(info.value)


def test_the_lease_cap_grows_with_the_record() -> None:
    policy = TrustPolicy(unproven_leases=4, leases_per_valid=1)
    assert [policy.lease_cap(valid) for valid in (0, 1, 10)] == [4, 5, 14]


def test_a_bucket_gives_its_burst_then_refills_at_its_rate() -> None:
    buckets = TokenBuckets(per_s=2.0, burst=3)
    assert [buckets.take("a", 0) for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a", 0) == 500  # one token in half a second
    assert buckets.take("a", 100) == 400  # a refused call takes nothing
    assert buckets.take("b", 100) == 0  # another key has its own bucket
    assert buckets.take("a", 500) == 0
    assert buckets.take("a", 500) == 500
    assert [buckets.take("a", 60_000) for _ in range(4)][-1] > 0  # refills to the burst only


def test_a_refusal_says_when_to_retry() -> None:
    buckets = TokenBuckets(per_s=0.1, burst=10)
    error = refuse("registrations", "10.0.0.5", buckets, 9_100)
    assert error.code == "RESOURCE_EXHAUSTED"
    assert "10.0.0.5" in error.message and "retry in 10 s" in error.message
    assert "6 a minute" in error.message


def test_buckets_forget_full_ones_when_many_blocks_are_seen() -> None:
    buckets = TokenBuckets(per_s=1.0, burst=1)
    for n in range(60_000):
        buckets.take(f"block-{n}", n)  # each refills within a second
    assert len(buckets._buckets) <= 50_000
    assert buckets.take("block-59999", 59_999) > 0  # a recent one is remembered


def test_serve_flags_set_the_limits() -> None:
    args = build_parser().parse_args(
        [
            "coordinator",
            "serve",
            "--data",
            "unused",
            "--ipv4-prefix",
            "24",
            "--ipv6-prefix",
            "56",
            "--registrations-per-minute",
            "2",
            "--leases-per-second",
            "5",
            "--block-share",
            "0.5",
            "--unproven-leases",
            "8",
            "--no-loopback-exempt",
        ]
    )
    policy = TrustPolicy(**limit_settings(args))
    assert (policy.ipv4_prefix, policy.ipv6_prefix) == (24, 56)
    assert (policy.registrations_per_minute, policy.leases_per_second) == (2.0, 5.0)
    assert (policy.block_share, policy.unproven_leases) == (0.5, 8)
    assert not policy.loopback_exempt
    defaults = build_parser().parse_args(["coordinator", "serve", "--data", "unused"])
    assert TrustPolicy(**limit_settings(defaults)) == TrustPolicy()


@pytest.mark.parametrize(
    ("listen", "exempt"),
    [
        ("127.0.0.1:50051", True),
        ("[::1]:0", True),
        ("localhost:7000", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("192.0.2.10:50051", False),
        ("coordinator.example.org:50051", False),
    ],
)
def test_loopback_is_exempt_only_while_serving_loopback_alone(listen: str, exempt: bool) -> None:
    """Default `serve` reachable from the network: 127.0.0.1 is one more address block, so a
    client on the coordinator's own host (or behind a local proxy) gets no free identities."""
    args = build_parser().parse_args(["coordinator", "serve", "--data", "x", "--listen", listen])
    assert TrustPolicy(**limit_settings(args)).loopback_exempt is exempt
