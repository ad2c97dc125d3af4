"""Token buckets per address block: how often one network may register identities or ask
for work.

The buckets live in this process. On PostgreSQL every coordinator replica keeps its own, so
a block that spreads its calls over N replicas gets up to N times the rate; the caps that
must hold across replicas (replica slots per block, leases per volunteer) are enforced in
the store instead.
"""

from __future__ import annotations

import math
import threading

from allmende.protocol.errors import ResourceExhausted

# Buckets kept before full ones (blocks idle long enough to have refilled) are dropped; a
# full bucket is what a block that was never seen gets anyway.
_KEPT = 50_000


class TokenBuckets:
    """One bucket of `burst` tokens per key, refilled at `per_s` tokens a second; a call
    takes one token, or is refused (taking nothing) with the time until one is there."""

    def __init__(self, per_s: float, burst: int) -> None:
        self.per_s = per_s
        self.burst = burst
        self._buckets: dict[str, tuple[float, int]] = {}  # key -> (tokens, at ms)
        self._lock = threading.Lock()

    def take(self, key: str, now_ms: int) -> int:
        """Take a token for `key`: 0 if it had one, else the milliseconds until it will."""
        with self._lock:
            tokens = self._tokens(key, now_ms)
            if tokens < 1.0:
                return max(1, math.ceil((1.0 - tokens) / self.per_s * 1000))
            if len(self._buckets) >= _KEPT and key not in self._buckets:
                self._forget_full(now_ms)
            self._buckets[key] = (tokens - 1.0, now_ms)
            return 0

    def _tokens(self, key: str, now_ms: int) -> float:
        tokens, at = self._buckets.get(key, (float(self.burst), now_ms))
        return min(float(self.burst), tokens + max(0, now_ms - at) / 1000 * self.per_s)

    def _forget_full(self, now_ms: int) -> None:
        full = [k for k in self._buckets if self._tokens(k, now_ms) >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= _KEPT:  # all busy: forget the oldest half (they refill)
            oldest = sorted(self._buckets, key=lambda k: self._buckets[k][1])
            for key in oldest[: _KEPT // 2]:
                del self._buckets[key]


def refuse(what: str, block: str, buckets: TokenBuckets, wait_ms: int) -> ResourceExhausted:
    """The error for a call a bucket refused, saying when to try again."""
    seconds = max(1, math.ceil(wait_ms / 1000))
    rate = (
        f"{buckets.per_s:g} a second" if buckets.per_s >= 1 else f"{buckets.per_s * 60:g} a minute"
    )
    return ResourceExhausted(
        f"too many {what} from address block {block} (at most {buckets.burst} at once, "
        f"then {rate}); retry in {seconds} s"
    )
