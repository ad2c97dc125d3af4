"""The one table from domain errors to gRPC status codes, and the wrapper that applies it.

Anything not in the catalogue becomes a plain INTERNAL with no internals in the message;
the details go to the coordinator's log.

A refused request must cost nothing once it is answered. An exception keeps the frames it
passed through alive, and they keep the request; on grpc's asyncio server an aborted call
ends in a reference cycle that holds whatever the abort's exception chain reaches, until a
full garbage collection, which parsed protobuf messages (memory outside Python's objects)
do not trigger. So errors are mapped to a status inside the `except` block, `forget`
clears what the exception holds, and the call is aborted outside the block, after the
request is dropped.
"""

from __future__ import annotations

import functools
import logging
import traceback
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


Status = tuple[grpc.StatusCode, str]


def forget(exc: BaseException | None) -> None:
    """Let go of everything `exc` and the exceptions it was raised during hold: their
    tracebacks, and the local variables of the finished frames in them (which hold requests).
    Frames still running (the caller's) cannot be cleared and are left as they are."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__)
            exc.__traceback__ = None
        following = exc.__cause__ or exc.__context__
        exc.__cause__ = exc.__context__ = None
        exc = following


def status_of(exc: BaseException, method: str, servicer: Any = None) -> Status:
    """The status to answer `exc` with; logs it (with the traceback when unexpected) and
    counts refusals. Call it inside the `except` block, before `forget`."""
    if isinstance(exc, errors.AllmendeError):
        code = STATUS.get(type(exc), grpc.StatusCode.INTERNAL)
        metrics = getattr(servicer, "metrics", None)
        if metrics is not None:
            metrics.rejected_requests.labels(method, code.name).inc()
        log.info("rpc=%s status=%s message=%s", method, code.name, exc.message)
        return code, exc.message[:MAX_DETAILS]
    if isinstance(exc, grpc.RpcError):  # the client cancelled or its stream broke
        log.info("rpc=%s client stream ended early: %s", method, exc)
        return grpc.StatusCode.CANCELLED, "the request stream ended early"
    log.exception("rpc=%s unexpected error", method)
    return grpc.StatusCode.INTERNAL, "internal error; see the coordinator's log"


def abort(context: grpc.ServicerContext, status: Status) -> NoReturn:
    context.abort(*status)
    raise AssertionError("context.abort always raises")  # pragma: no cover


def unary(method: F) -> F:
    """Wrap a unary (or stream-in, unary-out) servicer method."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:  # servicers never call context.abort themselves
            status = status_of(exc, method.__name__, self)
            forget(exc)
        del request  # not kept alive by the abort's traceback, which includes this frame
        abort(context, status)

    return wrapper  # type: ignore[return-value]


def streaming(method: F) -> F:
    """Wrap a servicer method that yields its responses."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
            return
        except Exception as exc:
            status = status_of(exc, method.__name__, self)
            forget(exc)
        del request
        abort(context, status)

    return wrapper  # type: ignore[return-value]
