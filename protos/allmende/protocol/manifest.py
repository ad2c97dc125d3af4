"""Dataset manifests: what a finished job's files are, signed by the coordinator.

`manifest.json` lists every shard with its sha256 and row count, the model and its weights
hash, the job spec and a Merkle root over the shard hashes; `manifest.sig` holds the detached
Ed25519 signature with the public key. Researchers verify a folder against a pinned
coordinator fingerprint with `verify_folder`.

A manifest is signed by the coordinator key current when the dataset was written. When that
key came after the pinned one through key rotations, the folder carries the rotation chain in
`key-chain.json`, and the manifest is trusted exactly when the chain leads from the pinned key
to the signing key (see allmende.protocol.rotation).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allmende.protocol.errors import IntegrityError
from allmende.protocol.rotation import CHAIN_NAME, chain_until, follow_chain, load_chain
from allmende.protocol.signing import CTX_MANIFEST, SigningKey, fingerprint, verify

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
FORMAT = "allmende.dataset/1"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def merkle_root(leaf_hashes: list[str]) -> str:
    """Merkle root over hex sha256 leaves, with domain-separated leaves and nodes.

    Leaves are sha256(0x00 || h); nodes sha256(0x01 || left || right); an odd node is
    carried up unchanged. The empty tree's root is sha256 of nothing.
    """
    if not leaf_hashes:
        return hashlib.sha256(b"").hexdigest()
    level = [hashlib.sha256(b"\x00" + bytes.fromhex(h)).digest() for h in leaf_hashes]
    while len(level) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    """The canonical bytes of a manifest: sorted keys, two-space indent, final newline."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def sign_manifest(key: SigningKey, manifest_bytes: bytes) -> bytes:
    signature = key.sign(CTX_MANIFEST, manifest_bytes)
    document = {
        "algorithm": "ed25519",
        "context": CTX_MANIFEST.decode(),
        "public_key": base64.b64encode(key.public_key).decode(),
        "fingerprint": key.fingerprint,
        "signature": base64.b64encode(signature).decode(),
    }
    return (json.dumps(document, sort_keys=True, indent=2) + "\n").encode()


@dataclass(frozen=True)
class VerifiedManifest:
    manifest: dict[str, Any]
    fingerprint: str  # of the key that signed it
    public_key: bytes = b""


def verify_manifest(
    manifest_bytes: bytes,
    signature_bytes: bytes,
    pinned: str,
    chain: Sequence[tuple[bytes, bytes]] = (),
) -> VerifiedManifest:
    """Check the manifest's signature against the pinned coordinator fingerprint, or against
    a later key that the rotation `chain` leads to from the pinned one."""
    try:
        sig = json.loads(signature_bytes)
        public_key = base64.b64decode(sig["public_key"], validate=True)
        signature = base64.b64decode(sig["signature"], validate=True)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise IntegrityError(
            f"{SIGNATURE_NAME} is not a valid signature document ({exc})"
        ) from None
    if len(public_key) != 32:
        raise IntegrityError(f"{SIGNATURE_NAME}: public key must be 32 bytes")
    signer = fingerprint(public_key)
    if signer != pinned:
        _check_rotated_signer(signer, public_key, pinned, chain)
    try:
        verify(public_key, CTX_MANIFEST, manifest_bytes, signature)
    except IntegrityError as exc:
        raise IntegrityError(f"{MANIFEST_NAME}: {exc.message}") from None
    try:
        manifest = json.loads(manifest_bytes)
    except (ValueError, RecursionError) as exc:
        raise IntegrityError(f"{MANIFEST_NAME} is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IntegrityError(f"{MANIFEST_NAME}: format must be {FORMAT!r}")
    if manifest.get("coordinator_fingerprint") != signer:
        raise IntegrityError(f"{MANIFEST_NAME}: names another coordinator")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(
        isinstance(s, dict) and _safe_name(s.get("name")) for s in shards
    ):
        raise IntegrityError(f"{MANIFEST_NAME}: shards must be a list of plain .parquet names")
    try:
        root = merkle_root([str(s.get("sha256", "")) for s in shards])
    except ValueError:  # a shard sha256 that is not hex
        raise IntegrityError(f"{MANIFEST_NAME}: every shard sha256 must be hex digits") from None
    if manifest.get("merkle_root") != root:
        raise IntegrityError(f"{MANIFEST_NAME}: merkle_root does not match the shard hashes")
    return VerifiedManifest(manifest, signer, public_key)


def _check_rotated_signer(
    signer: str, public_key: bytes, pinned: str, chain: Sequence[tuple[bytes, bytes]]
) -> None:
    """The manifest is signed by another key than the pinned one: only a rotation chain from
    the pinned key to the signing key makes it trusted."""
    mismatch = (
        f"{MANIFEST_NAME}: signing key fingerprint {signer} does not match the pinned {pinned}"
    )
    if not chain:
        raise IntegrityError(f"{mismatch}, and no key chain ({CHAIN_NAME}) leads to it")
    leading = chain_until(chain, public_key)
    if not leading:
        raise IntegrityError(f"{mismatch}, and no rotation in the key chain hands over to it")
    try:
        follow_chain(pinned, leading, public_key)
    except IntegrityError as exc:
        raise IntegrityError(
            f"{mismatch}, and the key chain does not vouch for it: {exc.message}"
        ) from None


def _safe_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name.endswith(".parquet")
        and "/" not in name
        and "\\" not in name
        and not name.startswith(".")
    )


