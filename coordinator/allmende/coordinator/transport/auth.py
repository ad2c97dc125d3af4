"""The server interceptor that authenticates volunteer calls (see protocol/requests.py).

LeaseWork, SubmitResult, SubmitResults, ReleaseWork, GetVerdicts and ListLeases must carry a
valid request signature by a registered, unbanned volunteer, and may only act for that
volunteer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from allmende.coordinator.domain.coordinator import Coordinator
from allmende.coordinator.domain.signers import signing_key
from allmende.coordinator.transport.errors import MAX_DETAILS, STATUS, abort, forget
from allmende.protocol.errors import (
    AllmendeError,
    InvalidArgument,
    PermissionDenied,
)
from allmende.protocol.requests import check_request
from allmende.protocol.wire import decode_envelope
from allmende.v1 import allmende_pb2 as pb

log = logging.getLogger("allmende.coordinator.auth")

SERVICE = "/allmende.v1.VolunteerService/"


def _claimed_volunteer(request: Any) -> str:
    """The volunteer a request says it acts for."""
    if isinstance(request, pb.SubmitResultRequest):
        try:
            return decode_envelope(request.envelope).volunteer_id
        except InvalidArgument:
            return ""  # the servicer reports the malformed envelope itself
    return str(getattr(request, "volunteer_id", ""))


class VolunteerAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    PROTECTED = frozenset(
        f"{SERVICE}{m}"
        for m in (
            "LeaseWork",
            "SubmitResult",
            "SubmitResults",
            "ReleaseWork",
            "GetVerdicts",
            "ListLeases",
        )
    )

    # Public keys remembered per process. A volunteer id is the fingerprint of its key, so
    # an entry never goes stale; bans and quarantines are checked by the domain on every
    # call, from the database, so they take effect at once on every replica.
    KEY_CACHE = 100_000

    def __init__(self, coordinator: Coordinator, metrics: Any = None) -> None:
        self.c = coordinator
        self.nonces = coordinator.nonces
        self.metrics = metrics
        self._keys: dict[str, bytes] = {}

    def _public_key(self, volunteer_id: str) -> bytes:
        key = self._keys.get(volunteer_id)
        if key is not None:
            return key
        key = signing_key(self.c, volunteer_id)
        if len(self._keys) >= self.KEY_CACHE:
            self._keys.clear()
        self._keys[volunteer_id] = key
        return key

    def check(self, method: str, request: Any, metadata: Any) -> None:
        key_id = check_request(
            metadata, method, request, self._public_key, self.nonces, self.c.clock()
        )
        claimed = _claimed_volunteer(request)
        if claimed and claimed != key_id:
            raise PermissionDenied(
                f"request signed by volunteer {key_id[:16]} acts for {claimed[:16]}"
            )

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        method = details.method
        if handler is None or method not in self.PROTECTED or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                self.check(method, request, context.invocation_metadata())
            except AllmendeError as exc:
                code = STATUS.get(type(exc), grpc.StatusCode.UNAUTHENTICATED)
                details = exc.message[:MAX_DETAILS]
                log.info("rpc=%s refused status=%s message=%s", method, code.name, details)
                if self.metrics is not None:
                    self.metrics.rejected_requests.labels(
                        method.rsplit("/", 1)[-1], code.name
                    ).inc()
                forget(exc)  # see errors.py: a refused request must not outlive its answer
            else:
                return inner(request, context)
            del request
            abort(context, (code, details))

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
