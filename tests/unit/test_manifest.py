"""Tests of dataset manifests: the Merkle root, signatures and verifying a real folder."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from allmende.protocol.errors import IntegrityError
from allmende.protocol.manifest import (
    ALLMENDE_DIR,
    CARD_PATH,
    DATA_DIR,
    FORMAT,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    encode_manifest,
    merkle_root,
    sha256_file,
    sign_manifest,
    verify_folder,
    verify_manifest,
    version_dir,
)
from allmende.protocol.signing import SigningKey


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf(hex_hash: str) -> bytes:
    return h(b"\x00" + bytes.fromhex(hex_hash))


def node(left: bytes, right: bytes) -> bytes:
    return h(b"\x01" + left + right)


HASHES = [hashlib.sha256(f"shard {i}".encode()).hexdigest() for i in range(5)]


# ------------------------------------------------------------------ merkle_root


def test_merkle_root_of_nothing_is_sha256_of_nothing() -> None:
    assert merkle_root([]) == hashlib.sha256(b"").hexdigest()


def test_merkle_root_of_one_leaf_is_the_domain_separated_leaf() -> None:
    assert merkle_root(HASHES[:1]) == leaf(HASHES[0]).hex()
    # and not the bare hash: a leaf cannot pose as a root
    assert merkle_root(HASHES[:1]) != HASHES[0]


def test_merkle_root_of_two_leaves() -> None:
    expected = node(leaf(HASHES[0]), leaf(HASHES[1]))
    assert merkle_root(HASHES[:2]) == expected.hex()


def test_merkle_root_of_three_leaves_carries_the_odd_one_up() -> None:
    l0, l1, l2 = (leaf(x) for x in HASHES[:3])
    assert merkle_root(HASHES[:3]) == node(node(l0, l1), l2).hex()


def test_merkle_root_of_four_and_five_leaves() -> None:
    l0, l1, l2, l3, l4 = (leaf(x) for x in HASHES)
    four = node(node(l0, l1), node(l2, l3))
    assert merkle_root(HASHES[:4]) == four.hex()
    assert merkle_root(HASHES) == node(four, l4).hex()


def test_merkle_root_depends_on_order() -> None:
    assert merkle_root(HASHES[:2]) != merkle_root(HASHES[1::-1])
    assert merkle_root(HASHES) != merkle_root([*HASHES[:3], HASHES[4], HASHES[3]])


def test_merkle_root_of_a_duplicated_last_leaf_differs() -> None:
    # Carrying an odd node up (instead of pairing it with itself) keeps [a, b, c] and
    # [a, b, c, c] apart.
    assert merkle_root(HASHES[:3]) != merkle_root([*HASHES[:3], HASHES[2]])


# ------------------------------------------------------------------ sign / verify manifest


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def test_encode_manifest_is_canonical() -> None:
    a = encode_manifest({"b": 1, "a": {"z": "ü", "y": [1, 2]}})
    b = encode_manifest({"a": {"y": [1, 2], "z": "ü"}, "b": 1})
    assert a == b
    assert a.endswith(b"\n")
    assert "ü".encode() in a


def small_manifest(fingerprint: str, shards: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    shards = shards if shards is not None else []
    return {
        "format": FORMAT, "job": {"id": "job-1"}, "rows": sum(s["rows"] for s in shards),
        "shards": shards, "merkle_root": merkle_root([s["sha256"] for s in shards]),
        "coordinator_fingerprint": fingerprint,
    }


def test_sign_and_verify_manifest(key: SigningKey) -> None:
    data = encode_manifest(small_manifest(key.fingerprint))
    sig = sign_manifest(key, data)
    document = json.loads(sig)
    assert document["fingerprint"] == key.fingerprint
    verified = verify_manifest(data, sig, key.fingerprint)
    assert verified.fingerprint == key.fingerprint
    assert verified.manifest["job"] == {"id": "job-1"}


def test_verify_manifest_refuses_another_pinned_key(key: SigningKey) -> None:
    data = encode_manifest(small_manifest(key.fingerprint))
    sig = sign_manifest(key, data)
    with pytest.raises(IntegrityError, match="pinned"):
        verify_manifest(data, sig, SigningKey.generate().fingerprint)


def test_verify_manifest_refuses_a_swapped_key_in_the_signature_file(key: SigningKey) -> None:
    # An attacker re-signs an edited manifest with their own key and ships their public key.
    attacker = SigningKey.generate()
    data = encode_manifest(small_manifest(key.fingerprint) | {"rows": 99})
    sig = sign_manifest(attacker, data)
    with pytest.raises(IntegrityError):
        verify_manifest(data, sig, key.fingerprint)


@pytest.mark.parametrize(
    "sig_bytes", [b"", b"not json", b"[]", b'{"public_key": "AAAA"}',
                  b'{"public_key": "!!", "signature": "AAAA"}',
                  b'{"public_key": "AAAA", "signature": "AAAA"}']
)
def test_verify_manifest_refuses_malformed_signature_files(
    key: SigningKey, sig_bytes: bytes
) -> None:
    data = encode_manifest(small_manifest(key.fingerprint))
    with pytest.raises(IntegrityError):
        verify_manifest(data, sig_bytes, key.fingerprint)


def test_verify_manifest_refuses_signed_manifest_naming_another_coordinator(
    key: SigningKey,
) -> None:
    data = encode_manifest(small_manifest("0" * 64))
    with pytest.raises(IntegrityError, match="another coordinator"):
        verify_manifest(data, sign_manifest(key, data), key.fingerprint)


def test_verify_manifest_refuses_wrong_format(key: SigningKey) -> None:
    data = encode_manifest(small_manifest(key.fingerprint) | {"format": "other/9"})
    with pytest.raises(IntegrityError, match="format"):
        verify_manifest(data, sign_manifest(key, data), key.fingerprint)


def test_verify_manifest_refuses_a_wrong_merkle_root(key: SigningKey) -> None:
    shards = [{"name": "a.parquet", "sha256": HASHES[0], "bytes": 1, "rows": 1}]
    data = encode_manifest(small_manifest(key.fingerprint, shards) | {"merkle_root": HASHES[1]})
    with pytest.raises(IntegrityError, match="merkle_root"):
        verify_manifest(data, sign_manifest(key, data), key.fingerprint)


@pytest.mark.parametrize(
    "name", ["../x.parquet", "sub/x.parquet", "..\\x.parquet", "/etc/x.parquet", ".x.parquet",
             "x.csv", "", None, 7]
)
def test_verify_manifest_refuses_unsafe_shard_names_even_when_signed(
    key: SigningKey, name: object
) -> None:
    shards = [{"name": name, "sha256": HASHES[0], "bytes": 1, "rows": 1}]
    data = encode_manifest(small_manifest(key.fingerprint, shards))
    with pytest.raises(IntegrityError, match="shards"):
        verify_manifest(data, sign_manifest(key, data), key.fingerprint)


def test_verify_manifest_reports_a_malformed_shard_hash_as_integrity_error(
    key: SigningKey,
) -> None:
    shards = [{"name": "a.parquet", "sha256": HASHES[0], "bytes": 1, "rows": 1}]
    manifest = small_manifest(key.fingerprint, shards)
    manifest["shards"][0]["sha256"] = "not hex"
    data = encode_manifest(manifest)
    with pytest.raises(IntegrityError):
        verify_manifest(data, sign_manifest(key, data), key.fingerprint)


# ------------------------------------------------------------------ verify_folder


def write_shard(path: Path, start: int, rows: int) -> dict[str, Any]:
    table = pa.table({
        "id": [str(i) for i in range(start, start + rows)],
        "text": [f"sentence number {i}" for i in range(start, start + rows)],
        "embedding": pa.array([[float(i), 0.5, -0.5] for i in range(start, start + rows)],
                              type=pa.list_(pa.float32(), 3)),
    })
    pq.write_table(table, path)
    return {"name": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "rows": rows}


def write_dataset(folder: Path, key: SigningKey) -> dict[str, Any]:
    (folder / DATA_DIR).mkdir(parents=True, exist_ok=True)
    shards = [
        write_shard(folder / DATA_DIR / "part-00000.parquet", 0, 5),
        write_shard(folder / DATA_DIR / "part-00001.parquet", 5, 3),
        write_shard(folder / DATA_DIR / "part-00002.parquet", 8, 4),
    ]
    manifest = small_manifest(key.fingerprint, shards)
    sign_folder(folder, key, manifest)
    return manifest


def sign_folder(folder: Path, key: SigningKey, manifest: dict[str, Any]) -> None:
    """Write the card, the manifest naming it, and the signature, as the coordinator does."""
    (folder / ALLMENDE_DIR).mkdir(parents=True, exist_ok=True)
    card = b"---\nlicense: unknown\n---\n# a card\n"
    (folder / CARD_PATH).write_bytes(card)
    manifest = manifest | {
        "card": {"path": CARD_PATH, "sha256": hashlib.sha256(card).hexdigest(),
                 "bytes": len(card)}
    }
    data = encode_manifest(manifest)
    (folder / ALLMENDE_DIR / MANIFEST_NAME).write_bytes(data)
    (folder / ALLMENDE_DIR / SIGNATURE_NAME).write_bytes(sign_manifest(key, data))


@pytest.fixture
def dataset(tmp_path: Path, key: SigningKey) -> Path:
    folder = tmp_path / "job-1"
    write_dataset(folder, key)
    return folder


def test_verify_folder_accepts_an_intact_dataset(dataset: Path, key: SigningKey) -> None:
    report = verify_folder(dataset, key.fingerprint)
    assert report.job_id == "job-1"
    assert report.rows == 12
    assert report.shards == 3
    assert report.bytes == sum(p.stat().st_size for p in dataset.glob("data/*.parquet"))
    manifest = json.loads((dataset / ALLMENDE_DIR / MANIFEST_NAME).read_bytes())
    assert report.merkle_root == manifest["merkle_root"]


def test_verify_folder_catches_a_changed_shard_byte(dataset: Path, key: SigningKey) -> None:
    path = dataset / DATA_DIR / "part-00001.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=re.escape("part-00001.parquet: sha256")):
        verify_folder(dataset, key.fingerprint)


def test_verify_folder_catches_a_resized_shard(dataset: Path, key: SigningKey) -> None:
    with (dataset / DATA_DIR / "part-00002.parquet").open("ab") as handle:
        handle.write(b"\x00")
    with pytest.raises(IntegrityError, match=re.escape("part-00002.parquet")):
        verify_folder(dataset, key.fingerprint)


def test_verify_folder_catches_a_missing_shard(dataset: Path, key: SigningKey) -> None:
    (dataset / DATA_DIR / "part-00000.parquet").unlink()
    with pytest.raises(IntegrityError, match=r"part-00000\.parquet is missing"):
        verify_folder(dataset, key.fingerprint)


def test_verify_folder_catches_an_extra_parquet_file(dataset: Path, key: SigningKey) -> None:
    write_shard(dataset / "sneaky.parquet", 100, 2)
    with pytest.raises(IntegrityError, match=re.escape("sneaky.parquet")):
        verify_folder(dataset, key.fingerprint)


def test_verify_folder_catches_a_wrong_fingerprint(dataset: Path, key: SigningKey) -> None:
    with pytest.raises(IntegrityError):
        verify_folder(dataset, SigningKey.generate().fingerprint)


def test_verify_folder_catches_an_edited_manifest(dataset: Path, key: SigningKey) -> None:
    path = dataset / ALLMENDE_DIR / MANIFEST_NAME
    path.write_bytes(path.read_bytes().replace(b'"rows": 12', b'"rows": 13'))
    with pytest.raises(IntegrityError, match="bad signature"):
        verify_folder(dataset, key.fingerprint)


def test_verify_folder_catches_a_missing_manifest_or_signature(
    dataset: Path, key: SigningKey
) -> None:
    (dataset / ALLMENDE_DIR / SIGNATURE_NAME).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        verify_folder(dataset, key.fingerprint)
    (dataset / ALLMENDE_DIR / MANIFEST_NAME).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        verify_folder(dataset, key.fingerprint)


def test_verify_folder_refuses_path_traversal_even_when_signed(
    tmp_path: Path, key: SigningKey
) -> None:
    folder = tmp_path / "ds"
    folder.mkdir()
    outside = write_shard(tmp_path / "x.parquet", 0, 2)
    manifest = small_manifest(key.fingerprint, [outside | {"name": "../x.parquet"}])
    sign_folder(folder, key, manifest)
    with pytest.raises(IntegrityError, match=re.escape("plain .parquet names")):
        verify_folder(folder, key.fingerprint)


def test_verify_folder_checks_parquet_row_counts(tmp_path: Path, key: SigningKey) -> None:
    # Signed, checksums right, but the shard's row count disagrees with its own file.
    folder = tmp_path / "ds"
    manifest = write_dataset(folder, key)
    manifest["shards"][1]["rows"] = 4
    sign_folder(folder, key, manifest)
    with pytest.raises(IntegrityError, match=re.escape("part-00001.parquet: 3 rows")):
        verify_folder(folder, key.fingerprint)
    assert verify_folder(folder, key.fingerprint, check_rows=False).shards == 3


def test_verify_folder_checks_the_total_row_count(tmp_path: Path, key: SigningKey) -> None:
    folder = tmp_path / "ds"
    manifest = write_dataset(folder, key)
    manifest["rows"] = 11
    sign_folder(folder, key, manifest)
    with pytest.raises(IntegrityError, match="12 rows in the shards"):
        verify_folder(folder, key.fingerprint)


def test_verify_folder_catches_a_card_that_contradicts_the_manifest(
    dataset: Path, key: SigningKey
) -> None:
    card = dataset / CARD_PATH
    card.write_text(card.read_text().replace("license: unknown", "license: cc0-1.0"))
    with pytest.raises(IntegrityError, match=re.escape(f"{CARD_PATH}: sha256")):
        verify_folder(dataset, key.fingerprint)
    card.unlink()
    with pytest.raises(IntegrityError, match=re.escape(f"{CARD_PATH} is missing")):
        verify_folder(dataset, key.fingerprint)


def test_verify_folder_catches_an_extra_shard_beside_the_listed_ones(
    dataset: Path, key: SigningKey
) -> None:
    write_shard(dataset / DATA_DIR / "part-00009.parquet", 100, 2)
    with pytest.raises(IntegrityError, match=re.escape("data/part-00009.parquet")):
        verify_folder(dataset, key.fingerprint)


# ------------------------------------------------------------------ versions


def second_version(folder: Path, key: SigningKey) -> dict[str, Any]:
    """Version 2 of `folder`'s dataset: version 1's manifest kept under versions/1."""
    meta = folder / ALLMENDE_DIR
    old = (meta / MANIFEST_NAME).read_bytes()
    keep = version_dir(folder, 1)
    keep.mkdir(parents=True)
    (keep / MANIFEST_NAME).write_bytes(old)
    (keep / SIGNATURE_NAME).write_bytes((meta / SIGNATURE_NAME).read_bytes())
    manifest = {k: v for k, v in json.loads(old).items() if k != "card"}
    manifest["version"] = {
        "number": 2, "created_ms": 2,
        "previous": {"number": 1, "manifest_sha256": hashlib.sha256(old).hexdigest(),
                     "merkle_root": manifest["merkle_root"]},
        "removed": [{"ids": ["3"], "reason": "asked by its author", "ms": 2}],
    }
    sign_folder(folder, key, manifest)
    return manifest


def test_verify_folder_follows_the_chain_of_versions(dataset: Path, key: SigningKey) -> None:
    second_version(dataset, key)
    assert verify_folder(dataset, key.fingerprint).version == 2


def test_a_gap_in_the_chain_of_versions_is_named(dataset: Path, key: SigningKey) -> None:
    second_version(dataset, key)
    (version_dir(dataset, 1) / MANIFEST_NAME).unlink()
    with pytest.raises(IntegrityError, match=r"versions/1/manifest\.json is missing.*gap"):
        verify_folder(dataset, key.fingerprint)


def test_a_forged_link_in_the_chain_of_versions_is_named(
    dataset: Path, key: SigningKey
) -> None:
    second_version(dataset, key)
    # Another validly signed version 1 in place of the one version 2 names.
    forged = small_manifest(key.fingerprint) | {"version": {"number": 1, "previous": None}}
    data = encode_manifest(forged)
    (version_dir(dataset, 1) / MANIFEST_NAME).write_bytes(data)
    (version_dir(dataset, 1) / SIGNATURE_NAME).write_bytes(sign_manifest(key, data))
    with pytest.raises(IntegrityError, match=r"versions/1/manifest\.json: sha256.*forged link"):
        verify_folder(dataset, key.fingerprint)


def test_a_version_that_skips_a_number_is_refused(dataset: Path, key: SigningKey) -> None:
    manifest = second_version(dataset, key)
    manifest["version"]["previous"]["number"] = 0
    sign_folder(dataset, key, manifest)
    with pytest.raises(IntegrityError, match=r"version\.previous must name version 1"):
        verify_folder(dataset, key.fingerprint)
