"""Trust policy: when a volunteer's result may stand alone, how much it may lease, and when
it is quarantined. The numbers follow BOINC's adaptive replication and daily quotas.

A volunteer earns trust per task kind. After `adaptive_after` consecutive valid results its
units are replicated only with probability max(1 / consecutive_valid, floor); otherwise the
job's quorum applies. A unit handed out alone must carry gold rows, or its result is treated
as suspicious and replicated after all. Gold misses, faults (malformed, forged, replayed or
copied results) and repeated disagreement with the majority end in quarantine.

Identities cost something. Volunteers are grouped by network address block (an IPv4 /32 and
an IPv6 /64 by default: one host, one customer network): registrations and lease calls from
one block are rate-limited (token buckets, domain/ratelimit.py), replicas of a unit go to
distinct blocks, and one block may hold only a share of a job's replica slots at once. A
volunteer without validated results may hold only a few unexpired leases; the number grows
with its record. Loopback peers (the local demo, tests) are exempt unless told otherwise;
the CLI tells it so whenever the coordinator listens on anything but loopback.

No unit is accepted on the word of volunteers none of whom has earned trust: the agreeing
results must include one that is *proven* (see `Arrival` in judge.py): its volunteer has
`proven_streak` consecutive valid results, or the result passed hidden gold rows (answers
the coordinator computed, or that proven quorums agreed on), or it came from the
coordinator's own machine when the operator said so (`trust_local`, `serve --trust-local`,
ALLMENDE_TRUST_LOCAL=1; the composition root, coordinator/app.py, reads the environment).
A fresh coordinator therefore needs one of: `--gold-compute`, gold rows earlier jobs of the
same model left, or `--trust-local` for the operator's volunteers on loopback.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import numpy as np

from allmende.coordinator.store.records import Reputation
from allmende.protocol.errors import InvalidArgument

DAY_MS = 24 * 3600 * 1000
# The default of `trust_local`: not said. A policy that does not say is False here; the
# composition root (coordinator/app.py) gives it the operator's ALLMENDE_TRUST_LOCAL.
_UNSAID: Any = object()


@dataclass(frozen=True)
class TrustPolicy:
    adaptive: bool = True
    adaptive_after: int = 10  # consecutive valid results before a unit may go out alone
    replication_floor: float = 0.05  # the lowest chance a trusted volunteer's unit is replicated
    gold_miss_limit: int = 1  # gold rows missed before quarantine
    fault_limit: int = 3  # refused results (malformed, forged, replayed, copied)
    disagreement_limit: int = 3  # results outvoted by a quorum
    daily_quota: int = 200  # units a new volunteer may lease per UTC day
    quota_per_valid: int = 2  # more units per day for each validated result
    distinct_addresses: bool = True  # replicas of a unit go to distinct address blocks
    # Address blocks: peers whose addresses share this many leading bits are one block for
    # rate limits, the distinct-address rule and the slot cap.
    ipv4_prefix: int = 32
    ipv6_prefix: int = 64  # one customer network: a /64 holds 2^64 "distinct" addresses
    loopback_exempt: bool = True  # loopback peers are in no block (local demo, tests)
    # Token buckets per block (in this process: each replica on PostgreSQL keeps its own).
    registrations_per_minute: float = 6.0
    registration_burst: int = 10
    leases_per_second: float = 20.0  # lease calls; one honest multi-GPU host needs a few
    lease_burst: int = 100
    # The share of one job's replica slots that volunteers from one block may hold in
    # unexpired leases at once (a block holding none may always take one).
    block_share: float = 0.25
    # Unexpired leases a volunteer may hold at once: this many without a validated result,
    # and `leases_per_valid` more for each one it has.
    unproven_leases: int = 4
    leases_per_valid: int = 1
    gold_pool: int = 256  # gold rows kept per job for mixing into units
    # Rows agreed by a quorum become gold only if one of the agreeing volunteers had this
    # many consecutive valid results: colluding new accounts cannot plant false gold rows
    # (which would get honest volunteers quarantined). 0 trusts any quorum.
    gold_streak: int = 10
    # A quorum is accepted only if one of its results is proven: its volunteer has this many
    # consecutive valid results, or the result passed gold rows, or it is local and
    # `trust_local` holds. 0 turns the rule off (any agreeing quorum is accepted).
    proven_streak: int = 10
    # Results sent from loopback (the coordinator's own machine) count as proven: the
    # operator vouches for its own volunteers. Off by default: anyone who can reach the
    # coordinator through a local proxy or from the same host would be trusted too. A
    # policy that does not say follows ALLMENDE_TRUST_LOCAL=1 (as `serve --trust-local`
    # does), which the composition root reads: the domain reads no environment.
    trust_local: bool = _UNSAID
    # Whether `trust_local` was left unsaid (it is then False until the composition root
    # applies the environment). Not a setting: `replace()` with any change says it.
    trust_local_unsaid: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.trust_local is _UNSAID:
            object.__setattr__(self, "trust_local", False)
            object.__setattr__(self, "trust_local_unsaid", True)
        checks = (
            ("adaptive_after", self.adaptive_after >= 1, "at least 1"),
            ("replication_floor", 0.0 < self.replication_floor <= 1.0, "in (0, 1]"),
            ("gold_miss_limit", self.gold_miss_limit >= 1, "at least 1"),
            ("fault_limit", self.fault_limit >= 1, "at least 1"),
            ("disagreement_limit", self.disagreement_limit >= 1, "at least 1"),
            ("daily_quota", self.daily_quota >= 1, "at least 1"),
            ("quota_per_valid", self.quota_per_valid >= 0, "0 or more"),
            ("gold_pool", self.gold_pool >= 1, "at least 1"),
            ("gold_streak", self.gold_streak >= 0, "0 or more"),
            ("ipv4_prefix", 1 <= self.ipv4_prefix <= 32, "1 to 32"),
            ("ipv6_prefix", 1 <= self.ipv6_prefix <= 128, "1 to 128"),
            ("registrations_per_minute", self.registrations_per_minute > 0, "above 0"),
            ("registration_burst", self.registration_burst >= 1, "at least 1"),
            ("leases_per_second", self.leases_per_second > 0, "above 0"),
            ("lease_burst", self.lease_burst >= 1, "at least 1"),
            ("block_share", 0.0 < self.block_share <= 1.0, "in (0, 1]"),
            ("unproven_leases", self.unproven_leases >= 1, "at least 1"),
            ("leases_per_valid", self.leases_per_valid >= 0, "0 or more"),
            ("proven_streak", self.proven_streak >= 0, "0 or more"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise InvalidArgument(name, f"{expected}, got {getattr(self, name)}")

    def replication_chance(self, rep: Reputation | None) -> float:
        """The chance that a unit leased by this volunteer is replicated (1.0: always)."""
        if not self.adaptive or rep is None or rep.consecutive_valid < self.adaptive_after:
            return 1.0
        if rep.faults or rep.gold_missed:
            return 1.0
        return max(1.0 / rep.consecutive_valid, self.replication_floor)

    def goes_alone(self, rep: Reputation | None, rng: np.random.Generator) -> bool:
        chance = self.replication_chance(rep)
        return chance < 1.0 and float(rng.random()) >= chance

    def quota(self, valid_results: int) -> int:
        """Units a volunteer with this many validated results may lease per day."""
        return self.daily_quota + self.quota_per_valid * valid_results

    def lease_cap(self, valid_results: int) -> int:
        """Unexpired leases a volunteer with this many validated results may hold at once."""
        return self.unproven_leases + self.leases_per_valid * valid_results

    def block(self, address: str) -> str:
        """The address block a peer address belongs to ('' for none: a local socket, or
        loopback while it is exempt): the address itself for a full-length prefix, else the
        network in CIDR notation ('2001:db8:1:2::/64')."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return ""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback and self.loopback_exempt:
            return ""
        prefix = self.ipv4_prefix if ip.version == 4 else self.ipv6_prefix
        if prefix == ip.max_prefixlen:
            return str(ip)
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))

    def quarantine_reason(self, rep: Reputation) -> str:
        """Why this record means quarantine ('' if it does not)."""
        if rep.gold_missed >= self.gold_miss_limit:
            return f"missed gold rows in {rep.gold_missed} result(s) ({rep.kind})"
        if rep.faults >= self.fault_limit:
            return f"{rep.faults} refused result(s): malformed, forged, replayed or copied"
        if rep.disagreements >= self.disagreement_limit:
            return f"outvoted by the quorum {rep.disagreements} times ({rep.kind})"
        return ""


def utc_day(now_ms: int) -> int:
    return now_ms // DAY_MS + 1  # never 0, which means "never leased"


def peer_address(peer: str, keep_loopback: bool = False) -> str:
    """The host part of a gRPC peer string ('ipv4:1.2.3.4:5', 'ipv6:%5B::1%5D:5' (gRPC
    percent-encodes the brackets), 'unix:...'), or '' for local sockets and, unless
    `keep_loopback`, for loopback, which share no network with anyone. IPv4-mapped IPv6
    peers count as their IPv4 address."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        host = unquote(rest).rsplit(":", 1)[0].strip("[]").lower()
        if host.startswith("::ffff:") and "." in host:
            kind, host = "ipv4", host.removeprefix("::ffff:")
        elif host in ("::1", "0:0:0:0:0:0:0:1"):
            return "::1" if keep_loopback else ""
        else:
            return host[:64]
    elif kind == "ipv4":
        host = rest.rsplit(":", 1)[0]
    else:
        return ""
    return "" if host.startswith("127.") and not keep_loopback else host[:64]