@dataclass(frozen=True)
class FolderReport:
    job_id: str
    rows: int
    shards: int
    bytes: int
    merkle_root: str


def verify_folder(folder: Path, pinned: str, check_rows: bool = True) -> FolderReport:
    """Verify a downloaded dataset folder; raise IntegrityError naming the first problem."""
    manifest_path = folder / MANIFEST_NAME
    signature_path = folder / SIGNATURE_NAME
    for path in (manifest_path, signature_path):
        if not path.is_file():
            raise IntegrityError(f"{path} is missing")
    # A chain file that is present must be well formed, even where the pin needs no chain.
    chain = load_chain(folder / CHAIN_NAME)
    verified = verify_manifest(
        manifest_path.read_bytes(), signature_path.read_bytes(), pinned, chain
    )
    manifest = verified.manifest
    total_bytes = 0
    listed = set()
    rows = 0
    for shard in manifest["shards"]:
        path = folder / shard["name"]
        listed.add(shard["name"])
        if not path.is_file():
            raise IntegrityError(f"{shard['name']} is missing")
        size = path.stat().st_size
        if size != shard.get("bytes"):
            raise IntegrityError(
                f"{shard['name']}: {size} bytes, manifest says {shard.get('bytes')}"
            )
        actual = sha256_file(path)
        if actual != shard.get("sha256"):
            raise IntegrityError(f"{shard['name']}: sha256 {actual} does not match the manifest")
        total_bytes += size
        if check_rows:
            rows += _parquet_rows(path, int(shard.get("rows", -1)))
    extra = sorted(p.name for p in folder.glob("*.parquet") if p.name not in listed)
    if extra:
        raise IntegrityError(f"files not in the manifest: {', '.join(extra)}")
    if check_rows and rows != manifest.get("rows"):
        raise IntegrityError(f"{rows} rows in the shards, manifest says {manifest.get('rows')}")
    return FolderReport(
        job_id=str(manifest.get("job", {}).get("id", "")),
        rows=int(manifest.get("rows", 0)),
        shards=len(manifest["shards"]),
        bytes=total_bytes,
        merkle_root=str(manifest["merkle_root"]),
    )


def _parquet_rows(path: Path, expected: int) -> int:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # a researcher without pyarrow still gets every checksum checked
        return expected
    rows = int(pq.ParquetFile(path).metadata.num_rows)
    if rows != expected:
        raise IntegrityError(f"{path.name}: {rows} rows, manifest says {expected}")
    return rows
