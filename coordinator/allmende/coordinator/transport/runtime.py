"""The gRPC server a coordinator runs its servicers on: which kind, and how it starts and stops.

Measured with bench/load.py on the 2-core reference machine (1,000 simulated volunteers
each returning a unit every ~10 s):

- SQLite: an asyncio server running the volunteer's hot path on its event loop (see
  bridge.py). Each call is about a millisecond of CPU under one write lock, so threads only
  added hand-offs and contention for the GIL: lease p99 17 ms, against 34-45 ms for the
  threaded server, and ~10 % more results per second.
- PostgreSQL: grpc's threaded server. A call there waits on a dozen round trips; on the
  event loop it would stall every other call, and sent to a pool from the loop it was
  slower than the threaded server (lease p99 ~240 ms against ~110 ms).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent import futures
from typing import Any, Protocol

import grpc

from allmende.coordinator.transport.bridge import BridgeHandler, StaticHandler


class Runtime(Protocol):
    def bind(self, address: str, credentials: grpc.ServerCredentials | None) -> int: ...
    def start(self) -> None: ...
    def stop(self, grace_s: float) -> None: ...


def _bind(server: Any, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """The port bound, or 0 where the address cannot be bound."""
    try:
        if credentials is None:
            return int(server.add_insecure_port(address))
        return int(server.add_secure_port(address, credentials))
    except RuntimeError:
        return 0


class ThreadedRuntime:
    def __init__(
        self,
        handlers: dict[str, grpc.RpcMethodHandler],
        interceptors: Sequence[grpc.ServerInterceptor],
        workers: int,
        options: list[tuple[str, Any]],
    ) -> None:
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
            interceptors=list(interceptors),
            options=options,
        )
        self.server.add_generic_rpc_handlers((StaticHandler(handlers),))

    def bind(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        return _bind(self.server, address, credentials)

    def start(self) -> None:
        self.server.start()

    def stop(self, grace_s: float) -> None:
        self.server.stop(grace=grace_s).wait()


class LoopRuntime:
    """An asyncio gRPC server on an event loop of its own thread."""

    def __init__(
        self,
        handlers: dict[str, grpc.RpcMethodHandler],
        interceptors: Sequence[grpc.ServerInterceptor],
        workers: int,
        options: list[tuple[str, Any]],
        inline: frozenset[str],
    ) -> None:
        self.pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc")
        bridge = BridgeHandler(handlers, interceptors, self.pool, inline)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="grpc", daemon=True)
        self.thread.start()

        async def create() -> grpc.aio.Server:  # the server belongs to the loop it runs on
            return grpc.aio.server(handlers=[bridge], options=options)

        self.server: grpc.aio.Server = self._call(create())

    def _call(self, awaitable: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(awaitable, self.loop).result()

    def bind(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        return _bind(self.server, address, credentials)

    def start(self) -> None:
        self._call(self.server.start())

    def stop(self, grace_s: float) -> None:
        try:
            self._call(self.server.stop(grace=grace_s))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
            self.loop.close()
            self.pool.shutdown(wait=False, cancel_futures=True)
