"""`allmende dataset index|search`: nearest-neighbour search over a dataset folder."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from allmende.cli.common import EXIT_OK, out, out_json
from allmende.research.index import build
from allmende.research.pinned import computers
from allmende.research.search import search as search_folder


def index(args: argparse.Namespace) -> int:
    info = build(Path(args.folder), args.column, args.type)
    if args.json:
        out_json(asdict(info))
    else:
        out(
            f"indexed {info.rows} rows of {info.column!r} ({info.dims} dims, {info.index_type}) "
            f"in {info.build_seconds:.1f} s; merkle root {info.merkle_root}"
        )
    return EXIT_OK


def search(args: argparse.Namespace) -> int:
    hits = search_folder(
        Path(args.folder),
        args.query,
        args.k,
        args.column,
        computers(device=args.device, batch_size=args.batch_size),
    )
    if args.json:
        out_json([{"id": h.id, "score": h.score, "text": h.text} for h in hits])
        return EXIT_OK
    for hit in hits:
        out(f"{hit.score:.4f}  {hit.id}  {hit.text}")
    return EXIT_OK
