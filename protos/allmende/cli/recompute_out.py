"""`dataset verify --recompute`: recompute a sample with the pinned model, print what it
found, exit 1 when any row disagrees."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from allmende.cli.common import EXIT_FAILED, EXIT_OK, err, out, out_json
from allmende.research.recompute import RecomputeReport, recompute


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def recompute_and_report(args: argparse.Namespace, folder: Path, checked: dict[str, Any]) -> int:
    live = not args.json and sys.stderr.isatty()
    if not args.json:
        err("recomputing a sample of rows with the dataset's pinned model ...")

    def progress(done: int) -> None:
        if live:
            print(f"\r  {done} rows recomputed", end="", file=sys.stderr, flush=True)

    images = args.images
    model_dir = args.model_dir
    report = recompute(
        folder,
        fraction=args.recompute,
        rows=args.recompute_rows,
        seed=args.seed,
        progress=progress,
        images=[Path(p) for p in images] if images else None,
        model_dir=Path(model_dir) if model_dir else None,
        device=args.device,
        batch_size=args.batch_size,
    )
    if live:
        print(file=sys.stderr, flush=True)
    if args.json:
        out_json(checked | {"ok": report.ok, "recompute": as_json(report)})
    else:
        print_report(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def as_json(report: RecomputeReport) -> dict[str, Any]:
    return {
        "kind": report.kind,
        "model": report.model,
        "tau": report.tau,
        "seed": report.seed,
        "rows_total": report.rows_total,
        "rows_checked": report.rows_checked,
        "rows_skipped": report.rows_skipped,
        "image_mismatches": [
            {"id": m.id, "supplied_sha256": m.supplied_sha256, "row_sha256": m.row_sha256}
            for m in report.image_mismatches
        ],
        "lowest_agreement": _finite(report.lowest_agreement),
        "measure": report.measure,
        "lowest_id": report.lowest_id,
        "disagreements": [
            {
                "id": d.id,
                "column": d.column,
                "measure": _finite(d.measure),
                "threshold": d.threshold,
            }
            for d in report.disagreements
        ],
    }


def print_report(report: RecomputeReport) -> None:
    out(
        f"recomputed {report.rows_checked} of {report.rows_total} rows with {report.model} "
        f"({report.kind}, seed {report.seed}); lowest {report.measure} "
        f"{report.lowest_agreement:.6f} (row {report.lowest_id or '-'}), tau {report.tau}"
    )
    if report.rows_skipped:
        out(
            f"skipped {report.rows_skipped} sampled row(s) without a supplied image: the "
            "dataset holds no image bytes (give the job's input files with --images; a URL "
            "row's image is recomputed only from bytes supplied for its id)"
        )
    for m in report.image_mismatches:
        out(
            f"not the image this row was computed from: row {m.id}: the supplied image's "
            f"sha256 is {m.supplied_sha256}, the row's image_sha256 {m.row_sha256}; not "
            "recomputed"
        )
    for d in report.disagreements:
        measure = f"{d.measure:.6f}" if math.isfinite(d.measure) else "unreadable"
        out(f"disagrees: row {d.id} column {d.column}: {measure} < {d.threshold:g}")
    if report.disagreements:
        rows = len({d.id for d in report.disagreements})
        err(f"allmende: recompute found {rows} row(s) that disagree with the dataset")
    if report.image_mismatches:
        err(
            f"allmende: {len(report.image_mismatches)} supplied image(s) are not the images "
            "their rows were computed from"
        )
    if not report.disagreements:
        out("every recomputed row agrees with the dataset")
