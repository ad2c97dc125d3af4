"""Where a dataset folder keeps its files, in either layout, and reading rows from its shards.

The first layout kept everything in the folder's root (`part-*.parquet`, `manifest.json`,
`manifest.sig`); the Hugging Face layout keeps the shards under `data/` and Allmende's own
files under `_allmende/`, where Parquet readers do not look. Every reader here finds files
through these functions, so both layouts work and the layout is decided in one place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from allmende.protocol.errors import FailedPrecondition, IntegrityError, InvalidArgument
from allmende.protocol.manifest import MANIFEST_NAME

OWN_DIR = "_allmende"  # Allmende's own files in the Hugging Face layout
DATA_DIR = "data"


def manifest_path(folder: Path) -> Path:
    """The manifest: `_allmende/manifest.json`, else `manifest.json` in the folder's root."""
    nested = folder / OWN_DIR / MANIFEST_NAME
    return nested if nested.is_file() else folder / MANIFEST_NAME


def own_dir(folder: Path) -> Path:
    """Where Allmende keeps files of its own beside the data, out of Parquet readers' way."""
    return folder / OWN_DIR


def shard_path(folder: Path, name: str) -> Path:
    """A shard the manifest names: as named (relative to the folder), else under `data/`."""
    direct = folder / name
    if direct.is_file():
        return direct
    nested = folder / DATA_DIR / Path(name).name
    return nested if nested.is_file() else direct


def read_manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest as JSON. Checking its signature is `verify_folder`'s work; the
    commands that trust it say so."""
    path = manifest_path(folder)
    if not path.is_file():
        raise FailedPrecondition(f"{path} is missing: {folder} is not a dataset folder")
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:
        raise IntegrityError(f"{path} is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise IntegrityError(f"{path}: not a dataset manifest (no list of shards)")
    return manifest


@dataclass(frozen=True)
class Shard:
    path: Path
    rows: int
    first: int  # the dataset position of its first row


def shards(folder: Path, manifest: dict[str, Any]) -> list[Shard]:
    """The manifest's shards in order, with their row counts and where each starts."""
    found = []
    start = 0
    for entry in manifest["shards"]:
        rows = int(entry.get("rows", 0))
        found.append(Shard(shard_path(folder, str(entry["name"])), rows, start))
        start += rows
    return found


def total_rows(parts: Sequence[Shard]) -> int:
    return sum(part.rows for part in parts)


def schema_names(parts: Sequence[Shard]) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.read_schema(parts[0].path).names) if parts else []


def read_rows(
    parts: Sequence[Shard], positions: np.ndarray, columns: Sequence[str]
) -> dict[str, list[Any]]:
    """The values of `columns` at dataset `positions` (sorted ascending), as Python values:
    lists for vectors, strings for labels, floats for scores. Reads only the named columns
    of the shards that hold a position."""
    import pyarrow.parquet as pq

    names = schema_names(parts)
    missing = [c for c in columns if c not in names]
    if missing:
        raise InvalidArgument(
            "column", f"a column of the dataset ({', '.join(names)}); no {missing[0]!r}"
        )
    values: dict[str, list[Any]] = {c: [] for c in columns}
    for part in parts:
        local = positions[(positions >= part.first) & (positions < part.first + part.rows)]
        if not local.size:
            continue
        table = pq.read_table(part.path, columns=list(columns)).take(local - part.first)
        for column in columns:
            values[column].extend(table.column(column).to_pylist())
    return values


def read_vectors(parts: Sequence[Shard], column: str) -> np.ndarray:
    """A vector column of every shard as one float32 matrix (rows x width), in dataset order."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    names = schema_names(parts)
    if column not in names:
        raise InvalidArgument(
            "--column", f"a column of the dataset ({', '.join(names)}); no {column!r}"
        )
    blocks = []
    width = -1
    for part in parts:
        chunked = pq.read_table(part.path, columns=[column]).column(column)
        kind = chunked.type
        if not (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind)) or not (
            pa.types.is_floating(kind.value_type)
        ):
            raise InvalidArgument(
                "--column", f"a vector column (a list of floats); {column!r} is {kind}"
            )
        if chunked.null_count:
            raise IntegrityError(f"{part.path.name}: column {column!r} has empty rows")
        flat = pc.list_flatten(chunked).to_numpy().astype(np.float32, copy=False)
        rows = len(chunked)
        if rows and flat.size % rows:
            raise IntegrityError(f"{part.path.name}: rows of {column!r} differ in length")
        block = flat.reshape(rows, -1) if rows else flat.reshape(0, max(width, 0))
        if rows and width not in (-1, block.shape[1]):
            raise IntegrityError(
                f"{part.path.name}: {column!r} is {block.shape[1]} wide, not {width}"
            )
        width = block.shape[1] if rows else width
        blocks.append(block)
    if not blocks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)
