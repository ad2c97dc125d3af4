"""Dataset manifests: what a finished job's files are, signed by the coordinator.

A dataset folder (format `allmende.dataset/2`) is laid out so that Parquet tools open it by
its path alone, after Hugging Face's convention for the data:

    data/part-00000-<sha256[:12]>.parquet   the rows (shard names: position + content hash)
    _allmende/README.md                    the dataset card (YAML header + prose)
    _allmende/manifest.json                this manifest
    _allmende/manifest.sig                 its detached Ed25519 signature
    _allmende/key-chain.json               the rotation chain, after key rotations
    _allmende/versions/<n>/manifest.json   earlier versions' manifests (and .sig), after a
                                           takedown published a new version

Allmende's own files sit under `_allmende/`, which pyarrow, DuckDB, Spark and HF `datasets`
skip (the leading underscore). The card is there too, not at the root: a root README.md is
read as a Parquet file by `pyarrow.dataset.dataset(folder)` and pandas, and breaks them.

The manifest lists every shard with its sha256 and row count (`shards`: plain names inside
`data/`), the model and its weights hash, the job spec and a Merkle root over the shard
hashes. Fields beyond the first format, all written by the assimilator:

- `card`: {path, sha256, bytes} of the dataset card; the card is covered by the signature
  through this hash, so a card edited to contradict the manifest fails verification.
- `license`: the job's licence identifier ("unknown" where none was given).
- `recipe`: how rows were computed (model, weights hash, pooling, max_seq_length,
  normalisation, dtype) -- also in every shard's Parquet key-value metadata.
- `tau_history`: [{ms, tau}] the tau in force from each time on (the first entry: the job's
  creation); every `job set --tau` change adds one.
- `verification`: counts of rows by how they were verified (`verified_by` column values).
- `cost`: {volunteer_seconds, results, items_computed, rows_accepted, redundancy_overhead}
  (items computed counts every replica, outvoted ones included; overhead is computed ÷
  accepted); `energy` is beside it (Wh, `estimated` true where any figure was estimated).
- `version`: {number, created_ms, previous: null | {number, manifest_sha256, merkle_root},
  removed: [{ids, reason, ms}] (every takedown so far, cumulative)}.
- `min_agreement`: the lowest agreement among rows decided by a quorum (null when no row
  had more than one result).

A manifest is signed by the coordinator key current when the dataset was written. When that
key came after the pinned one through key rotations, the folder carries the rotation chain in
`_allmende/key-chain.json`, and the manifest is trusted exactly when the chain leads from the
pinned key to the signing key (see allmende.protocol.rotation).
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
CARD_NAME = "README.md"
ALLMENDE_DIR = "_allmende"  # Allmende's own files, out of the data path
DATA_DIR = "data"  # the shards
VERSIONS_DIR = "versions"  # _allmende/versions/<n>/: earlier versions' manifests
CARD_PATH = f"{ALLMENDE_DIR}/{CARD_NAME}"
MANIFEST_PATH = f"{ALLMENDE_DIR}/{MANIFEST_NAME}"
FORMAT = "allmende.dataset/2"
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


def meta_dir(folder: Path) -> Path:
    """Where a dataset folder keeps Allmende's own files."""
    return folder / ALLMENDE_DIR


def shard_path(folder: Path, name: str) -> Path:
    """Where a manifest's shard `name` lies in a dataset folder."""
    return folder / DATA_DIR / name


def version_dir(folder: Path, number: int) -> Path:
    """Where an earlier version's manifest and signature lie in a dataset folder."""
    return folder / ALLMENDE_DIR / VERSIONS_DIR / str(number)


@dataclass(frozen=True)
class FolderReport:
    job_id: str
    rows: int
    shards: int
    bytes: int
    merkle_root: str
    version: int = 1


def verify_folder(folder: Path, pinned: str, check_rows: bool = True) -> FolderReport:
    """Verify a downloaded dataset folder; raise IntegrityError naming the first problem."""
    meta = meta_dir(folder)
    manifest_path = meta / MANIFEST_NAME
    signature_path = meta / SIGNATURE_NAME
    for path in (manifest_path, signature_path):
        if not path.is_file():
            raise IntegrityError(f"{path} is missing")
    # A chain file that is present must be well formed, even where the pin needs no chain.
    chain = load_chain(meta / CHAIN_NAME)
    manifest_bytes = manifest_path.read_bytes()
    verified = verify_manifest(manifest_bytes, signature_path.read_bytes(), pinned, chain)
    manifest = verified.manifest
    _check_card(folder, manifest)
    total_bytes = 0
    listed = set()
    rows = 0
    for shard in manifest["shards"]:
        path = shard_path(folder, shard["name"])
        listed.add(path.resolve())
        where = f"{DATA_DIR}/{shard['name']}"
        if not path.is_file():
            raise IntegrityError(f"{where} is missing")
        size = path.stat().st_size
        if size != shard.get("bytes"):
            raise IntegrityError(f"{where}: {size} bytes, manifest says {shard.get('bytes')}")
        actual = sha256_file(path)
        if actual != shard.get("sha256"):
            raise IntegrityError(f"{where}: sha256 {actual} does not match the manifest")
        total_bytes += size
        if check_rows:
            rows += _parquet_rows(path, int(shard.get("rows", -1)))
    extra = sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*.parquet")
        if p.resolve() not in listed and not _hidden(p.relative_to(folder))
    )
    if extra:
        raise IntegrityError(f"files not in the manifest: {', '.join(extra)}")
    if check_rows and rows != manifest.get("rows"):
        raise IntegrityError(f"{rows} rows in the shards, manifest says {manifest.get('rows')}")
    version = check_versions(folder, manifest, manifest_bytes, pinned, chain)
    return FolderReport(
        job_id=str(manifest.get("job", {}).get("id", "")),
        rows=int(manifest.get("rows", 0)),
        shards=len(manifest["shards"]),
        bytes=total_bytes,
        merkle_root=str(manifest["merkle_root"]),
        version=version,
    )


