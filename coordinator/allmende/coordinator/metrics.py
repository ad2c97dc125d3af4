"""Prometheus metrics for one coordinator, in a registry of its own (several coordinators
can live in one process, as in tests), served on `--metrics HOST:PORT`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.units_leased = Counter("allmende_units_leased", "Leases granted", registry=r)
        self.units_accepted = Counter(
            "allmende_units_accepted", "Units accepted by quorum", registry=r
        )
        self.units_failed = Counter(
            "allmende_units_failed", "Units that failed validation", registry=r
        )
        self.items_accepted = Counter(
            "allmende_items_accepted", "Distinct items in accepted units", registry=r
        )
        self.results = Counter(
            "allmende_results",
            "Results received, by validation outcome",
            ["outcome"],
            registry=r,
        )
        self.rejected_requests = Counter(
            "allmende_rpc_errors",
            "Requests refused, by method and status",
            ["method", "code"],
            registry=r,
        )
        self.lease_latency = Histogram(
            "allmende_lease_latency_seconds",
            "LeaseWork latency",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.submit_latency = Histogram(
            "allmende_submit_latency_seconds",
            "SubmitResult latency",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.active_volunteers = Gauge(
            "allmende_active_volunteers", "Volunteers seen in the last two minutes", registry=r
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def watch_active_volunteers(self, count: Callable[[], int]) -> None:
        self.active_volunteers.set_function(lambda: float(count()))

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics over HTTP; returns the bound port."""
        self._server, self._thread = start_http_server(port, host, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
