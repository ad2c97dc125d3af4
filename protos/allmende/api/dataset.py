"""The researcher's download: fetch a job's signed manifest, card and shards, verifying
everything, resumably and incrementally.

The folder's layout is protocol/manifest.py's (`data/*.parquet`, Allmende's files under
`_allmende/`). A shard already present with the manifest's size and sha256 is not fetched
again (a new version after a takedown changes only the shards that lost rows). Others stream
into `data/.NAME.part`; an interrupted pull continues from the partial file's size (the
server honours byte offsets), and a shard is renamed into place only when its hash matches
the signed manifest. `jobs` shards download in parallel. After key rotations the
coordinator's rotation chain is written beside the manifest, so the folder verifies offline
against a fingerprint pinned before the rotations.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allmende.api.client import ApiClient
from allmende.protocol.errors import IntegrityError
from allmende.protocol.manifest import (
    CARD_PATH,
    DATA_DIR,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    FolderReport,
    meta_dir,
    sha256_file,
    shard_path,
    verify_folder,
    verify_manifest,
    version_dir,
    version_of,
)
from allmende.protocol.rotation import CHAIN_NAME, chain_until, encode_chain, follow_chain
from allmende.protocol.tls import check_binding

Chain = list[tuple[bytes, bytes]]
# progress(file name, bytes of it done, its size): called from the download threads.
Progress = Callable[[str, int, int], None]
_CHUNK = 1 << 20
_OUR_SHARD = re.compile(r"part-\d{5}-[0-9a-f]{12}\.parquet").fullmatch


@dataclass
class PullStats:
    """What a pull did: bytes fetched, shards reused as they were, shards resumed."""

    downloaded_bytes: int = 0
    reused: int = 0
    resumed: int = 0
    fetched: int = 0
    total_bytes: int = 0


def check_coordinator(client: ApiClient, pinned: str) -> Chain:
    """Over TLS, make sure the certificate is the one the coordinator's current key vouches
    for, that key being the pinned one or reached from it through the rotation chain.
    Returns the chain. (The manifest signature protects the data end to end either way.)"""
    info = client.info()
    chain = [(r.rotation, r.signature) for r in info.key_chain]
    if not client.tls_cert_sha256:
        return chain
    try:
        follow_chain(pinned, chain, info.public_key)
    except IntegrityError as exc:
        raise IntegrityError(
            f"the coordinator's key does not match the pinned fingerprint: {exc.message}"
        ) from None
    check_binding(
        info.public_key, client.tls_cert_sha256, info.tls_cert_sha256, info.tls_cert_signature
    )
    return chain


def _hash_prefix(path: Path) -> tuple[Any, int]:
    """sha256 state and size of a partial file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest, size


def _fetch(
    client: ApiClient,
    job_id: str,
    remote: str,
    final: Path,
    size: int,
    sha256: str,
    progress: Progress,
    stats: PullStats,
    lock: threading.Lock,
) -> None:
    """Bring one file to `final`, with the given size and sha256: reuse it, resume its
    partial download, or fetch it whole."""
    if final.is_file() and final.stat().st_size == size and sha256_file(final) == sha256:
        with lock:
            stats.reused += 1
        progress(remote, size, size)
        return
    part = final.with_name(f".{final.name}.part")
    digest, done = _hash_prefix(part) if part.is_file() else (hashlib.sha256(), 0)
    if done > size:  # not a prefix of this file: start again
        part.unlink()
        digest, done = hashlib.sha256(), 0
    if done:
        with lock:
            stats.resumed += 1
    progress(remote, done, size)
    with part.open("ab") as handle:
        if done < size:
            for chunk in client.download(job_id, remote, offset=done):
                done += len(chunk)
                if done > size:
                    raise IntegrityError(f"{remote}: server sent more than {size} bytes")
                digest.update(chunk)
                handle.write(chunk)
                with lock:
                    stats.downloaded_bytes += len(chunk)
                progress(remote, done, size)
    if done != size or digest.hexdigest() != sha256:
        part.unlink()
        raise IntegrityError(f"{remote}: downloaded sha256 does not match the signed manifest")
    os.replace(part, final)
    with lock:
        stats.fetched += 1


def _fetch_small(client: ApiClient, job_id: str, remote: str) -> bytes:
    return b"".join(client.download(job_id, remote))


