"""Takedowns: publishing a new version of a finished job's dataset without some rows.

LAION-5B had to be withdrawn and re-released; a dataset here can drop rows without being
rebuilt. The new version rewrites only the shards that held removed rows (the others keep
their bytes and their content-addressed names, so a researcher's next pull fetches only the
changed ones), keeps the earlier manifests under `_allmende/versions/<n>/`, and its manifest
names the previous version by its sha256 and Merkle root and lists what was removed and why
(the ids and the reason, never the content). The rows' provenance columns are untouched.

Everything is written into a staging folder and swapped in whole, and bad input (ids the
dataset does not have, no reason) is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from allmende.coordinator.domain.publish import keep_versions, write_manifest, write_shard
from allmende.protocol.errors import FailedPrecondition, InvalidArgument, shown
from allmende.protocol.manifest import (
    merkle_root,
    shard_path,
    version_of,
)
from allmende.protocol.signing import SigningKey

MAX_REASON_CHARS = 2000
MAX_IDS = 1_000_000


@dataclass(frozen=True)
class Removal:
    version: int
    rows_removed: int
    rows: int
    merkle_root: str


def _check(ids: Sequence[str], reason: str) -> tuple[set[str], str]:
    wanted = {i for i in ids if i}
    if not wanted:
        raise InvalidArgument("ids", "the item ids of the rows to remove (at least one)")
    if len(wanted) > MAX_IDS:
        raise InvalidArgument("ids", f"at most {MAX_IDS} ids, got {len(wanted)}")
    reason = reason.strip()
    if not reason:
        raise InvalidArgument("reason", "why the rows are withdrawn (published with them)")
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidArgument("reason", f"at most {MAX_REASON_CHARS} characters")
    return wanted, reason


def _position(name: str) -> int:
    """A shard's position from its name (`part-<position>-<hash>.parquet`)."""
    return int(name.split("-")[1])


def remove_rows(
    key: SigningKey,
    job_id: str,
    published: bytes,
    datasets_dir: Path,
    ids: Sequence[str],
    reason: str,
    now_ms: int,
    key_chain: Sequence[tuple[bytes, bytes]] = (),
) -> tuple[Removal, bytes, bytes]:
    """Write the next version of a job's dataset without the rows `ids`.

    `published` is the current manifest's bytes. Returns what was done, and the new
    manifest and signature for the store to publish."""
    wanted, reason = _check(ids, reason)
    manifest: dict[str, Any] = json.loads(published)
    folder = datasets_dir / job_id
    holding: dict[str, set[str]] = {}
    for shard in manifest["shards"]:
        column = pq.read_table(shard_path(folder, shard["name"]), columns=["id"]).column("id")
        hit = wanted.intersection(column.to_pylist())
        if hit:
            holding[shard["name"]] = hit
    found = set().union(*holding.values()) if holding else set()
    unknown = sorted(wanted - found)
    if unknown:
        listed = ", ".join(shown(i) for i in unknown[:5])
        raise InvalidArgument(
            "ids",
            f"{len(unknown)} id(s) are not rows of job {job_id}'s dataset as published "
            f"(never in it, or removed before): {listed}",
        )
    current = version_of(manifest)
    number = int(current["number"]) + 1
    staging = datasets_dir / f".{job_id}.v{number}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shards = _write_shards(folder, staging, manifest["shards"], holding, wanted)
        keep_versions(folder, staging)
        new = _next_manifest(manifest, staging, shards, key, now_ms, published, wanted, reason)
        new_bytes, signature = write_manifest(staging, new, key, key_chain)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = datasets_dir / f".{job_id}.v{number - 1}.old"
    shutil.rmtree(old, ignore_errors=True)
    folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    removal = Removal(number, len(found), int(new["rows"]), str(new["merkle_root"]))
    return removal, new_bytes, signature


def _write_shards(
    folder: Path,
    staging: Path,
    shards: list[dict[str, Any]],
    holding: dict[str, set[str]],
    wanted: set[str],
) -> list[dict[str, Any]]:
    """Unchanged shards linked (or copied) over; the others rewritten without the rows."""
    (staging / "data").mkdir(parents=True)
    kept = []
    for shard in shards:
        source = shard_path(folder, shard["name"])
        if shard["name"] not in holding:
            target = shard_path(staging, shard["name"])
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
            kept.append(shard)
            continue
        table = pq.read_table(source)
        left = table.filter(pc.invert(pc.is_in(table.column("id"), pa.array(sorted(wanted)))))
        if left.num_rows:
            kept.append(write_shard(left, staging, _position(shard["name"]), {}))
    return kept


def _next_manifest(
    manifest: dict[str, Any],
    staging: Path,
    shards: list[dict[str, Any]],
    key: SigningKey,
    now_ms: int,
    published: bytes,
    wanted: set[str],
    reason: str,
) -> dict[str, Any]:
    """The new version's manifest: the figures that depend on the rows recomputed from the
    shards; how the dataset was made and what it cost stay as they were."""
    current = version_of(manifest)
    columns = ["verified_by", "agreement"] + (["keep"] if "rows_kept" in manifest else [])
    rows = kept = 0
    verification: dict[str, int] = {}
    agreements: list[float] = []
    for shard in shards:
        table = pq.read_table(shard_path(staging, shard["name"]), columns=columns)
        rows += table.num_rows
        for how in table.column("verified_by").to_pylist():
            verification[how] = verification.get(how, 0) + 1
        low = pc.min(table.column("agreement")).as_py()
        if low is not None:
            agreements.append(float(low))
        if "keep" in columns:
            kept += int(pc.sum(table.column("keep").cast(pa.int64())).as_py() or 0)
    new = {k: v for k, v in manifest.items() if k != "card"}
    new |= {
        "shards": shards,
        "merkle_root": merkle_root([s["sha256"] for s in shards]),
        "rows": rows,
        "verification": verification,
        "min_agreement": min(agreements) if agreements else None,
        "coordinator_fingerprint": key.fingerprint,
        "version": {
            "number": int(current["number"]) + 1,
            "created_ms": now_ms,
            "previous": {
                "number": int(current["number"]),
                "manifest_sha256": hashlib.sha256(published).hexdigest(),
                "merkle_root": manifest["merkle_root"],
            },
            "removed": [
                *current.get("removed", []),
                {"ids": sorted(wanted), "reason": reason, "ms": now_ms},
            ],
        },
    }
    if "rows_kept" in manifest:
        new["rows_kept"] = kept
    return new


def require_published(found: tuple[bytes, bytes] | None, job_id: str, state: str) -> bytes:
    if found is None:
        raise FailedPrecondition(f"job {job_id} is {state}; it has no dataset to remove rows from")
    return found[0]
