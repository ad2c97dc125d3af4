"""The dashboard's throughput history: items counted in buckets of `BUCKET_S` seconds, the
last `BUCKETS` kept, read back as items/s per bucket. The clock is the caller's (state.py
passes its injected one), so the history is deterministic under test.
"""

from __future__ import annotations

from collections import deque

# Throughput history: items/s in buckets of this many seconds, this many buckets kept.
BUCKET_S = 10.0
BUCKETS = 30  # five minutes


class Throughput:
    def __init__(self) -> None:
        self._buckets: deque[tuple[int, float]] = deque()

    def count(self, items: float, now: float) -> None:
        """Add `items` done at `now` (monotonic seconds), forgetting buckets too old to show."""
        bucket = int(now // BUCKET_S)
        if self._buckets and self._buckets[-1][0] == bucket:
            self._buckets[-1] = (bucket, self._buckets[-1][1] + items)
        else:
            self._buckets.append((bucket, items))
        while self._buckets and self._buckets[0][0] <= bucket - BUCKETS:
            self._buckets.popleft()

    def rates(self, now: float) -> list[float]:
        """items/s per bucket, oldest first, the last BUCKETS buckets up to `now`."""
        now_bucket = int(now // BUCKET_S)
        counts = dict(self._buckets)
        return [
            counts.get(b, 0.0) / BUCKET_S for b in range(now_bucket - BUCKETS + 1, now_bucket + 1)
        ]
