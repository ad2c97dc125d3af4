"""Ed25519 keys, fingerprints and domain-separated signatures.

Every signature covers a context label and the exact bytes that travel, so a signature made
for one purpose (a work unit) can never be replayed as another (a result or a manifest).
Fingerprints are the sha256 of the raw 32-byte public key, written as 64 hex digits.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from allmende.protocol.errors import IntegrityError, InvalidArgument

# Context labels: one per kind of signed object.
CTX_WORK_UNIT = b"allmende.v1/work-unit"
CTX_RESULT = b"allmende.v1/result"
CTX_MANIFEST = b"allmende.v1/dataset-manifest"
CTX_REGISTER = b"allmende.v1/register"
CTX_REQUEST = b"allmende.v1/request"
CTX_TLS = b"allmende.v1/tls-certificate"
CTX_KEY_ROTATION = b"allmende.v1/key-rotation"
CTX_MODEL_MANIFEST = b"allmende.v1/model-manifest"

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def fingerprint(public_key: bytes) -> str:
    """The fingerprint people compare and pin: sha256 of the raw public key, hex."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidArgument("public_key", f"{PUBLIC_KEY_BYTES} bytes, got {len(public_key)}")
    return hashlib.sha256(public_key).hexdigest()


def normalise_fingerprint(text: str) -> str:
    """Accept a fingerprint with optional colons, spaces or a 'sha256:' prefix."""
    cleaned = text.strip().lower().removeprefix("sha256:").replace(":", "").replace(" ", "")
    if len(cleaned) != 64 or any(c not in "0123456789abcdef" for c in cleaned):
        raise InvalidArgument(
            "fingerprint", f"64 hex digits (sha256 of a public key), got {text!r}"
        )
    return cleaned


def _message(context: bytes, payload: bytes) -> bytes:
    return context + b"\x00" + payload


class SigningKey:
    """A private Ed25519 key with its public half."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key: bytes = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.fingerprint = fingerprint(self.public_key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    def sign(self, context: bytes, payload: bytes) -> bytes:
        return self._key.sign(_message(context, payload))

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidArgument("key file", "an Ed25519 private key in PEM (PKCS#8)")
        return cls(key)

    def save(self, path: Path) -> None:
        """Write the key readable by its owner only (mode 0600), never world-readable."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.to_pem())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        return cls.from_pem(path.read_bytes())

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        key.save(path)
        return key


# Loading a public key costs about as much as checking a signature with it, and a coordinator
# checks the same volunteers' keys on every call.
_public_key = functools.lru_cache(maxsize=8192)(Ed25519PublicKey.from_public_bytes)


def verify(public_key: bytes, context: bytes, payload: bytes, signature: bytes) -> None:
    """Raise IntegrityError unless `signature` signs `payload` under `context`."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise IntegrityError(f"public key must be {PUBLIC_KEY_BYTES} bytes, got {len(public_key)}")
    if len(signature) != SIGNATURE_BYTES:
        raise IntegrityError(f"signature must be {SIGNATURE_BYTES} bytes, got {len(signature)}")
    try:
        _public_key(public_key).verify(signature, _message(context, payload))
    except InvalidSignature:
        label = context.decode("ascii", "replace")
        raise IntegrityError(f"bad signature on {label}") from None


def verify_pinned(
    public_key: bytes, pinned_fingerprint: str, context: bytes, payload: bytes, signature: bytes
) -> None:
    """Verify a signature made by the key whose fingerprint was pinned out of band."""
    actual = fingerprint(public_key)
    if actual != pinned_fingerprint:
        raise IntegrityError(
            f"signing key fingerprint {actual} does not match the pinned {pinned_fingerprint}"
        )
    verify(public_key, context, payload, signature)
