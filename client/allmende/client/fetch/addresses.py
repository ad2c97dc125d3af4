"""Which IP addresses a volunteer connects to when it fetches a URL row.

Only public unicast addresses, by an explicit table rather than Python's `is_global` (whose
tables changed between 3.11, 3.12 and 3.13): every volunteer must draw the same line, so
that replicas report the same `private-address` rows. An address is public when it is in
none of the special-purpose ranges below (IANA's IPv4 and IPv6 special-purpose registries:
this network, private, shared/CGNAT, loopback, link-local, documentation, benchmarking,
multicast, reserved, broadcast, unique-local, site-local, discard) and, for IPv6, within
global unicast 2000::/3. IPv6 forms that carry an IPv4 address (IPv4-mapped ::ffff:0:0/96,
6to4 2002::/16, NAT64 64:ff9b::/96) are judged by that IPv4 address; the deprecated
IPv4-compatible ::/96, local-use NAT64 64:ff9b:1::/48 and Teredo 2001::/32 (inside the
refused 2001::/23) are refused outright.

A volunteer may allow some non-public networks (`--allow-private-addresses` allows all,
for tests and LANs): an address in an allowed network is fetched like a public one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4_NOT_PUBLIC = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # this network (0.0.0.0, the unspecified address, too)
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (cloud metadata services live here)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address 255.255.255.255
    )
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_NOT_PUBLIC = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "2001::/23",  # IETF protocol assignments (Teredo 2001::/32 among them)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
    )
)
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_V6_TO_V4 = ipaddress.IPv6Network("2002::/16")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

# Every address: what --allow-private-addresses means.
ALLOW_ALL: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("0.0.0.0/0"),
    ipaddress.IPv6Network("::/0"),
)


def parse_address(text: str) -> IPAddress:
    """An address as getaddrinfo gives it (an IPv6 zone such as %eth0 is dropped)."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped, 6to4 or NAT64."""
    if address in _V4_MAPPED:
        return address.ipv4_mapped
    if address in _V6_TO_V4:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """True for a public unicast address (see the module's docstring for the table)."""
    if isinstance(address, ipaddress.IPv4Address):
        return not any(address in network for network in _V4_NOT_PUBLIC)
    inner = embedded_ipv4(address)
    if inner is not None:
        return is_public(inner)
    if address not in _V6_GLOBAL_UNICAST:
        return False
    return not any(address in network for network in _V6_NOT_PUBLIC)


def is_allowed(address: IPAddress, allowed: Iterable[IPNetwork] = ()) -> bool:
    """Public, or in one of the `allowed` networks (an IPv6 form of an IPv4 address is
    allowed when either it or the IPv4 address is)."""
    if is_public(address):
        return True
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            candidates.append(inner)
    return any(
        candidate.version == network.version and candidate in network
        for network in allowed
        for candidate in candidates
    )


def parse_networks(texts: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Networks from text ("127.0.0.1/32", "10.0.0.0/8", "::1/128"); ValueError names one
    that is not a network."""
    return tuple(ipaddress.ip_network(text.strip(), strict=False) for text in texts)
