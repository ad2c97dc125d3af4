"""The researcher's download: fetch a job's signed manifest and shards, verifying everything.

Shards stream into `NAME.part` files while their sha256 is computed; a shard is renamed
into place only when its hash matches the signed manifest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from allmende.client.connection import CoordinatorClient
from allmende.protocol.errors import IntegrityError
from allmende.protocol.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    FolderReport,
    verify_folder,
    verify_manifest,
)
from allmende.protocol.signing import fingerprint
from allmende.protocol.tls import check_binding


def check_coordinator(client: CoordinatorClient, pinned: str) -> None:
    """Over TLS, make sure the certificate is the one the pinned coordinator key vouches for.

    (The manifest signature protects the data end to end either way.)"""
    info = client.info()
    if not client.tls_cert_sha256:
        return
    if len(info.public_key) != 32 or fingerprint(info.public_key) != pinned:
        raise IntegrityError("the coordinator's key does not match the pinned fingerprint")
    check_binding(
        info.public_key, client.tls_cert_sha256, info.tls_cert_sha256, info.tls_cert_signature
    )


def pull(
    client: CoordinatorClient,
    job_id: str,
    pinned: str,
    out: Path,
    progress: Callable[[str, int, int], None] = lambda name, done, total: None,
) -> FolderReport:
    check_coordinator(client, pinned)
    response = client.manifest(job_id)
    verified = verify_manifest(response.manifest, response.signature, pinned)
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
    return verify_folder(out, pinned)
