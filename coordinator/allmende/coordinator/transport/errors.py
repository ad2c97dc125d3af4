"""The one table from domain errors to gRPC status codes, and the wrapper that applies it.

Anything not in the catalogue becomes a plain INTERNAL with no internals in the message;
the details go to the coordinator's log.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from allmende.protocol import errors

log = logging.getLogger("allmende.coordinator.transport")

STATUS: dict[type[errors.AllmendeError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.IntegrityError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}

F = TypeVar("F", bound=Callable[..., Any])
# Status details travel in HTTP/2 trailers; keep them well under any header limit.
MAX_DETAILS = 1000


def _abort(
    context: grpc.ServicerContext, exc: BaseException, method: str, servicer: Any = None
) -> NoReturn:
    if isinstance(exc, errors.AllmendeError):
        code = STATUS.get(type(exc), grpc.StatusCode.INTERNAL)
        metrics = getattr(servicer, "metrics", None)
        if metrics is not None:
            metrics.rejected_requests.labels(method, code.name).inc()
        log.info("rpc=%s status=%s message=%s", method, code.name, exc.message)
        context.abort(code, exc.message[:MAX_DETAILS])
        raise AssertionError("context.abort always raises")  # pragma: no cover
    if isinstance(exc, grpc.RpcError):  # the client cancelled or its stream broke
        log.info("rpc=%s client stream ended early: %s", method, exc)
        context.abort(grpc.StatusCode.CANCELLED, "the request stream ended early")
        raise AssertionError("context.abort always raises")  # pragma: no cover
    log.exception("rpc=%s unexpected error", method)
    context.abort(grpc.StatusCode.INTERNAL, "internal error; see the coordinator's log")
    raise AssertionError("context.abort always raises")  # pragma: no cover


def unary(method: F) -> F:
    """Wrap a unary (or stream-in, unary-out) servicer method."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:  # servicers never call context.abort themselves
            _abort(context, exc, method.__name__, self)

    return wrapper  # type: ignore[return-value]


def streaming(method: F) -> F:
    """Wrap a servicer method that yields its responses."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except Exception as exc:
            _abort(context, exc, method.__name__, self)

    return wrapper  # type: ignore[return-value]
