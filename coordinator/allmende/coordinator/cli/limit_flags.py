"""`coordinator serve` flags for what one network may take: address blocks, rate limits per
block, the share of a job's replica slots one block may hold, and the leases an unproven
volunteer may hold at once (TrustPolicy in coordinator/domain/trust.py; README: Trust)."""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable
from typing import Any


def _whole(least: int, most: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
        if not least <= number <= most:
            raise argparse.ArgumentTypeError(f"expected {least} to {most}, got {number}")
        return number

    return parse


def _rate(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not 0.0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {number}")
    return number


def _share(value: str) -> float:
    number = _rate(value)
    if number > 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {number}")
    return number


def add_limit_flags(group: Any) -> None:
    """Add the flags to `serve`'s trust group."""
    group.add_argument(
        "--ipv4-prefix",
        type=_whole(1, 32),
        default=32,
        help="IPv4 peers sharing this many leading bits are one address block (default 32)",
    )
    group.add_argument(
        "--ipv6-prefix",
        type=_whole(1, 128),
        default=64,
        help="IPv6 peers sharing this many leading bits are one address block (default 64)",
    )
    group.add_argument(
        "--registrations-per-minute",
        type=_rate,
        default=6.0,
        help="volunteer registrations per address block and minute, after a burst of 10 "
        "(default 6; per coordinator process)",
    )
    group.add_argument(
        "--leases-per-second",
        type=_rate,
        default=20.0,
        help="LeaseWork calls per address block and second, after a burst of 100 "
        "(default 20; per coordinator process)",
    )
    group.add_argument(
        "--block-share",
        type=_share,
        default=0.25,
        help="the share of a job's replica slots one address block may hold in unexpired "
        "leases (default 0.25; a block holding none may always take one)",
    )
    group.add_argument(
        "--unproven-leases",
        type=_whole(1, 1_000_000),
        default=4,
        help="unexpired leases a volunteer without a validated result may hold at once; "
        "one more per validated result (default 4)",
    )
    group.add_argument(
        "--no-loopback-exempt",
        action="store_true",
        help="count loopback peers as an address block even while listening on loopback "
        "alone (they always count once the coordinator listens on any other address)",
    )


def limit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrustPolicy fields the flags set."""
    return {
        "ipv4_prefix": args.ipv4_prefix,
        "ipv6_prefix": args.ipv6_prefix,
        "registrations_per_minute": args.registrations_per_minute,
        "leases_per_second": args.leases_per_second,
        "block_share": args.block_share,
        "unproven_leases": args.unproven_leases,
        "loopback_exempt": not args.no_loopback_exempt and listens_on_loopback_only(args.listen),
    }


def listens_on_loopback_only(listen: str) -> bool:
    """Whether HOST:PORT is a loopback address, so that only this machine can connect.

    Loopback peers are exempt from the address-block limits only then (the local demo, one
    machine's own volunteers). A coordinator the network can reach might be reached through a
    local proxy or by another user of its own host: there 127.0.0.1 is one more block."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or a wildcard other than loopback
