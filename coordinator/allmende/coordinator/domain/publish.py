"""Writing a dataset folder's files: content-addressed shards with the recipe in their
Parquet key-value metadata, and the signed manifest with the dataset card it covers.

Shared by the assimilator (a job's first version) and takedowns (later versions). Shard
names are `part-<position>-<sha256[:12]>.parquet`: a shard a later version leaves unchanged
keeps its name and bytes, so a researcher's `dataset pull` of the new version reuses it.
Shard metadata therefore name the job and the manifest's place, never a version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from allmende.protocol.card import render_card
from allmende.protocol.manifest import (
    ALLMENDE_DIR,
    CARD_PATH,
    DATA_DIR,
    FORMAT,
    MANIFEST_NAME,
    MANIFEST_PATH,
    SIGNATURE_NAME,
    VERSIONS_DIR,
    encode_manifest,
    sha256_file,
    sign_manifest,
    version_dir,
    version_of,
)
from allmende.protocol.rotation import CHAIN_NAME, encode_chain
from allmende.protocol.signing import SigningKey

# The Parquet key-value metadata key that carries the recipe and the manifest reference.
METADATA_KEY = b"allmende"


def shard_metadata(job_id: str, fingerprint: str, recipe: dict[str, Any]) -> dict[bytes, bytes]:
    note = {
        "format": FORMAT,
        "job_id": job_id,
        "coordinator_fingerprint": fingerprint,
        "manifest": MANIFEST_PATH,
        "card": CARD_PATH,
        "recipe": recipe,
    }
    return {METADATA_KEY: json.dumps(note, sort_keys=True).encode()}


def write_shard(
    table: pa.Table, folder: Path, position: int, metadata: dict[bytes, bytes]
) -> dict[str, Any]:
    """Write one shard into `folder/data/`; returns its manifest entry."""
    data = folder / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    merged = {**(table.schema.metadata or {}), **metadata}
    staging = data / f".part-{position:05d}.tmp"
    pq.write_table(table.replace_schema_metadata(merged), staging, compression="zstd")
    digest = sha256_file(staging)
    name = f"part-{position:05d}-{digest[:12]}.parquet"
    os.replace(staging, data / name)
    return {
        "name": name,
        "rows": table.num_rows,
        "bytes": (data / name).stat().st_size,
        "sha256": digest,
    }


def write_manifest(
    folder: Path,
    manifest: dict[str, Any],
    key: SigningKey,
    key_chain: Sequence[tuple[bytes, bytes]] = (),
) -> tuple[bytes, bytes]:
    """Render the card from `manifest`, add its hash, sign and write `_allmende/`.

    Returns (manifest bytes, signature document)."""
    meta = folder / ALLMENDE_DIR
    meta.mkdir(parents=True, exist_ok=True)
    card = render_card(manifest).encode()
    (folder / CARD_PATH).write_bytes(card)
    manifest = {
        **manifest,
        "card": {"path": CARD_PATH, "sha256": sha256_file(folder / CARD_PATH), "bytes": len(card)},
    }
    manifest_bytes = encode_manifest(manifest)
    signature = sign_manifest(key, manifest_bytes)
    (meta / MANIFEST_NAME).write_bytes(manifest_bytes)
    (meta / SIGNATURE_NAME).write_bytes(signature)
    if key_chain:
        (meta / CHAIN_NAME).write_bytes(encode_chain(key_chain))
    else:
        (meta / CHAIN_NAME).unlink(missing_ok=True)
    return manifest_bytes, signature


def published_version(folder: Path) -> dict[str, Any] | None:
    """The version block of the dataset already in `folder` (the coordinator's own, written
    by it), or None where there is none."""
    path = folder / MANIFEST_PATH
    if not path.is_file():
        return None
    return version_of(json.loads(path.read_bytes()))


def keep_versions(folder: Path, staging: Path) -> dict[str, Any] | None:
    """Carry the versions of the dataset in `folder` over to `staging`: the earlier ones'
    manifests, and the current one's under `versions/<n>/`. Returns the link the next
    version's manifest names (None where `folder` holds no dataset)."""
    path = folder / MANIFEST_PATH
    if not path.is_file():
        return None
    published = path.read_bytes()
    manifest = json.loads(published)
    number = int(version_of(manifest)["number"])
    older = folder / ALLMENDE_DIR / VERSIONS_DIR
    if older.is_dir():
        shutil.copytree(older, staging / ALLMENDE_DIR / VERSIONS_DIR, dirs_exist_ok=True)
    target = version_dir(staging, number)
    target.mkdir(parents=True, exist_ok=True)
    (target / MANIFEST_NAME).write_bytes(published)
    shutil.copy2(folder / ALLMENDE_DIR / SIGNATURE_NAME, target / SIGNATURE_NAME)
    return {
        "number": number,
        "manifest_sha256": hashlib.sha256(published).hexdigest(),
        "merkle_root": manifest["merkle_root"],
    }


def next_version(folder: Path, staging: Path, now_ms: int) -> dict[str, Any]:
    """The version block of a dataset written again into `folder` (a job re-assimilated
    after re-verification): the next number, linked to the one there, its takedowns kept.
    Version 1 where `folder` holds none."""
    prior = published_version(folder)
    link = keep_versions(folder, staging)
    if prior is None or link is None:
        return {"number": 1, "created_ms": now_ms, "previous": None, "removed": []}
    return {
        "number": int(prior["number"]) + 1,
        "created_ms": now_ms,
        "previous": link,
        "removed": list(prior.get("removed", [])),
    }
