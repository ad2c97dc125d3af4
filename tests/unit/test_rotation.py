"""Key rotation chains: signing, following from a pin, storing; hostile chains refused."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allmende.protocol.errors import IntegrityError, InvalidArgument
from allmende.protocol.rotation import (
    CHAIN_FORMAT,
    MAX_CHAIN_FILE_BYTES,
    MAX_CHAIN_LINKS,
    chain_until,
    decode_chain,
    encode_chain,
    follow_chain,
    load_chain,
    parse_rotation,
    save_chain,
    sign_rotation,
    verify_chain,
)
from allmende.protocol.signing import CTX_KEY_ROTATION, CTX_MANIFEST, SigningKey
from allmende.v1 import allmende_pb2 as pb

NOW = 1_700_000_000_000


def rotations(count: int) -> tuple[list[SigningKey], list[tuple[bytes, bytes]]]:
    """`count` + 1 keys and the chain rotating from each to the next."""
    keys = [SigningKey.generate() for _ in range(count + 1)]
    chain = [
        sign_rotation(old, new.public_key, f"rotation {n}", NOW + n)
        for n, (old, new) in enumerate(itertools.pairwise(keys))
    ]
    return keys, chain


def test_a_rotation_records_both_keys_and_is_signed_by_the_old_one() -> None:
    (a, b), chain = rotations(1)
    rotation, _ = chain[0]
    parsed = parse_rotation(rotation)
    assert (parsed.old_public_key, parsed.new_public_key) == (a.public_key, b.public_key)
    assert (parsed.created_ms, parsed.reason) == (NOW, "rotation 0")


def test_sign_rotation_refuses_bad_arguments() -> None:
    key = SigningKey.generate()
    with pytest.raises(InvalidArgument, match="new_public_key"):
        sign_rotation(key, key.public_key, "", NOW)
    with pytest.raises(InvalidArgument, match="32 bytes"):
        sign_rotation(key, b"\x01" * 31, "", NOW)
    with pytest.raises(InvalidArgument, match="reason"):
        sign_rotation(key, SigningKey.generate().public_key, "x" * 1000, NOW)


def test_two_rotations_lead_from_the_first_key_to_the_current_one() -> None:
    keys, chain = rotations(2)
    assert follow_chain(keys[0].fingerprint, chain, keys[2].public_key) == keys[2].public_key
    verify_chain(chain, keys[2].public_key)


def test_a_pin_in_the_middle_of_the_chain_starts_there() -> None:
    keys, chain = rotations(3)
    assert follow_chain(keys[2].fingerprint, chain, keys[3].public_key) == keys[3].public_key


def test_a_pin_of_the_current_key_needs_no_chain() -> None:
    keys, chain = rotations(2)
    assert follow_chain(keys[2].fingerprint, chain, keys[2].public_key) == keys[2].public_key
    assert follow_chain(keys[2].fingerprint, [], keys[2].public_key) == keys[2].public_key


def test_an_empty_chain_does_not_lead_from_another_pin() -> None:
    keys, _ = rotations(1)
    with pytest.raises(IntegrityError, match="no rotation"):
        follow_chain(keys[0].fingerprint, [], keys[1].public_key)


def test_a_pin_the_chain_never_mentions_is_refused() -> None:
    keys, chain = rotations(2)
    stranger = SigningKey.generate()
    with pytest.raises(IntegrityError, match="starts from the pinned key"):
        follow_chain(stranger.fingerprint, chain, keys[2].public_key)


def test_a_broken_signature_names_its_link() -> None:
    keys, chain = rotations(2)
    rotation, signature = chain[1]
    chain[1] = (rotation, bytes([signature[0] ^ 1]) + signature[1:])
    with pytest.raises(IntegrityError, match="link 2: not signed by the key it retires"):
        follow_chain(keys[0].fingerprint, chain, keys[2].public_key)


def test_a_rotation_signed_by_an_unrelated_key_is_refused() -> None:
    keys, chain = rotations(1)
    attacker = SigningKey.generate()
    forged = pb.KeyRotation(
        old_public_key=keys[1].public_key,
        new_public_key=attacker.public_key,
        created_unix_ms=NOW,
        reason="forged",
    ).SerializeToString()
    chain.append((forged, attacker.sign(CTX_KEY_ROTATION, forged)))
    with pytest.raises(IntegrityError, match="link 2"):
        follow_chain(keys[0].fingerprint, chain, attacker.public_key)


def test_a_signature_made_for_another_purpose_is_refused() -> None:
    keys, chain = rotations(1)
    rotation, _ = chain[0]
    chain[0] = (rotation, keys[0].sign(CTX_MANIFEST, rotation))
    with pytest.raises(IntegrityError, match="link 1"):
        follow_chain(keys[0].fingerprint, chain, keys[1].public_key)


def test_links_out_of_order_are_refused() -> None:
    keys, chain = rotations(2)
    with pytest.raises(IntegrityError, match="out of order"):
        follow_chain(keys[0].fingerprint, [chain[0], chain[0], chain[1]], keys[2].public_key)
    with pytest.raises(IntegrityError):
        follow_chain(keys[0].fingerprint, [chain[1], chain[0]], keys[2].public_key)


def test_a_chain_ending_elsewhere_is_refused() -> None:
    keys, chain = rotations(2)
    with pytest.raises(IntegrityError, match="ends at"):
        follow_chain(keys[0].fingerprint, chain[:1], keys[2].public_key)
    with pytest.raises(IntegrityError, match="ends at"):
        follow_chain(keys[0].fingerprint, chain, SigningKey.generate().public_key)


def test_a_chain_returning_to_a_retired_key_is_refused() -> None:
    keys, chain = rotations(1)
    back = sign_rotation(keys[1], keys[0].public_key, "back", NOW)
    onward = SigningKey.generate()
    chain += [back, sign_rotation(keys[0], onward.public_key, "again", NOW)]
    with pytest.raises(IntegrityError, match="already retired"):
        follow_chain(keys[0].fingerprint, chain, onward.public_key)


def test_verify_chain_checks_the_whole_chain() -> None:
    keys, chain = rotations(2)
    verify_chain([], keys[0].public_key)
    with pytest.raises(IntegrityError, match="ends at"):
        verify_chain(chain, keys[1].public_key)
    with pytest.raises(IntegrityError, match="starts at the current key"):
        verify_chain(chain, keys[0].public_key)


def test_malformed_links_are_integrity_errors() -> None:
    keys, chain = rotations(1)
    for rotation in (b"\xff\xff\xff", pb.KeyRotation(old_public_key=b"short").SerializeToString()):
        with pytest.raises(IntegrityError, match="link 1"):
            follow_chain(keys[0].fingerprint, [(rotation, chain[0][1])], keys[1].public_key)
    with pytest.raises(IntegrityError, match="signature must be 64 bytes"):
        follow_chain(keys[0].fingerprint, [(chain[0][0], b"\x00" * 3)], keys[1].public_key)
    with pytest.raises(IntegrityError, match="32 bytes"):
        follow_chain(keys[0].fingerprint, chain, b"\x00" * 5)
    with pytest.raises(IntegrityError, match="at most"):
        follow_chain(keys[0].fingerprint, chain * (MAX_CHAIN_LINKS + 1), keys[1].public_key)


def test_chain_until_cuts_at_the_key() -> None:
    keys, chain = rotations(3)
    assert chain_until(chain, keys[1].public_key) == chain[:1]
    assert chain_until(chain, keys[3].public_key) == chain
    assert chain_until(chain, keys[0].public_key) == []


def test_the_chain_file_round_trips(tmp_path: Path) -> None:
    _, chain = rotations(2)
    path = tmp_path / "key-chain.json"
    assert load_chain(path) == []  # no file: no rotation yet
    save_chain(path, chain)
    assert load_chain(path) == chain
    assert decode_chain(encode_chain(chain)) == chain
    assert json.loads(path.read_bytes())["format"] == CHAIN_FORMAT


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"format": "other", "links": []}',
        json.dumps({"format": CHAIN_FORMAT}).encode(),
        json.dumps({"format": CHAIN_FORMAT, "links": {}}).encode(),
        json.dumps({"format": CHAIN_FORMAT, "links": [1]}).encode(),
        json.dumps({"format": CHAIN_FORMAT, "links": [{"rotation": "!!"}]}).encode(),
        json.dumps({"format": CHAIN_FORMAT, "links": [{"rotation": "", "signature": ""}]}).encode(),
        json.dumps(
            {"format": CHAIN_FORMAT, "links": [{"rotation": "AAAA", "signature": "AAAA"}]}
        ).encode(),
        json.dumps(
            {
                "format": CHAIN_FORMAT,
                "links": [
                    {"rotation": "/w==", "signature": base64.b64encode(b"\x00" * 64).decode()}
                ],
            }
        ).encode(),
        b"[" * 100_000,
        b" " * (MAX_CHAIN_FILE_BYTES + 1),
    ],
)
def test_malformed_chain_files_are_integrity_errors(data: bytes) -> None:
    with pytest.raises(IntegrityError):
        decode_chain(data)


def test_a_chain_file_with_too_many_links_is_refused() -> None:
    _, chain = rotations(1)
    with pytest.raises(IntegrityError, match="at most"):
        decode_chain(encode_chain(chain * (MAX_CHAIN_LINKS + 1)))


def test_an_oversized_chain_file_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "key-chain.json"
    path.write_bytes(b" " * (MAX_CHAIN_FILE_BYTES * 4))
    with pytest.raises(IntegrityError, match="larger than"):
        load_chain(path)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_the_chain_loader_with_bytes(data: bytes) -> None:
    with contextlib.suppress(IntegrityError):
        decode_chain(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"rotation": st.binary(max_size=200), "signature": st.binary(max_size=80)}
        ).map(lambda d: {k: base64.b64encode(v).decode() for k, v in d.items()})
        | _json,
        max_size=5,
    )
)
def test_fuzz_the_chain_loader_with_documents(links: list[object]) -> None:
    keys = [SigningKey.generate()]
    try:
        chain = decode_chain(json.dumps({"format": CHAIN_FORMAT, "links": links}).encode())
    except IntegrityError:
        return
    with pytest.raises(IntegrityError):  # random links never lead to a real key
        follow_chain(keys[0].fingerprint, chain, SigningKey.generate().public_key)


# ------------------------------------------------------------------ manifests across rotations


def signed_manifest(signer: SigningKey) -> tuple[bytes, bytes]:
    from allmende.protocol.manifest import FORMAT, encode_manifest, merkle_root, sign_manifest

    data = encode_manifest(
        {
            "format": FORMAT,
            "job": {"id": "job-1"},
            "rows": 0,
            "shards": [],
            "merkle_root": merkle_root([]),
            "coordinator_fingerprint": signer.fingerprint,
        }
    )
    return data, sign_manifest(signer, data)


def test_a_manifest_of_a_rotated_key_verifies_through_the_chain() -> None:
    from allmende.protocol.manifest import verify_manifest

    keys, chain = rotations(2)
    data, sig = signed_manifest(keys[2])
    assert verify_manifest(data, sig, keys[0].fingerprint, chain).fingerprint == keys[2].fingerprint
    assert verify_manifest(data, sig, keys[1].fingerprint, chain).fingerprint == keys[2].fingerprint
    assert verify_manifest(data, sig, keys[2].fingerprint).fingerprint == keys[2].fingerprint


def test_a_manifest_of_an_intermediate_key_verifies_with_a_longer_chain() -> None:
    from allmende.protocol.manifest import verify_manifest

    keys, chain = rotations(2)
    data, sig = signed_manifest(keys[1])  # written before the second rotation
    assert verify_manifest(data, sig, keys[0].fingerprint, chain).fingerprint == keys[1].fingerprint


def test_a_manifest_of_a_rotated_key_is_refused_without_a_valid_chain() -> None:
    from allmende.protocol.manifest import verify_manifest

    keys, chain = rotations(2)
    data, sig = signed_manifest(keys[2])
    with pytest.raises(IntegrityError, match=r"does not match the pinned.*no key chain"):
        verify_manifest(data, sig, keys[0].fingerprint)
    rotation, signature = chain[0]
    broken = [(rotation, bytes([signature[0] ^ 1]) + signature[1:]), chain[1]]
    with pytest.raises(IntegrityError, match="link 1"):
        verify_manifest(data, sig, keys[0].fingerprint, broken)
    with pytest.raises(IntegrityError, match="hands over to it"):
        verify_manifest(data, sig, keys[0].fingerprint, chain[:1])


def test_an_older_manifest_is_not_trusted_under_a_newer_pin() -> None:
    from allmende.protocol.manifest import verify_manifest

    keys, chain = rotations(1)
    data, sig = signed_manifest(keys[0])
    with pytest.raises(IntegrityError, match="does not match the pinned"):
        verify_manifest(data, sig, keys[1].fingerprint, chain)


def test_a_manifest_signed_by_a_forged_successor_is_refused() -> None:
    from allmende.protocol.manifest import verify_manifest

    keys, chain = rotations(1)
    attacker = SigningKey.generate()
    forged = sign_rotation(attacker, keys[1].public_key, "", NOW)
    forged_rotation = pb.KeyRotation(
        old_public_key=keys[0].public_key, new_public_key=attacker.public_key
    ).SerializeToString()
    data, sig = signed_manifest(attacker)
    for bad in (
        [(forged_rotation, attacker.sign(CTX_KEY_ROTATION, forged_rotation))],
        [chain[0], forged],
    ):
        with pytest.raises(IntegrityError):
            verify_manifest(data, sig, keys[0].fingerprint, bad)
