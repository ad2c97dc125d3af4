"""Tests of signed work units and result envelopes on the wire."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from allmende.protocol.errors import IntegrityError, InvalidArgument
from allmende.protocol.kinds.columns import Layout
from allmende.protocol.signing import CTX_RESULT, CTX_WORK_UNIT, SigningKey, verify
from allmende.protocol.wire import (
    CODEC,
    ResultEnvelope,
    WorkUnit,
    check_payload,
    decode_envelope,
    decode_unit,
    encode_envelope,
    encode_unit,
    open_unit,
    sign_envelope,
    sign_unit,
)

UNIT = WorkUnit(
    unit_id="job-abc-u000001", job_id="job-abc", kind="embed-text", model="all-MiniLM-L6-v2",
    model_sha256="ab" * 32, texts=("first text", "zweiter Satz ÄÖÜ", "", "🙂 emoji"),
    dims=384, result_dtype="float16", created_ms=1_700_000_000_123,
)

PAYLOAD = b"\x28\xb5\x2f\xfd compressed rows"

ENVELOPE = ResultEnvelope(
    unit_id=UNIT.unit_id, lease_id="lease-1", volunteer_id="v" * 64, rows=4,
    columns=(Layout("embedding", "float16", 384),), codec=CODEC,
    payload_sha256=hashlib.sha256(PAYLOAD).digest(),
    unit_sha256=hashlib.sha256(b"unit").digest(), model_sha256="ab" * 32, device="cpu",
    compute_ms=1234, created_ms=1_700_000_000_999,
)


@pytest.fixture(scope="module")
def coordinator_key() -> SigningKey:
    return SigningKey.generate()


def test_signed_unit_opens_to_the_same_values(coordinator_key: SigningKey) -> None:
    blob, signature = sign_unit(coordinator_key, UNIT)
    assert open_unit(blob, signature, coordinator_key.public_key) == UNIT


def test_unit_encoding_is_deterministic() -> None:
    assert encode_unit(UNIT) == encode_unit(dataclasses.replace(UNIT))
    assert decode_unit(encode_unit(UNIT)) == UNIT


def test_unit_signature_uses_the_work_unit_context(coordinator_key: SigningKey) -> None:
    blob, signature = sign_unit(coordinator_key, UNIT)
    verify(coordinator_key.public_key, CTX_WORK_UNIT, blob, signature)
    with pytest.raises(IntegrityError):
        verify(coordinator_key.public_key, CTX_RESULT, blob, signature)


def test_every_tampered_byte_of_a_unit_is_caught(coordinator_key: SigningKey) -> None:
    blob, signature = sign_unit(coordinator_key, UNIT)
    for i in range(len(blob)):
        tampered = blob[:i] + bytes([blob[i] ^ 0x01]) + blob[i + 1 :]
        with pytest.raises(IntegrityError):
            open_unit(tampered, signature, coordinator_key.public_key)


def test_appended_or_truncated_unit_is_caught(coordinator_key: SigningKey) -> None:
    blob, signature = sign_unit(coordinator_key, UNIT)
    with pytest.raises(IntegrityError):
        open_unit(blob + b"\x00", signature, coordinator_key.public_key)
    with pytest.raises(IntegrityError):
        open_unit(blob[:-1], signature, coordinator_key.public_key)


def test_unit_signed_by_another_key_is_refused(coordinator_key: SigningKey) -> None:
    attacker = SigningKey.generate()
    blob, signature = sign_unit(attacker, UNIT)
    with pytest.raises(IntegrityError):
        open_unit(blob, signature, coordinator_key.public_key)


def test_result_signature_cannot_pass_as_a_unit(coordinator_key: SigningKey) -> None:
    blob = encode_unit(UNIT)
    signature = coordinator_key.sign(CTX_RESULT, blob)
    with pytest.raises(IntegrityError):
        open_unit(blob, signature, coordinator_key.public_key)


def test_decode_unit_refuses_garbage() -> None:
    with pytest.raises(InvalidArgument) as err:
        decode_unit(b"\xff\xff\xff\xff")
    assert err.value.field == "unit"


def test_envelope_round_trip() -> None:
    blob = encode_envelope(ENVELOPE)
    assert blob == encode_envelope(dataclasses.replace(ENVELOPE))
    assert decode_envelope(blob) == ENVELOPE


def test_signed_envelope_verifies_under_the_result_context() -> None:
    volunteer = SigningKey.generate()
    blob, signature = sign_envelope(volunteer, ENVELOPE)
    verify(volunteer.public_key, CTX_RESULT, blob, signature)
    with pytest.raises(IntegrityError):
        verify(volunteer.public_key, CTX_WORK_UNIT, blob, signature)
    with pytest.raises(IntegrityError):
        verify(SigningKey.generate().public_key, CTX_RESULT, blob, signature)
    tampered = bytearray(blob)
    tampered[len(blob) // 2] ^= 0x40
    with pytest.raises(IntegrityError):
        verify(volunteer.public_key, CTX_RESULT, bytes(tampered), signature)


@pytest.mark.parametrize("field", ["unit_id", "lease_id", "volunteer_id"])
def test_envelope_refuses_empty_ids(field: str) -> None:
    blob = encode_envelope(dataclasses.replace(ENVELOPE, **{field: ""}))
    with pytest.raises(InvalidArgument) as err:
        decode_envelope(blob)
    assert err.value.field == f"envelope.{field}"


@pytest.mark.parametrize("codec", ["", "zstd", "shuffle+gzip"])
def test_envelope_refuses_unknown_codec(codec: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        decode_envelope(encode_envelope(dataclasses.replace(ENVELOPE, codec=codec)))
    assert err.value.field == "envelope.codec"


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_envelope_refuses_payload_hash_of_wrong_size(size: int) -> None:
    env = dataclasses.replace(ENVELOPE, payload_sha256=b"\x01" * size)
    with pytest.raises(InvalidArgument) as err:
        decode_envelope(encode_envelope(env))
    assert err.value.field == "envelope.payload_sha256"


def test_envelope_refuses_garbage() -> None:
    with pytest.raises(InvalidArgument) as err:
        decode_envelope(b"\x0a\xff\xff\xff\xff\xff")
    assert err.value.field == "envelope"


def test_check_payload_accepts_the_exact_bytes_only() -> None:
    check_payload(ENVELOPE, PAYLOAD)
    for bad in (PAYLOAD + b"\x00", PAYLOAD[:-1], b"", b"X" + PAYLOAD[1:]):
        with pytest.raises(IntegrityError):
            check_payload(ENVELOPE, bad)
