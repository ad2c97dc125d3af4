"""`allmende dataset pull|verify` (with `--recompute`, the sample recomputed: recompute_out.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from allmende.api.client import ApiClient
from allmende.api.dataset import pull as pull_dataset
from allmende.cli.common import EXIT_OK, CliError, err, out, out_json
from allmende.cli.remote import call
from allmende.cli.tokens import reader_token
from allmende.protocol.errors import IntegrityError
from allmende.protocol.manifest import verify_folder
from allmende.protocol.signing import normalise_fingerprint


def pull(args: argparse.Namespace) -> int:
    pinned = normalise_fingerprint(args.fingerprint)
    out_dir = Path(args.out)
    last = {"name": ""}

    def progress(name: str, done: int, total: int) -> None:
        if done == total and last["name"] != name:
            last["name"] = name
            err(f"  {name}: {total} bytes, sha256 ok")

    with ApiClient(args.coordinator, admin_token=reader_token(args)) as client:
        try:
            report = call(
                lambda: pull_dataset(client, args.job, pinned, out_dir, progress), args.coordinator
            )
        except IntegrityError as exc:
            raise CliError(f"verification failed: {exc.message}") from None
    out(f"pulled {report.rows} rows in {report.shards} shard(s) to {out_dir}")
    out(f"signature and every sha256 verified; merkle root {report.merkle_root}")
    return EXIT_OK


def verify(args: argparse.Namespace) -> int:
    pinned = normalise_fingerprint(args.fingerprint)
    folder = Path(args.folder)
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
    }
    recomputing = args.recompute is not None or args.recompute_rows is not None
    if not args.json:
        out(
            f"ok: {report.rows} rows in {report.shards} shard(s), job {report.job_id}; "
            f"signature, sha256 of every shard and merkle root verified"
        )
    if not recomputing:
        if args.json:
            out_json(checked)
        return EXIT_OK
    from allmende.cli.recompute_out import recompute_and_report

    return recompute_and_report(args, folder, checked)
