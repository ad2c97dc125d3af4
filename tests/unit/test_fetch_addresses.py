"""Which addresses a volunteer fetches URL rows from (client/allmende/client/fetch/
addresses.py), on literal addresses: an explicit table, the same on every Python."""

from __future__ import annotations

import pytest

from allmende.client.fetch.addresses import (
    ALLOW_ALL,
    is_allowed,
    is_public,
    parse_address,
    parse_networks,
)

NOT_PUBLIC = [
    "0.0.0.0",
    "0.1.2.3",
    "10.1.2.3",
    "100.64.0.1",  # carrier-grade NAT
    "100.127.255.254",
    "127.0.0.1",
    "127.0.0.2",
    "169.254.169.254",  # cloud metadata
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.8",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b:1::1",  # local-use NAT64
    "2001::1",  # Teredo
    "2001:db8::1",
    "3fff::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",
    "ff02::1",
    "100::1",
    "4000::1",  # outside global unicast 2000::/3
]
PUBLIC = [
    "1.1.1.1",
    "8.8.8.8",
    "93.184.216.34",
    "100.63.255.255",  # just below 100.64/10
    "100.128.0.0",  # just above
    "172.15.255.255",
    "172.32.0.0",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2a00:1450:4001:81b::200e",
    "::ffff:8.8.8.8",  # IPv4-mapped public
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]


@pytest.mark.parametrize("text", NOT_PUBLIC)
def test_non_public_addresses_are_refused(text: str) -> None:
    address = parse_address(text)
    assert not is_public(address)
    assert not is_allowed(address)
    assert is_allowed(address, ALLOW_ALL)


@pytest.mark.parametrize("text", PUBLIC)
def test_public_unicast_addresses_are_fetched(text: str) -> None:
    assert is_public(parse_address(text))


def test_an_allowance_covers_its_networks_only() -> None:
    allowed = parse_networks(["127.0.0.1/32", "10.0.0.0/8"])
    assert is_allowed(parse_address("127.0.0.1"), allowed)
    assert is_allowed(parse_address("10.200.0.1"), allowed)
    assert is_allowed(parse_address("::ffff:127.0.0.1"), allowed)  # its IPv4 is allowed
    assert not is_allowed(parse_address("127.0.0.2"), allowed)
    assert not is_allowed(parse_address("192.168.0.1"), allowed)
    assert not is_allowed(parse_address("::1"), allowed)
