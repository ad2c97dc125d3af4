"""Serving the coordinator's synchronous servicers from an asyncio gRPC server.

grpc's synchronous server hands every call between threads several times (the polling
thread, a pool worker, condition variables for the request and the status), which cost
about 1.4 ms per call, more than leasing a unit itself. The asyncio server does the network
work on one event loop; this module runs the servicers, written as plain functions, behind
it unchanged:

- `collect` takes the method handlers a generated `add_*Servicer_to_server` registers, and
  `BridgeHandler` applies the (synchronous) interceptors to them, as grpc would;
- the calls named `inline` run on the event loop itself: the volunteer's hot path on
  SQLite, where a call is a millisecond of CPU under one write lock and a thread hop costs
  more than it saves; every other call (uploads, downloads, administration, and all calls
  on PostgreSQL, which wait on round trips) runs on a thread pool;
- `context.abort`, which the servicers call synchronously, ends the call with its status.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from allmende.coordinator.transport.errors import Status, forget, status_of

_END = object()


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class SyncContext:
    """The part of grpc.ServicerContext the servicers use, over an asyncio context."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._context = context

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return str(self._context.peer())

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Abort(code, details)

    def is_active(self) -> bool:
        return not self._context.done()


class _Collector:
    """Stands in for a server to capture what a generated add_*_to_server registers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, _handlers: Any) -> None:
        pass  # the same handlers arrive below, by name

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler


def collect(*registrations: Callable[[Any], None]) -> dict[str, grpc.RpcMethodHandler]:
    """Method handlers by full method name, from calls like `lambda s: add_X_to_server(x, s)`."""
    collector = _Collector()
    for register in registrations:
        register(collector)
    return collector.handlers


class StaticHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Serves collected method handlers on grpc's threaded server."""

    def __init__(self, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self._handlers = handlers

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(details.method)


class _Details:
    def __init__(self, method: str, metadata: Any) -> None:
        self.method = method
        self.invocation_metadata = metadata


class BridgeHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(
        self,
        handlers: dict[str, grpc.RpcMethodHandler],
        interceptors: Sequence[grpc.ServerInterceptor],
        pool: ThreadPoolExecutor,
        inline: frozenset[str] = frozenset(),
    ) -> None:
        self._pool = pool
        self._bridged: dict[str, grpc.RpcMethodHandler] = {}
        for method, handler in handlers.items():
            wrapped = handler
            for interceptor in reversed(interceptors):  # the first one sees the call first
                wrapped = interceptor.intercept_service(
                    functools.partial(lambda h, _details: h, wrapped), _Details(method, ())
                )
            self._bridged[method] = self._bridge(wrapped, method, method in inline)

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._bridged.get(details.method)

    async def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, function, *args)
        return await loop.run_in_executor(self._pool, call)

    def _bridge(
        self, h: grpc.RpcMethodHandler, method: str, inline: bool
    ) -> grpc.RpcMethodHandler:
        kwargs = {
            "request_deserializer": h.request_deserializer,
            "response_serializer": h.response_serializer,
        }
        if h.unary_unary is not None:
            unary = h.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                sync = SyncContext(context)
                try:
                    if inline:
                        return unary(request, sync)
                    return await self._run(unary, request, sync)
                except Exception as exc:
                    status = _status(exc, method)
                del request, sync  # see _status
                await context.abort(*status)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
        if h.unary_stream is not None:
            stream = h.unary_stream

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                sync = SyncContext(context)
                try:
                    responses = await self._run(lambda: iter(stream(request, sync)))
                    while (item := await self._run(next, responses, _END)) is not _END:
                        yield item
                    return
                except Exception as exc:
                    status = _status(exc, method)
                del request, sync
                await context.abort(*status)

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
        if h.stream_unary is not None:
            upload = h.stream_unary

            async def stream_unary(requests: AsyncIterator[Any], context: Any) -> Any:
                sync = SyncContext(context)
                loop = asyncio.get_running_loop()
                try:
                    return await self._run(upload, _blocking(requests, loop), sync)
                except Exception as exc:
                    status = _status(exc, method)
                del requests, sync
                await context.abort(*status)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)
        raise TypeError(f"no bridge for a bidirectional stream ({h})")


def _status(exc: Exception, method: str) -> Status:
    """The status an exception out of a handler ends its call with, the exception forgotten.

    grpc.aio ends an aborted call in a reference cycle (its AbortError, the traceback, the
    coroutine's frames) that lives until a full garbage collection; whatever the cycle
    reaches lives as long. So the handler's exception chain and frames are cleared here, and
    the handler drops the request before it aborts: the cycle then holds nothing large.
    """
    if isinstance(exc, _Abort):
        status = exc.code, exc.details
    else:  # the servicers map their own errors; this is an interceptor's or a bridge bug
        status = status_of(exc, method.rsplit("/", 1)[-1])
    forget(exc)
    return status


def _blocking(requests: AsyncIterator[Any], loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    """A request stream read from a pool thread, one message at a time from the loop."""

    async def pull() -> Any:
        try:
            return await requests.__anext__()
        except StopAsyncIteration:
            return _END

    while True:
        item = asyncio.run_coroutine_threadsafe(pull(), loop).result()
        if item is _END:
            return
        yield item
