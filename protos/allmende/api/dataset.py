"""The researcher's download: fetch a job's signed manifest and shards, verifying everything.

Shards stream into `NAME.part` files while their sha256 is computed; a shard is renamed
into place only when its hash matches the signed manifest. After key rotations the
coordinator's rotation chain is written beside the manifest (key-chain.json), so the folder
verifies offline against a fingerprint pinned before the rotations.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from allmende.api.client import ApiClient
from allmende.protocol.errors import IntegrityError
from allmende.protocol.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    FolderReport,
    verify_folder,
    verify_manifest,
)
from allmende.protocol.rotation import CHAIN_NAME, chain_until, encode_chain, follow_chain
from allmende.protocol.tls import check_binding

Chain = list[tuple[bytes, bytes]]


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


def pull(
    client: ApiClient,
    job_id: str,
    pinned: str,
    out: Path,
    progress: Callable[[str, int, int], None] = lambda name, done, total: None,
) -> FolderReport:
    chain = check_coordinator(client, pinned)
    response = client.manifest(job_id)
    verified = verify_manifest(response.manifest, response.signature, pinned, chain)
    if verified.manifest.get("job", {}).get("id") != job_id:
        raise IntegrityError(f"{MANIFEST_NAME} describes another job, not {job_id}")
    out.mkdir(parents=True, exist_ok=True)
    for shard in verified.manifest["shards"]:
        name = shard["name"]
        final = out / name
        if final.is_file() and final.stat().st_size == shard["bytes"]:
            digest = hashlib.sha256(final.read_bytes()).hexdigest()
            if digest == shard["sha256"]:
                progress(name, shard["bytes"], shard["bytes"])
                continue
        part = out / f".{name}.part"
        digest_obj = hashlib.sha256()
        done = 0
        with part.open("wb") as handle:
            for chunk in client.download(job_id, name):
                done += len(chunk)
                if done > shard["bytes"]:
                    raise IntegrityError(f"{name}: server sent more than {shard['bytes']} bytes")
                digest_obj.update(chunk)
                handle.write(chunk)
                progress(name, done, shard["bytes"])
        if digest_obj.hexdigest() != shard["sha256"]:
            part.unlink()
            raise IntegrityError(f"{name}: downloaded sha256 does not match the signed manifest")
        os.replace(part, final)
    (out / MANIFEST_NAME).write_bytes(response.manifest)
    (out / SIGNATURE_NAME).write_bytes(response.signature)
    # The part of the chain that leads to the manifest's signer: later rotations do not
    # vouch for this dataset, and a dataset signed before any rotation needs no chain.
    kept = chain_until(chain, verified.public_key)
    if kept:
        (out / CHAIN_NAME).write_bytes(encode_chain(kept))
    else:
        (out / CHAIN_NAME).unlink(missing_ok=True)
    return verify_folder(out, pinned)
