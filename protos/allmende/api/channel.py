"""A channel to one coordinator, and what a failed call on it means.

`Connection` opens its gRPC channel on first use: TLS when the coordinator offers it (the
certificate is then pinned through the coordinator key, see protocol/tls.py), plaintext only
to a loopback address or with `insecure`. Failures become `RemoteError`, which says whether
retrying may help (UNAVAILABLE) or not (everything else: a refused request stays refused).
Every call has a deadline.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Self, TypeVar

import grpc

from allmende.protocol.limits import MAX_MESSAGE_BYTES
from allmende.protocol.tls import cert_sha256, fetch_certificate, is_loopback, server_name
from allmende.v1 import allmende_pb2_grpc as rpc

DEFAULT_TIMEOUT_S = 30.0
UPLOAD_TIMEOUT_S = 600.0
TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

T = TypeVar("T")


class RemoteError(Exception):
    """A call to the coordinator failed; `transient` says whether a retry may succeed."""

    def __init__(self, code: str, details: str, transient: bool) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details
        self.transient = transient


def remote_call(fn: Callable[[], T]) -> T:
    """`fn()`, with a gRPC failure raised as `RemoteError`."""
    try:
        return fn()
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = (exc.details() if hasattr(exc, "details") else "") or str(code)
        # A coordinator's rate limit (RESOURCE_EXHAUSTED, "... retry in N s") passes with
        # time; other RESOURCE_EXHAUSTED answers (a message too large) do not.
        rate_limited = code == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry in" in details
        raise RemoteError(code.name, details, code in TRANSIENT or rate_limited) from None


def parse_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"--coordinator: expected HOST:PORT, got {address!r}")
    return address


class Connection:
    """One coordinator's address, the token its calls carry, and the channel to it."""

    def __init__(
        self,
        address: str,
        admin_token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        insecure: bool = False,
    ) -> None:
        self.address = parse_address(address)
        self.timeout_s = timeout_s
        self.insecure = insecure or os.environ.get("ALLMENDE_INSECURE") == "1"
        self._metadata: list[tuple[str, str]] = (
            [("authorization", f"Bearer {admin_token}")] if admin_token else []
        )
        self._channel: grpc.Channel | None = None
        self._stubs: dict[str, Any] = {}
        self._lock = threading.Lock()
        # sha256 of the TLS certificate this channel trusts; empty for plaintext.
        self.tls_cert_sha256 = b""

    @property
    def channel(self) -> grpc.Channel:
        with self._lock:
            if self._channel is None:
                self._channel = self._open()
            return self._channel

    def _open(self) -> grpc.Channel:
        host, _, port = self.address.rpartition(":")
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
        ]
        try:
            pem = fetch_certificate(host.strip("[]"), int(port), timeout_s=min(5.0, self.timeout_s))
        except OSError as exc:
            raise RemoteError("UNAVAILABLE", f"cannot reach {self.address}: {exc}", True) from None
        if pem is not None:
            self.tls_cert_sha256 = cert_sha256(pem)
            options.append(("grpc.ssl_target_name_override", server_name(pem)))
            credentials = grpc.ssl_channel_credentials(root_certificates=pem)
            return grpc.secure_channel(self.address, credentials, options=options)
        if not (is_loopback(host) or self.insecure):
            raise RemoteError(
                "FAILED_PRECONDITION",
                f"{self.address} does not offer TLS; use --insecure (or ALLMENDE_INSECURE=1) "
                "only on a network you trust",
                False,
            )
        return grpc.insecure_channel(self.address, options=options)

    def _stub(self, name: str, factory: Callable[[grpc.Channel], Any]) -> Any:
        stub = self._stubs.get(name)
        if stub is None:
            stub = self._stubs[name] = factory(self.channel)
        return stub

    @property
    def volunteers(self) -> rpc.VolunteerServiceStub:
        return self._stub("volunteers", rpc.VolunteerServiceStub)

    @property
    def jobs(self) -> rpc.JobServiceStub:
        return self._stub("jobs", rpc.JobServiceStub)

    @property
    def datasets(self) -> rpc.DatasetServiceStub:
        return self._stub("datasets", rpc.DatasetServiceStub)

    @property
    def models(self) -> rpc.ModelServiceStub:
        return self._stub("models", rpc.ModelServiceStub)

    @property
    def admin(self) -> rpc.AdminServiceStub:
        return self._stub("admin", rpc.AdminServiceStub)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        return remote_call(
            lambda: method(request, timeout=timeout or self.timeout_s, metadata=self._metadata)
        )
