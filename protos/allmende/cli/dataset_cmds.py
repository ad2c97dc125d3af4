"""`allmende dataset pull|verify|versions|remove|export` (verify `--recompute`: the sample
recomputed and reported by recompute_out.py)."""

from __future__ import annotations

import argparse
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from allmende.api.client import ApiClient
from allmende.api.dataset import PullStats, check_coordinator
from allmende.api.dataset import pull as pull_dataset
from allmende.cli.common import EXIT_OK, EXIT_USAGE, CliError, err, out, out_json
from allmende.cli.progress import DownloadProgress
from allmende.cli.remote import call
from allmende.cli.tokens import read_token, reader_token
from allmende.protocol.errors import IntegrityError
from allmende.protocol.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    verify_folder,
    verify_manifest,
    version_of,
)
from allmende.protocol.signing import normalise_fingerprint

MAX_IDS = 1_000_000


def pull(args: argparse.Namespace) -> int:
    pinned = normalise_fingerprint(args.fingerprint)
    out_dir = Path(args.out)
    stats = PullStats()
    bar = DownloadProgress()

    def progress(name: str, done: int, total: int) -> None:
        bar.total = stats.total_bytes
        bar.update(name, done, total)

    with ApiClient(args.coordinator, admin_token=reader_token(args)) as client:
        try:
            report = call(
                lambda: pull_dataset(
                    client,
                    client.get_job(args.job).job_id,
                    pinned,
                    out_dir,
                    progress,
                    jobs=args.jobs,
                    stats=stats,
                ),
                args.coordinator,
            )
        except IntegrityError as exc:
            raise CliError(f"verification failed: {exc.message}") from None
        finally:
            bar.close()
    out(
        f"pulled {report.rows} rows in {report.shards} shard(s) to {out_dir} "
        f"(version {report.version})"
    )
    out(
        f"{stats.downloaded_bytes} bytes downloaded; {stats.reused} file(s) already present, "
        f"{stats.resumed} resumed"
    )
    out(f"signature and every sha256 verified; merkle root {report.merkle_root}")
    return EXIT_OK


def verify(args: argparse.Namespace) -> int:
    pinned = normalise_fingerprint(args.fingerprint)
    folder = Path(args.folder)
    recomputing = args.recompute is not None or args.recompute_rows is not None
    for flag, given in (("--images", args.images), ("--model-dir", args.model_dir)):
        if given and not recomputing:
            raise CliError(
                f"{flag}: used with --recompute FRACTION or --recompute-rows N", EXIT_USAGE
            )
    try:
        report = verify_folder(folder, pinned)
    except IntegrityError as exc:
        raise CliError(f"verification failed: {exc.message}") from None
    checked = {
        "ok": True,
        "job_id": report.job_id,
        "rows": report.rows,
        "shards": report.shards,
        "bytes": report.bytes,
        "merkle_root": report.merkle_root,
        "version": report.version,
    }
    if not args.json:
        out(
            f"ok: {report.rows} rows in {report.shards} shard(s), job {report.job_id}, "
            f"version {report.version}; signature, sha256 of every shard and of the card, "
            "merkle root and the chain of versions verified"
        )
    if not recomputing:
        if args.json:
            out_json(checked)
        return EXIT_OK
    from allmende.cli.recompute_out import recompute_and_report

    return recompute_and_report(args, folder, checked)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _versions(client: ApiClient, job_id: str, pinned: str) -> list[dict[str, Any]]:
    """Every version of a job's dataset, newest first, each manifest's signature verified
    and each link of the chain checked against the older manifest's sha256."""
    chain = check_coordinator(client, pinned)
    response = client.manifest(job_id)
    manifest = verify_manifest(response.manifest, response.signature, pinned, chain).manifest
    found = [manifest]
    link = version_of(manifest).get("previous")
    while link is not None:
        base = f"_allmende/versions/{int(link['number'])}/"
        older = b"".join(client.download(job_id, base + MANIFEST_NAME))
        signature = b"".join(client.download(job_id, base + SIGNATURE_NAME))
        if hashlib.sha256(older).hexdigest() != link["manifest_sha256"]:
            raise IntegrityError(f"{base}{MANIFEST_NAME}: not the manifest its successor names")
        manifest = verify_manifest(older, signature, pinned, chain).manifest
        found.append(manifest)
        link = version_of(manifest).get("previous")
    return found


def versions(args: argparse.Namespace) -> int:
    pinned = normalise_fingerprint(args.fingerprint)
    with ApiClient(args.coordinator, admin_token=reader_token(args)) as client:
        try:
            found = call(
                lambda: _versions(client, client.get_job(args.job).job_id, pinned),
                args.coordinator,
            )
        except IntegrityError as exc:
            raise CliError(f"verification failed: {exc.message}") from None
    rows = []
    for manifest in found:
        version = version_of(manifest)
        removed = version.get("removed", [])
        rows.append(
            {
                "version": version["number"],
                "created_ms": version.get("created_ms", manifest.get("created_ms")),
                "rows": manifest["rows"],
                "merkle_root": manifest["merkle_root"],
                "removed": [{"rows": len(r["ids"]), "reason": r["reason"]} for r in removed],
            }
        )
    if args.json:
        out_json(rows)
        return EXIT_OK
    for row in rows:
        out(
            f"version {row['version']}  {_when(int(row['created_ms']))}  {row['rows']} rows  "
            f"merkle root {row['merkle_root'][:16]}"
        )
        for removal in row["removed"]:
            out(f"    {removal['rows']} row(s) removed: {removal['reason']}")
    return EXIT_OK


def read_ids(path_text: str) -> list[str]:
    """Item ids, one a line (blank lines skipped), as `--ids` names them."""
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"--ids: cannot read {path} ({exc})", EXIT_USAGE) from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise CliError(f"--ids: {path} names no rows (one id a line)", EXIT_USAGE)
    if len(ids) > MAX_IDS:
        raise CliError(f"--ids: at most {MAX_IDS} ids, {path} has {len(ids)}", EXIT_USAGE)
    return ids


def remove(args: argparse.Namespace) -> int:
    token = read_token(args.admin_token_file)
    ids = read_ids(args.ids)
    reason = args.reason.strip()
    if not reason:
        raise CliError("--reason: say why the rows are withdrawn", EXIT_USAGE)
    with ApiClient(args.coordinator, admin_token=token) as client:
        job_id = call(lambda: client.get_job(args.job).job_id, args.coordinator)
        response = call(lambda: client.remove_rows(job_id, ids, reason), args.coordinator)
    if args.json:
        out_json(
            {
                "job_id": job_id,
                "version": response.version,
                "rows_removed": response.rows_removed,
                "rows": response.rows,
                "merkle_root": response.merkle_root,
            }
        )
    else:
        err(f"removed {response.rows_removed} row(s); {response.rows} rows left")
        out(f"published version {response.version}; merkle root {response.merkle_root}")
    return EXIT_OK


def export(args: argparse.Namespace) -> int:
    from allmende.api.export import export_clip_retrieval

    pinned = normalise_fingerprint(args.fingerprint)
    folder = Path(args.folder)
    try:
        report = verify_folder(folder, pinned)
    except IntegrityError as exc:
        raise CliError(f"verification failed: {exc.message}") from None
    rows = export_clip_retrieval(folder, Path(args.out))
    out(f"exported {rows} rows of job {report.job_id} to {args.out} ({args.format} layout)")
    return EXIT_OK
