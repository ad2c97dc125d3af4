"""Signed volunteer requests: who sent this call, when, and that it is not a replay.

A volunteer signs every call after registration: the method, the sha256 of the request body
(deterministic protobuf serialisation), a timestamp and a random nonce, under the context
"allmende.v1/request". The coordinator checks the signature against the registered key,
refuses timestamps outside a window, and refuses a nonce it has already seen in that window.
Where it remembers nonces is its own affair (`NonceClaims`): the coordinator keeps them in
its store, so that a replay is refused after a restart and by every replica.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from google.protobuf.message import Message

from allmende.protocol.errors import IntegrityError, Unauthenticated
from allmende.protocol.signing import CTX_REQUEST, SigningKey, verify

KEY_HEADER = "x-allmende-volunteer"
TIME_HEADER = "x-allmende-time"
NONCE_HEADER = "x-allmende-nonce"
SIGNATURE_HEADER = "x-allmende-signature-bin"  # "-bin": gRPC carries it as bytes
# How far a request's clock may be from the coordinator's.
SKEW_MS = 120_000
NONCE_CHARS = 32

Metadata = list[tuple[str, str | bytes]]


def _digest(method: str, body: bytes, ts_ms: int, nonce: str) -> bytes:
    return b"\n".join(
        (method.encode(), hashlib.sha256(body).digest(), str(ts_ms).encode(), nonce.encode())
    )


def body_bytes(request: Message) -> bytes:
    return bytes(request.SerializeToString(deterministic=True))


def sign_request(
    key: SigningKey, method: str, request: Message, now_ms: int | None = None
) -> Metadata:
    """The metadata that authenticates one call of `method` with `request`."""
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    nonce = secrets.token_hex(NONCE_CHARS // 2)
    signature = key.sign(CTX_REQUEST, _digest(method, body_bytes(request), ts, nonce))
    return [
        (KEY_HEADER, key.fingerprint),
        (TIME_HEADER, str(ts)),
        (NONCE_HEADER, nonce),
        (SIGNATURE_HEADER, signature),
    ]


class NonceClaims(Protocol):
    def claim(self, key_id: str, nonce: str, ts_ms: int, now_ms: int) -> bool:
        """Record the nonce of a request signed at `ts_ms`; False when it was already used."""
        ...


class NonceWindow:
    """Nonces seen within the accepted clock window, per process; older ones are forgotten,
    since their timestamps would be refused anyway."""

    def __init__(self, window_ms: int = SKEW_MS) -> None:
        self.window_ms = window_ms
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._next_prune = 0

    def claim(self, key_id: str, nonce: str, ts_ms: int, now_ms: int) -> bool:
        """Record the nonce; False when it was already used."""
        token = f"{key_id}:{nonce}"
        with self._lock:
            if now_ms >= self._next_prune:
                cutoff = now_ms - 2 * self.window_ms
                self._seen = {k: t for k, t in self._seen.items() if t >= cutoff}
                self._next_prune = now_ms + self.window_ms // 4
            if token in self._seen:
                return False
            self._seen[token] = ts_ms
            return True


def check_request(
    metadata: Sequence[tuple[str, str | bytes]] | Mapping[str, str | bytes],
    method: str,
    request: Message,
    public_key_of: Callable[[str], bytes],
    nonces: NonceClaims,
    now_ms: int,
) -> str:
    """Verify a signed request; return the volunteer id, or raise Unauthenticated."""
    headers = dict(metadata.items() if isinstance(metadata, Mapping) else metadata)
    key_id = headers.get(KEY_HEADER)
    ts_text = headers.get(TIME_HEADER)
    nonce = headers.get(NONCE_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    if not (
        isinstance(key_id, str)
        and isinstance(ts_text, str)
        and isinstance(nonce, str)
        and isinstance(signature, bytes)
    ):
        raise Unauthenticated(
            f"request signature: expected {KEY_HEADER}, {TIME_HEADER}, {NONCE_HEADER} and "
            f"{SIGNATURE_HEADER} metadata (sign every call after RegisterVolunteer)"
        )
    if not ts_text.isdigit() or len(ts_text) > 16:
        raise Unauthenticated(f"{TIME_HEADER}: expected unix milliseconds, got {ts_text[:20]!r}")
    ts = int(ts_text)
    if abs(now_ms - ts) > SKEW_MS:
        raise Unauthenticated(
            f"{TIME_HEADER}: stale or future timestamp, {abs(now_ms - ts) // 1000} s from the "
            f"coordinator's clock (at most {SKEW_MS // 1000} s)"
        )
    if len(nonce) != NONCE_CHARS or any(c not in "0123456789abcdef" for c in nonce):
        raise Unauthenticated(f"{NONCE_HEADER}: expected {NONCE_CHARS} hex digits")
    public_key = public_key_of(key_id)
    try:
        verify(public_key, CTX_REQUEST, _digest(method, body_bytes(request), ts, nonce), signature)
    except IntegrityError:
        raise Unauthenticated(
            "request signature does not verify for this method and body"
        ) from None
    if not nonces.claim(key_id, nonce, ts, now_ms):
        raise Unauthenticated(f"{NONCE_HEADER}: replayed request (nonce already used)")
    return key_id