def _hidden(relative: Path) -> bool:
    """Paths Parquet tools skip (a component starting with '.' or '_'): not data."""
    return any(part.startswith((".", "_")) for part in relative.parts)


def _check_card(folder: Path, manifest: dict[str, Any]) -> None:
    card = manifest.get("card")
    if not isinstance(card, dict) or card.get("path") != CARD_PATH:
        raise IntegrityError(f"{MANIFEST_NAME}: card must name {CARD_PATH}")
    path = folder / CARD_PATH
    if not path.is_file():
        raise IntegrityError(f"{CARD_PATH} is missing")
    if sha256_file(path) != card.get("sha256"):
        raise IntegrityError(
            f"{CARD_PATH}: sha256 does not match the manifest (the card was edited, or "
            "contradicts the signed manifest)"
        )


def version_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest's `version` block, checked for shape (version 1 where absent)."""
    version = manifest.get("version", {"number": 1, "previous": None, "removed": []})
    number = version.get("number") if isinstance(version, dict) else None
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise IntegrityError(f"{MANIFEST_NAME}: version.number must be a whole number >= 1")
    previous = version.get("previous")
    if number == 1 and previous is not None:
        raise IntegrityError(f"{MANIFEST_NAME}: version 1 names a previous version")
    if number > 1 and not (
        isinstance(previous, dict)
        and previous.get("number") == number - 1
        and isinstance(previous.get("manifest_sha256"), str)
        and isinstance(previous.get("merkle_root"), str)
    ):
        raise IntegrityError(
            f"{MANIFEST_NAME}: version.previous must name version {number - 1} by its "
            "number, manifest_sha256 and merkle_root"
        )
    return dict(version)


def check_versions(
    folder: Path,
    manifest: dict[str, Any],
    manifest_bytes: bytes,
    pinned: str,
    chain: Sequence[tuple[bytes, bytes]] = (),
) -> int:
    """Follow the chain of versions from this manifest back to version 1: every earlier
    manifest must be in `_allmende/versions/<n>/`, signed, of the same job, and exactly the
    one the next version names (its sha256 and Merkle root). Returns this version's number."""
    job_id = manifest.get("job", {}).get("id")
    current = version_of(manifest)
    number = int(current["number"])
    link = current.get("previous")
    while link is not None:
        wanted = int(link["number"])
        where = f"{ALLMENDE_DIR}/{VERSIONS_DIR}/{wanted}"
        older_dir = version_dir(folder, wanted)
        if not (older_dir / MANIFEST_NAME).is_file() or not (older_dir / SIGNATURE_NAME).is_file():
            raise IntegrityError(
                f"{where}/{MANIFEST_NAME} is missing: the chain of versions has a gap"
            )
        older_bytes = (older_dir / MANIFEST_NAME).read_bytes()
        if hashlib.sha256(older_bytes).hexdigest() != link["manifest_sha256"]:
            raise IntegrityError(
                f"{where}/{MANIFEST_NAME}: sha256 is not the one version {wanted + 1} names "
                "(a forged link in the chain of versions)"
            )
        try:
            older = verify_manifest(
                older_bytes, (older_dir / SIGNATURE_NAME).read_bytes(), pinned, chain
            ).manifest
        except IntegrityError as exc:
            raise IntegrityError(f"{where}: {exc.message}") from None
        if older.get("merkle_root") != link["merkle_root"]:
            raise IntegrityError(
                f"{where}/{MANIFEST_NAME}: merkle_root is not the one version {wanted + 1} names"
            )
        if older.get("job", {}).get("id") != job_id:
            raise IntegrityError(f"{where}/{MANIFEST_NAME} is of another job")
        got = version_of(older)
        if got["number"] != wanted:
            raise IntegrityError(f"{where}/{MANIFEST_NAME} says it is version {got['number']}")
        link = got.get("previous")
    return number


def _parquet_rows(path: Path, expected: int) -> int:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # a researcher without pyarrow still gets every checksum checked
        return expected
    rows = int(pq.ParquetFile(path).metadata.num_rows)
    if rows != expected:
        raise IntegrityError(f"{path.name}: {rows} rows, manifest says {expected}")
    return rows
