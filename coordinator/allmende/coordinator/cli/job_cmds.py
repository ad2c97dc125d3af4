"""`allmende job create|status|list`."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from allmende.api.channel import RemoteError
from allmende.api.client import ApiClient
from allmende.cli.common import EXIT_OK, err, out, out_json
from allmende.cli.remote import call
from allmende.cli.tokens import read_token, reader_token
from allmende.coordinator.cli.inputs import Item, read_items
from allmende.coordinator.cli.rule_flags import rule_from_flags
from allmende.protocol.kinds import KINDS
from allmende.v1 import allmende_pb2 as pb

# Items per upload message: well under the 16 MiB message limit for typical texts.
CHUNK_ITEMS = 2000
CHUNK_BYTES = 4 * 1024 * 1024


def upload_requests(
    spec: pb.JobSpec, source: str, items: list[Item]
) -> Iterator[pb.CreateJobRequest]:
    """The CreateJob stream: the spec, then the items in messages of bounded size."""
    yield pb.CreateJobRequest(spec=spec, source_name=source)
    batch: list[pb.InputItem] = []
    size = 0
    for item in items:
        message = pb.InputItem(
            id=item.item_id,
            text=item.text,
            line=item.line,
            url=item.url,
            source_url=item.source_url,
        )
        if item.image is not None:
            message.image = item.image
        batch.append(message)
        size += len(item.text) + len(item.item_id) + len(item.image or b"")
        size += len(item.url) + len(item.source_url) + 16
        if len(batch) >= CHUNK_ITEMS or size >= CHUNK_BYTES:
            yield pb.CreateJobRequest(items=batch)
            batch, size = [], 0
    if batch:
        yield pb.CreateJobRequest(items=batch)


def create(args: argparse.Namespace) -> int:
    token = read_token(args.admin_token_file)
    known = KINDS.get(args.kind)  # an unknown kind is the coordinator's to refuse
    args.model = args.model or (known.default_model if known is not None else "")
    rule = rule_from_flags(args)
    path = Path(args.input)
    items = read_items(path)
    if known is not None and not known.takes_text:
        # An image-only kind: captions in the input (a shard's .txt) are not sent.
        items = [replace(item, text="") for item in items]
    spec = pb.JobSpec(
        name=args.name or path.name,
        kind=args.kind,
        model=args.model,
        redundancy=args.redundancy or 0,
        unit_size=args.unit_size or 0,
        tau=args.tau or 0.0,
        max_replicas=args.max_replicas or 0,
        lease_seconds=args.lease_seconds or 0,
        result_dtype=args.dtype or "",
        gold_fraction=args.gold_fraction,
        rule=rule,
        license=args.license,
    )
    err(f"uploading {len(items)} items from {path.name} to {args.coordinator}")
    with ApiClient(args.coordinator, admin_token=token) as client:
        response = call(
            lambda: client.create_job(upload_requests(spec, path.name, items)), args.coordinator
        )
    err(
        f"created: {response.items} items ({response.unique_items} unique) in "
        f"{response.units} units"
    )
    out(response.job_id)
    return EXIT_OK


def _as_dict(job: pb.JobStatus) -> dict[str, object]:
    return {
        "job_id": job.job_id,
        "name": job.name,
        "state": job.state,
        "kind": job.spec.kind,
        "model": job.spec.model,
        "redundancy": job.spec.redundancy,
        "unit_size": job.spec.unit_size,
        "tau": job.spec.tau,
        "rule": dict(job.spec.rule),
        "license": job.spec.license or "unknown",
        "items": job.items,
        "unique_items": job.unique_items,
        "fetch_rows": job.fetch_rows,
        "units": {
            "total": job.units_total,
            "accepted": job.units_accepted,
            "failed": job.units_failed,
            "in_progress": job.units_in_progress,
        },
        "results": {"received": job.results_received, "rejected": job.results_rejected},
        "volunteers": job.volunteers,
        "min_agreement": job.min_agreement if job.units_accepted else None,
        "created_unix_ms": job.created_unix_ms,
        "completed_unix_ms": job.completed_unix_ms or None,
        "failed_units": [{"unit_id": f.unit_id, "reason": f.reason} for f in job.failed_units],
        "reason": job.reason,
    }


def _measure(kind: str) -> str:
    """What a job's agreement figure measures, from its kind's declaration."""
    spec = KINDS.get(kind)
    return spec.agreement_measure() if spec is not None else "agreement"


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def status(args: argparse.Namespace) -> int:
    with ApiClient(args.coordinator, admin_token=reader_token(args)) as client:
        job = call(lambda: client.get_job(args.job), args.coordinator)
        kept = _rows_kept(client, job)
    if args.json:
        out_json({**_as_dict(job), **({"rows_kept": kept} if kept is not None else {})})
        return EXIT_OK
    pct = 100.0 * job.units_accepted / job.units_total if job.units_total else 0.0
    out(f"job       {job.job_id}  {job.name}")
    out(f"state     {job.state}")
    out(
        f"task      {job.spec.kind} with {job.spec.model}, redundancy {job.spec.redundancy}, "
        f"tau {job.spec.tau}"
    )
    if job.spec.rule:
        rule = ", ".join(f"{name} {value}" for name, value in sorted(job.spec.rule.items()))
        out(f"keep      rows with {rule} (applied to the agreed values; every row is kept)")
    if kept is not None:
        out(f"kept      {kept} of {job.items} rows pass the rule (the dataset's `keep`)")
    out(f"items     {job.items} ({job.unique_items} unique)")
    if job.fetch_rows:
        out(
            f"urls      {job.fetch_rows} rows are fetched from URLs by the volunteers: only "
            "volunteers that opted in (--fetch-urls) take this job"
        )
    out(
        f"units     {job.units_accepted}/{job.units_total} accepted ({pct:.1f}%), "
        f"{job.units_in_progress} in progress, {job.units_failed} failed"
    )
    out(
        f"results   {job.results_received} received, {job.results_rejected} rejected, "
        f"{job.volunteers} volunteers"
    )
    if job.units_accepted:
        out(f"agreement lowest {_measure(job.spec.kind)} {job.min_agreement:.6f}")
    out(f"created   {_when(job.created_unix_ms)}   completed {_when(job.completed_unix_ms)}")
    if job.reason:
        out(f"reason    {job.reason}")
    for failed in job.failed_units:
        out(f"failed    {failed.unit_id}: {failed.reason}")
    return EXIT_OK


def _rows_kept(client: ApiClient, job: pb.JobStatus) -> int | None:
    """How many rows a finished filtering job's dataset keeps, from its published manifest
    (None for a job without a rule or not published yet). `dataset pull` verifies the
    manifest's signature; this figure is shown as the coordinator reports it."""
    if not job.spec.rule or job.state != "complete":
        return None
    try:
        manifest = json.loads(client.manifest(job.job_id).manifest)
    except (RemoteError, ValueError):
        return None  # the status itself is still worth showing
    kept = manifest.get("rows_kept") if isinstance(manifest, dict) else None
    return kept if isinstance(kept, int) else None


def list_jobs(args: argparse.Namespace) -> int:
    with ApiClient(args.coordinator, admin_token=reader_token(args)) as client:
        jobs = call(client.list_jobs, args.coordinator)
    if args.json:
        out_json([_as_dict(job) for job in jobs])
        return EXIT_OK
    if not jobs:
        out("no jobs")
        return EXIT_OK
    out(f"{'JOB':<18} {'STATE':<13} {'UNITS':>13} {'ITEMS':>9}  NAME")
    for job in jobs:
        units = f"{job.units_accepted}/{job.units_total}"
        out(f"{job.job_id:<18} {job.state:<13} {units:>13} {job.items:>9}  {job.name}")
    return EXIT_OK
