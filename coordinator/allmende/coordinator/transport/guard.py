"""A server interceptor that looks at a request's bytes before anything parses them.

- Each method has a size limit (protocol/limits.py): a larger request is refused with
  RESOURCE_EXHAUSTED naming the limit, unparsed. grpc's own limit (16 MiB, for uploads) is
  the same for every method; a volunteer's calls need far less.
- Repeated fields that are cheap to send and dear to parse (SubmitResults.results) are
  counted on the raw bytes (protocol/prescan.py): too many is INVALID_ARGUMENT, unparsed.
- Unparseable bytes become INVALID_ARGUMENT. Left alone, grpc answers a request it cannot
  deserialise with INTERNAL, which says "our fault" and invites retries; the fault is the
  sender's.

The deserializer never raises: it hands the handler a small `_Refused` (holding no request
bytes) and the handler aborts with its status, so a refused request is garbage as soon as
the deserializer returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

from allmende.coordinator.memory import note_request
from allmende.protocol.errors import InvalidArgument, ResourceExhausted
from allmende.protocol.limits import REQUEST_COUNTS, request_limit
from allmende.protocol.prescan import TooMany, check_count


class _Refused:
    """Why a request was refused before it was parsed: RESOURCE_EXHAUSTED with `details`, or
    INVALID_ARGUMENT naming `field` and what was expected of it."""

    def __init__(self, details: str = "", field: str = "", expected: str = "") -> None:
        self.field = field
        self.expected = expected
        self.details = details or f"{field}: expected {expected}"
        self.code = (
            grpc.StatusCode.INVALID_ARGUMENT if field else grpc.StatusCode.RESOURCE_EXHAUSTED
        )

    def error(self) -> Exception:
        """A new exception each time: one kept here would keep its traceback alive."""
        if self.field:
            return InvalidArgument(self.field, self.expected)
        return ResourceExhausted(self.details)


def _name(method: str) -> str:
    return method.rsplit("/", 1)[-1]


def refusal(method: str, data: bytes) -> _Refused | None:
    """Why the raw request `data` for `method` is refused before parsing, or None."""
    limit = request_limit(method)
    if len(data) > limit:
        return _Refused(
            f"request: at most {limit} bytes for {_name(method)} (this method's message "
            f"limit), got {len(data)}",
        )
    counted = REQUEST_COUNTS.get(method)
    if counted is not None:
        field, number, most = counted
        try:
            check_count(data, number, most)
        except TooMany as exc:
            expected = f"1 to {most} {field} in {_name(method)}, got {exc}"
            return _Refused(field=field, expected=expected)
    return None


def guarded_deserializer(
    method: str, deserializer: Callable[[bytes], Any] | None
) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    expected = f"a serialised protobuf message for {_name(method)}"

    def parse(data: bytes) -> Any:
        note_request(len(data))
        refused = refusal(method, data)
        if refused is not None:
            return refused
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf raises DecodeError and friends
            return _Refused(field="request", expected=f"{expected} ({str(exc)[:200]})")

    return parse


class ParseGuardInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None:
            return handler
        method = details.method

        def check(request: Any, context: grpc.ServicerContext) -> None:
            if isinstance(request, _Refused):
                context.abort(request.code, request.details)

        def guarded_stream(requests: Iterator[Any]) -> Iterator[Any]:
            for request in requests:
                if isinstance(request, _Refused):
                    raise request.error()
                yield request

        kwargs = {
            "request_deserializer": guarded_deserializer(method, handler.request_deserializer),
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