def _fetch_versions(
    client: ApiClient, job_id: str, manifest: dict[str, Any], out: Path
) -> list[tuple[Path, bytes, bytes]]:
    """The earlier versions' manifests and signatures the chain names, checked against each
    link's sha256; returns (folder, manifest, signature) to write (verify_folder checks the
    signatures and the rest of the chain)."""
    wanted = []
    link = version_of(manifest).get("previous")
    while link is not None:
        number = int(link["number"])
        folder = version_dir(out, number)
        remote = f"{folder.relative_to(out).as_posix()}/"
        have = folder / MANIFEST_NAME
        if have.is_file() and sha256_file(have) == link["manifest_sha256"]:
            older = have.read_bytes()
            signature = (folder / SIGNATURE_NAME).read_bytes()
        else:
            older = _fetch_small(client, job_id, remote + MANIFEST_NAME)
            signature = _fetch_small(client, job_id, remote + SIGNATURE_NAME)
            if hashlib.sha256(older).hexdigest() != link["manifest_sha256"]:
                raise IntegrityError(
                    f"{remote}{MANIFEST_NAME}: not the manifest version {number + 1} names"
                )
        wanted.append((folder, older, signature))
        try:
            link = version_of(json.loads(older)).get("previous")
        except ValueError:
            raise IntegrityError(f"{remote}{MANIFEST_NAME} is not JSON") from None
    return wanted


def pull(
    client: ApiClient,
    job_id: str,
    pinned: str,
    out: Path,
    progress: Progress = lambda name, done, total: None,
    jobs: int = 1,
    stats: PullStats | None = None,
) -> FolderReport:
    stats = stats if stats is not None else PullStats()
    chain = check_coordinator(client, pinned)
    response = client.manifest(job_id)
    verified = verify_manifest(response.manifest, response.signature, pinned, chain)
    manifest = verified.manifest
    if manifest.get("job", {}).get("id") != job_id:
        raise IntegrityError(f"{MANIFEST_NAME} describes another job, not {job_id}")
    card = manifest.get("card")
    if not isinstance(card, dict) or card.get("path") != CARD_PATH:
        raise IntegrityError(f"{MANIFEST_NAME}: card must name {CARD_PATH}")
    versions = _fetch_versions(client, job_id, manifest, out)
    shards = manifest["shards"]
    stats.total_bytes = sum(int(s["bytes"]) for s in shards) + int(card["bytes"])
    (out / DATA_DIR).mkdir(parents=True, exist_ok=True)
    meta = meta_dir(out)
    meta.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    files = [(CARD_PATH, out / CARD_PATH, int(card["bytes"]), str(card["sha256"]))] + [
        (s["name"], shard_path(out, s["name"]), int(s["bytes"]), str(s["sha256"])) for s in shards
    ]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [
            pool.submit(_fetch, client, job_id, remote, final, size, sha, progress, stats, lock)
            for remote, final, size, sha in files
        ]
        for future in futures:
            future.result()
    _drop_stale_shards(out, {s["name"] for s in shards}, job_id)
    for folder, older, signature in versions:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST_NAME).write_bytes(older)
        (folder / SIGNATURE_NAME).write_bytes(signature)
    (meta / MANIFEST_NAME).write_bytes(response.manifest)
    (meta / SIGNATURE_NAME).write_bytes(response.signature)
    # The part of the chain that leads to the manifest's signer: later rotations do not
    # vouch for this dataset, and a dataset signed before any rotation needs no chain.
    kept = chain_until(chain, verified.public_key)
    if kept:
        (meta / CHAIN_NAME).write_bytes(encode_chain(kept))
    else:
        (meta / CHAIN_NAME).unlink(missing_ok=True)
    return verify_folder(out, pinned)


def _drop_stale_shards(out: Path, current: set[str], job_id: str) -> None:
    """Shards of an earlier version of this job that the new one replaced. Only files this
    job's earlier pull wrote go: other files are left for verify_folder to name."""
    previous = meta_dir(out) / MANIFEST_NAME
    if not previous.is_file():
        return
    try:
        earlier = json.loads(previous.read_bytes())
        names = {s["name"] for s in earlier["shards"]}
        same_job = earlier["job"]["id"] == job_id
    except (ValueError, KeyError, TypeError):
        return
    if not same_job:
        return
    for name in names - current:
        if _OUR_SHARD(name):
            shard_path(out, name).unlink(missing_ok=True)
