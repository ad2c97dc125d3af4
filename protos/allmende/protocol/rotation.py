"""Coordinator key rotation: a new key is announced signed by the old one.

A rotation is a serialised `KeyRotation` (old key, new key, time, reason) signed by the old
key under its own context label. The coordinator keeps every rotation since its first key,
oldest first, and serves that chain in GetCoordinatorInfo; a dataset folder carries it in
`key-chain.json`. Whoever pinned any key of the chain reaches the current key by checking
each link with the key before it, and trusts nothing else: `follow_chain` is that walk.

A chain is untrusted input from the network or a file, so its size is capped and every
malformed chain is an IntegrityError, never a crash.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from allmende.protocol.errors import IntegrityError, InvalidArgument
from allmende.protocol.signing import (
    CTX_KEY_ROTATION,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    SigningKey,
    fingerprint,
    verify,
)
from allmende.v1 import allmende_pb2 as pb

CHAIN_NAME = "key-chain.json"
CHAIN_FORMAT = "allmende.key-chain/1"
# Far more rotations than a coordinator will ever make; bounds the work a hostile chain costs.
MAX_CHAIN_LINKS = 64
MAX_REASON_CHARS = 256
MAX_ROTATION_BYTES = 1024
MAX_CHAIN_FILE_BYTES = 256 * 1024

Chain = Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Rotation:
    """One parsed link of a chain. Parsing checks shapes only; `follow_chain` checks trust."""

    old_public_key: bytes
    new_public_key: bytes
    created_ms: int
    reason: str


def sign_rotation(
    old: SigningKey, new_public_key: bytes, reason: str, now_ms: int
) -> tuple[bytes, bytes]:
    """(serialised KeyRotation, the old key's signature over it)."""
    if len(new_public_key) != PUBLIC_KEY_BYTES:
        raise InvalidArgument("new_public_key", f"{PUBLIC_KEY_BYTES} bytes (raw Ed25519)")
    if new_public_key == old.public_key:
        raise InvalidArgument("new_public_key", "a key other than the one it replaces")
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidArgument("reason", f"at most {MAX_REASON_CHARS} characters")
    message = pb.KeyRotation(
        old_public_key=old.public_key,
        new_public_key=new_public_key,
        created_unix_ms=now_ms,
        reason=reason,
    )
    rotation = message.SerializeToString(deterministic=True)
    return rotation, old.sign(CTX_KEY_ROTATION, rotation)


def parse_rotation(rotation: bytes, number: int = 1) -> Rotation:
    """Parse link `number` (1-based, for messages) without checking its signature."""
    where = f"key chain link {number}"
    if len(rotation) > MAX_ROTATION_BYTES:
        raise IntegrityError(f"{where}: rotation is larger than {MAX_ROTATION_BYTES} bytes")
    message = pb.KeyRotation()
    try:
        message.ParseFromString(rotation)
    except DecodeError:
        raise IntegrityError(f"{where}: not a serialised KeyRotation") from None
    for name, key in (("old", message.old_public_key), ("new", message.new_public_key)):
        if len(key) != PUBLIC_KEY_BYTES:
            raise IntegrityError(f"{where}: {name} key must be {PUBLIC_KEY_BYTES} bytes")
    return Rotation(
        bytes(message.old_public_key),
        bytes(message.new_public_key),
        message.created_unix_ms,
        message.reason,
    )


def parse_chain(chain: Chain) -> list[Rotation]:
    if len(chain) > MAX_CHAIN_LINKS:
        raise IntegrityError(f"key chain has {len(chain)} links; at most {MAX_CHAIN_LINKS}")
    return [parse_rotation(rotation, n) for n, (rotation, _) in enumerate(chain, 1)]


def follow_chain(pinned_fingerprint: str, chain: Chain, current_public_key: bytes) -> bytes:
    """Walk from the pinned key to `current_public_key` and return it, or raise IntegrityError.

    The walk starts at the pinned key itself when it is the current key, else at the first
    link whose old key is the pinned one (a pin from the middle of the chain is fine). Each
    link from there on must be signed by the key before it and hand over from exactly that
    key; no link may return to a key already retired; the last must end at the current key.
    """
    if len(current_public_key) != PUBLIC_KEY_BYTES:
        raise IntegrityError(f"the coordinator's key must be {PUBLIC_KEY_BYTES} bytes")
    pinned = pinned_fingerprint.strip().lower()
    current_fp = fingerprint(current_public_key)
    if current_fp == pinned:
        return current_public_key
    links = parse_chain(chain)
    start = next(
        (i for i, link in enumerate(links) if fingerprint(link.old_public_key) == pinned), None
    )
    if start is None:
        raise IntegrityError(
            f"the coordinator's key {current_fp} is not the pinned {pinned}, and no rotation "
            f"in its key chain ({len(links)} link(s)) starts from the pinned key"
        )
    key = links[start].old_public_key
    seen = {key}
    for number in range(start + 1, len(links) + 1):
        link = links[number - 1]
        where = f"key chain link {number}"
        if link.old_public_key != key:
            raise IntegrityError(
                f"{where}: hands over from {fingerprint(link.old_public_key)[:16]}…, not from "
                f"{fingerprint(key)[:16]}…, the key the chain had reached (links out of order?)"
            )
        rotation, signature = chain[number - 1]
        if len(signature) != SIGNATURE_BYTES:
            raise IntegrityError(f"{where}: signature must be {SIGNATURE_BYTES} bytes")
        try:
            verify(key, CTX_KEY_ROTATION, rotation, signature)
        except IntegrityError:
            raise IntegrityError(
                f"{where}: not signed by the key it retires ({fingerprint(key)[:16]}…)"
            ) from None
        if link.new_public_key in seen:
            raise IntegrityError(f"{where}: rotates back to a key already retired")
        key = link.new_public_key
        seen.add(key)
    if key != current_public_key:
        raise IntegrityError(
            f"the key chain ends at {fingerprint(key)[:16]}…, not at the coordinator's key "
            f"{current_fp[:16]}…"
        )
    return current_public_key


def verify_chain(chain: Chain, current_public_key: bytes) -> None:
    """Check a whole chain, from its first key, ends at `current_public_key` (how the
    coordinator checks its own chain before serving it)."""
    if not chain:
        return
    first = parse_rotation(chain[0][0]).old_public_key
    if first == current_public_key:
        raise IntegrityError("the key chain starts at the current key; it must end there")
    follow_chain(fingerprint(first), chain, current_public_key)


def chain_until(chain: Chain, public_key: bytes) -> list[tuple[bytes, bytes]]:
    """The chain up to the first link that hands over to `public_key`, or nothing when no
    link does: what vouches for a key that may since have been rotated away, such as the
    key that signed an older dataset."""
    for number, link in enumerate(parse_chain(chain), 1):
        if link.new_public_key == public_key:
            return list(chain[:number])
    return []


def encode_chain(chain: Chain) -> bytes:
    """The `key-chain.json` bytes: the links, base64, oldest first."""
    document = {
        "format": CHAIN_FORMAT,
        "links": [
            {
                "rotation": base64.b64encode(rotation).decode(),
                "signature": base64.b64encode(signature).decode(),
            }
            for rotation, signature in chain
        ],
    }
    return (json.dumps(document, sort_keys=True, indent=2) + "\n").encode()


def decode_chain(data: bytes) -> list[tuple[bytes, bytes]]:
    """Parse `key-chain.json` bytes; shapes and sizes only (follow_chain checks trust)."""
    if len(data) > MAX_CHAIN_FILE_BYTES:
        raise IntegrityError(f"{CHAIN_NAME} is larger than {MAX_CHAIN_FILE_BYTES} bytes")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise IntegrityError(f"{CHAIN_NAME} is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != CHAIN_FORMAT:
        raise IntegrityError(f"{CHAIN_NAME}: format must be {CHAIN_FORMAT!r}")
    links = document.get("links")
    if not isinstance(links, list):
        raise IntegrityError(f"{CHAIN_NAME}: links must be a list")
    if len(links) > MAX_CHAIN_LINKS:
        raise IntegrityError(f"{CHAIN_NAME}: {len(links)} links; at most {MAX_CHAIN_LINKS}")
    chain = []
    for number, link in enumerate(links, 1):
        try:
            rotation = base64.b64decode(link["rotation"], validate=True)
            signature = base64.b64decode(link["signature"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise IntegrityError(
                f"{CHAIN_NAME}: link {number} needs base64 'rotation' and 'signature'"
            ) from None
        if len(signature) != SIGNATURE_BYTES:
            raise IntegrityError(
                f"{CHAIN_NAME}: link {number} signature must be {SIGNATURE_BYTES} bytes"
            )
        parse_rotation(rotation, number)
        chain.append((rotation, signature))
    return chain


def load_chain(path: Path) -> list[tuple[bytes, bytes]]:
    """The chain stored at `path`; none (empty) when the file does not exist."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CHAIN_FILE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise IntegrityError(f"{path}: cannot be read ({exc.strerror})") from None
    return decode_chain(data)


def save_chain(path: Path, chain: Chain) -> None:
    """Write the chain atomically: a temporary file, flushed to disk, renamed into place."""
    data = encode_chain(chain)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
