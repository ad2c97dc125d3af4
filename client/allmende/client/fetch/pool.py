"""Fetching a unit's URL rows concurrently, on a bounded pool of threads.

The fetches of a unit start together as soon as the unit is to be computed; decoding waits
on each row's fetch, so the rows of the first batch are computed while later ones are still
arriving (tasks/images.py).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from allmende.client.fetch.addresses import IPNetwork
from allmende.client.fetch.http import DEFAULT_LIMITS, Fetched, FetchLimits, fetch_url

# Fetches in flight at once (one volunteer, one unit: a few dozen connections at most).
WORKERS = 16


class UrlFetcher:
    """Fetches URLs within `limits` (the protocol's unless a test says otherwise), from
    public addresses and the `allowed` networks."""

    def __init__(
        self,
        allowed: Sequence[IPNetwork] = (),
        limits: FetchLimits = DEFAULT_LIMITS,
        workers: int = WORKERS,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.allowed = tuple(allowed)
        self.limits = limits
        self.tls = tls
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="allmende-fetch")

    def fetch(self, url: str) -> Fetched:
        return fetch_url(url, self.allowed, self.limits, self.tls)

    def start(self, urls: Sequence[str]) -> list[Future[Fetched] | None]:
        """One fetch per non-empty URL, in order (None for a row without one)."""
        return [self._pool.submit(self.fetch, url) if url else None for url in urls]

    def fetch_all(self, urls: Sequence[str]) -> list[Fetched | None]:
        """Every URL fetched (None for a row without one), waiting for all."""
        return [future.result() if future else None for future in self.start(urls)]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
