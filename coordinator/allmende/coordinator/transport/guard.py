"""A server interceptor that turns unparseable request bytes into INVALID_ARGUMENT.

Left alone, grpc answers a request it cannot deserialise with INTERNAL, which says "our
fault" and invites retries; the fault is the sender's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

from allmende.protocol.errors import InvalidArgument


class _Unparseable:
    def __init__(self, error: str) -> None:
        self.error = error


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf raises DecodeError and friends
            return _Unparseable(str(exc)[:200])

    return parse


def _message(method: str) -> str:
    return f"request: a serialised protobuf message for {method.rsplit('/', 1)[-1]}"


class ParseGuardInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None:
            return handler
        method = details.method
        expected = _message(method)

        def check(request: Any, context: grpc.ServicerContext) -> None:
            if isinstance(request, _Unparseable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{expected} ({request.error})")

        def guarded_stream(requests: Iterator[Any]) -> Iterator[Any]:
            for request in requests:
                if isinstance(request, _Unparseable):
                    raise InvalidArgument("request", f"{expected[9:]} ({request.error})")
                yield request

        kwargs = {
            "request_deserializer": _safe(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
                check(request, context)
                return inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            def unary_stream(request: Any, context: grpc.ServicerContext) -> Any:
                check(request, context)
                return inner_us(request, context)

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            def stream_unary(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                return inner_su(guarded_stream(requests), context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            def stream_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                return inner_ss(guarded_stream(requests), context)

            return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)
        return handler
