"""Tests of Ed25519 keys, fingerprints and domain-separated signatures."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from allmende.protocol.errors import IntegrityError, InvalidArgument
from allmende.protocol.signing import (
    CTX_MANIFEST,
    CTX_REGISTER,
    CTX_RESULT,
    CTX_WORK_UNIT,
    SigningKey,
    fingerprint,
    normalise_fingerprint,
    verify,
    verify_pinned,
)

CONTEXTS = [CTX_WORK_UNIT, CTX_RESULT, CTX_MANIFEST, CTX_REGISTER]


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def test_fingerprint_is_sha256_of_raw_public_key(key: SigningKey) -> None:
    assert len(key.public_key) == 32
    assert key.fingerprint == hashlib.sha256(key.public_key).hexdigest()
    assert fingerprint(key.public_key) == key.fingerprint


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_fingerprint_refuses_wrong_key_length(size: int) -> None:
    with pytest.raises(InvalidArgument) as err:
        fingerprint(b"\x01" * size)
    assert err.value.field == "public_key"
    assert str(size) in err.value.message


def test_normalise_fingerprint_accepts_common_spellings(key: SigningKey) -> None:
    fp = key.fingerprint
    colons = ":".join(fp[i : i + 2] for i in range(0, 64, 2)).upper()
    spaced = " ".join(fp[i : i + 4] for i in range(0, 64, 4))
    for text in (fp, fp.upper(), f"sha256:{fp}", f"  {fp}\n", colons, spaced,
                 f"SHA256:{colons}"):
        assert normalise_fingerprint(text) == fp, text


@pytest.mark.parametrize(
    "text",
    ["", "abc", "g" * 64, "a" * 63, "a" * 65, "sha1:" + "a" * 64, "0x" + "a" * 62],
)
def test_normalise_fingerprint_refuses_non_fingerprints(text: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        normalise_fingerprint(text)
    assert err.value.field == "fingerprint"


def test_signature_verifies_for_its_context_and_payload(key: SigningKey) -> None:
    payload = b"some exact bytes \x00\xff"
    for ctx in CONTEXTS:
        verify(key.public_key, ctx, payload, key.sign(ctx, payload))


@pytest.mark.parametrize("signed_ctx", CONTEXTS)
def test_signature_for_one_context_fails_under_every_other(
    key: SigningKey, signed_ctx: bytes
) -> None:
    payload = b"payload"
    signature = key.sign(signed_ctx, payload)
    for other in CONTEXTS:
        if other == signed_ctx:
            continue
        with pytest.raises(IntegrityError) as err:
            verify(key.public_key, other, payload, signature)
        assert other.decode() in err.value.message


def test_contexts_are_distinct_and_unambiguous() -> None:
    # The signed message is context + NUL + payload; a NUL inside a label would let one
    # (context, payload) pair pose as another.
    assert len(set(CONTEXTS)) == len(CONTEXTS)
    assert all(b"\x00" not in ctx for ctx in CONTEXTS)


def test_tampered_payload_or_signature_fails(key: SigningKey) -> None:
    payload = b"hello world"
    signature = key.sign(CTX_RESULT, payload)
    with pytest.raises(IntegrityError):
        verify(key.public_key, CTX_RESULT, b"hello worle", signature)
    bad = bytes([signature[0] ^ 1]) + signature[1:]
    with pytest.raises(IntegrityError):
        verify(key.public_key, CTX_RESULT, payload, bad)


def test_wrong_key_fails(key: SigningKey) -> None:
    other = SigningKey.generate()
    signature = key.sign(CTX_WORK_UNIT, b"unit")
    with pytest.raises(IntegrityError):
        verify(other.public_key, CTX_WORK_UNIT, b"unit", signature)


@pytest.mark.parametrize(("key_len", "sig_len"), [(31, 64), (33, 64), (32, 63), (32, 65), (32, 0)])
def test_verify_refuses_malformed_sizes(key: SigningKey, key_len: int, sig_len: int) -> None:
    signature = key.sign(CTX_RESULT, b"p")
    public = (key.public_key + b"\x00")[:key_len]
    sig = (signature + b"\x00")[:sig_len]
    with pytest.raises(IntegrityError):
        verify(public, CTX_RESULT, b"p", sig)


def test_verify_pinned_checks_fingerprint_then_signature(key: SigningKey) -> None:
    signature = key.sign(CTX_MANIFEST, b"m")
    verify_pinned(key.public_key, key.fingerprint, CTX_MANIFEST, b"m", signature)

    impostor = SigningKey.generate()
    forged = impostor.sign(CTX_MANIFEST, b"m")
    with pytest.raises(IntegrityError) as err:
        verify_pinned(impostor.public_key, key.fingerprint, CTX_MANIFEST, b"m", forged)
    assert key.fingerprint in err.value.message
    assert impostor.fingerprint in err.value.message

    with pytest.raises(IntegrityError):
        verify_pinned(key.public_key, key.fingerprint, CTX_MANIFEST, b"n", signature)


def test_pem_round_trip_keeps_the_key(key: SigningKey) -> None:
    again = SigningKey.from_pem(key.to_pem())
    assert again.public_key == key.public_key
    assert again.fingerprint == key.fingerprint
    verify(key.public_key, CTX_RESULT, b"x", again.sign(CTX_RESULT, b"x"))


def test_from_pem_refuses_a_non_ed25519_key() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(InvalidArgument) as err:
        SigningKey.from_pem(pem)
    assert err.value.field == "key file"


def test_saved_key_is_owner_only(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "deep" / "keys" / "coordinator.pem"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKey.load(path).fingerprint == key.fingerprint


def test_save_never_overwrites_an_existing_key(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "key.pem"
    key.save(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        SigningKey.generate().save(path)
    assert path.read_bytes() == before


def test_load_or_create_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "volunteer" / "key.pem"
    first = SigningKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_bytes()
    second = SigningKey.load_or_create(path)
    assert second.fingerprint == first.fingerprint
    assert path.read_bytes() == content
    assert SigningKey.load_or_create(tmp_path / "other.pem").fingerprint != first.fingerprint
