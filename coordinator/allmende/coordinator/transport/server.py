"""The coordinator's gRPC server: its servicers, interceptors and health service on the
runtime that suits the store (runtime.py), bound with or without TLS.

It is handed the domain it serves; the composition root (allmende.coordinator.app) builds
that, opens the store and runs the threads beside the server.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from allmende.coordinator.domain.admin import Admin
from allmende.coordinator.domain.coordinator import Coordinator
from allmende.coordinator.metrics import Metrics
from allmende.coordinator.transport.admin_servicer import AdminServicer
from allmende.coordinator.transport.auth import VolunteerAuthInterceptor
from allmende.coordinator.transport.bridge import collect
from allmende.coordinator.transport.guard import ParseGuardInterceptor
from allmende.coordinator.transport.model_servicer import ModelServicer
from allmende.coordinator.transport.runtime import LoopRuntime, Runtime, ThreadedRuntime
from allmende.coordinator.transport.servicers import (
    DatasetServicer,
    JobServicer,
    VolunteerServicer,
)
from allmende.protocol.limits import MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES
from allmende.v1 import allmende_pb2 as pb
from allmende.v1 import allmende_pb2_grpc as rpc

# Calls that run on the event loop itself on SQLite (see bridge.py).
INLINE_ON_SQLITE = frozenset(
    f"/allmende.v1.VolunteerService/{m}"
    for m in ("LeaseWork", "SubmitResult", "SubmitResults", "ReleaseWork", "GetCoordinatorInfo")
)


class GrpcServer:
    """Every service of the coordinator on one server, not yet bound.

    `threaded`: grpc's threaded server (for PostgreSQL) rather than the asyncio one (SQLite;
    runtime.py says why). `readers`: the tokens researcher calls need (none: open)."""

    def __init__(
        self,
        coordinator: Coordinator,
        admin: Admin,
        metrics: Metrics,
        admin_token: str,
        readers: tuple[str, ...],
        workers: int,
        threaded: bool,
    ) -> None:
        self.health = health.HealthServicer()
        self.services = [s.full_name for s in pb.DESCRIPTOR.services_by_name.values()]
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        handlers = collect(
            lambda s: health_pb2_grpc.add_HealthServicer_to_server(self.health, s),
            lambda s: rpc.add_VolunteerServiceServicer_to_server(
                VolunteerServicer(coordinator, metrics), s
            ),
            lambda s: rpc.add_JobServiceServicer_to_server(
                JobServicer(coordinator, admin_token, metrics, readers), s
            ),
            lambda s: rpc.add_DatasetServiceServicer_to_server(
                DatasetServicer(coordinator, metrics, readers), s
            ),
            lambda s: rpc.add_ModelServiceServicer_to_server(
                ModelServicer(coordinator, admin_token, metrics, readers), s
            ),
            lambda s: rpc.add_AdminServiceServicer_to_server(
                AdminServicer(admin, admin_token, metrics), s
            ),
        )
        # Order matters: oversized, overfull or unparseable requests are refused (guard.py)
        # before authentication looks at them.
        interceptors = [ParseGuardInterceptor(), VolunteerAuthInterceptor(coordinator, metrics)]
        options = [
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
        self.runtime: Runtime = (
            ThreadedRuntime(handlers, interceptors, workers, options)
            if threaded
            else LoopRuntime(handlers, interceptors, workers, options, INLINE_ON_SQLITE)
        )

    def bind(self, address: str, tls: tuple[bytes, bytes] | None) -> int:
        """Listen on HOST:PORT, with TLS given (private key, certificate chain) as PEM; the
        port bound, or 0 where the address cannot be bound."""
        if tls is None:
            return self.runtime.bind(address, None)
        return self.runtime.bind(address, grpc.ssl_server_credentials([tls]))

    def start(self) -> None:
        self.runtime.start()

    def not_serving(self) -> None:
        """Tell health checks to look elsewhere (the server drains, then stops)."""
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    def stop(self, grace_s: float) -> None:
        self.runtime.stop(grace_s)

    def _set_health(self, status: int) -> None:
        for name in ["", *self.services]:
            self.health.set(name, status)
