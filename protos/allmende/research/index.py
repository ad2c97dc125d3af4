"""A nearest-neighbour index over a dataset's embedding column, kept beside the data.

faiss (faiss-cpu) builds it, with defaults chosen by row count in the manner of autofaiss:
exact search (`IndexFlatIP`) below FLAT_BELOW rows, where a query scans the rows in a few
milliseconds anyway, and an HNSW graph (`IndexHNSWFlat`, M=32) above, which keeps recall@10
against exact search above 0.95 (bench/search.py). Rows are unit-normalised, so inner
product is cosine. Every row's vector is kept whole (no quantisation): 1.5 KiB a row at 384
dims plus the graph, so a billion-row set would need IVF-PQ, which this does not build yet.

The index lives in `_allmende/index/<column>.faiss` (Parquet readers skip folders that start
with an underscore), with `<column>.json` recording what it was built from: the column, row
count, width, index type and the manifest's Merkle root. A search refuses an index whose
root is not the dataset's: it would answer with another version's rows.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from allmende.protocol.errors import FailedPrecondition, IntegrityError, InvalidArgument
from allmende.research.folder import own_dir, read_manifest, read_vectors, shards

INDEX_TYPES = ("auto", "flat", "hnsw")
FLAT_BELOW = 20_000  # rows: exact search below, HNSW from here on
HNSW_M = 32  # graph degree: recall and memory both grow with it (autofaiss uses 32 too)
# faiss's default. Measured on 20,000 clustered 384-d rows: 80 raised recall@10 only from
# 0.988 to 0.990 (efSearch 128) and took 1.7 times as long to build.
EF_CONSTRUCTION = 40
# Candidates a query visits (at least 2 * k are). On the same rows recall@10 was 0.973 at 64,
# 0.988 at 128, 0.996 at 256 (2.7 ms a query on a busy 2-core machine), 0.9996 at 512.
EF_SEARCH = 256


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise FailedPrecondition(
            f"search needs faiss (pip install 'allmende[dataset]'): {exc}"
        ) from None
    return faiss


@dataclass(frozen=True)
class IndexInfo:
    column: str
    rows: int
    dims: int
    index_type: str  # flat or hnsw
    merkle_root: str
    build_seconds: float
    hnsw_m: int = 0
    ef_construction: int = 0

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()


def choose_type(rows: int, asked: str = "auto") -> str:
    if asked not in INDEX_TYPES:
        raise InvalidArgument("--type", f"one of {', '.join(INDEX_TYPES)}, got {asked!r}")
    if asked != "auto":
        return asked
    return "flat" if rows < FLAT_BELOW else "hnsw"


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32, contiguous."""
    x = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x /= np.where(norms > 0, norms, 1.0)
    return x


def build_index(vectors: np.ndarray, index_type: str) -> Any:
    """A faiss index over `vectors` (rows x dims) for cosine similarity."""
    faiss = _faiss()
    x = unit_rows(vectors)
    dims = x.shape[1]
    if index_type == "flat":
        index = faiss.IndexFlatIP(dims)
    else:
        index = faiss.IndexHNSWFlat(dims, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(x)
    return index


def search_index(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, positions), each queries x k; a position of -1 is no row (k > rows)."""
    faiss = _faiss()
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = max(EF_SEARCH, 2 * k)
    scores, positions = index.search(unit_rows(queries), k)
    return np.asarray(scores), np.asarray(positions)


def index_paths(folder: Path, column: str) -> tuple[Path, Path]:
    base = own_dir(folder) / "index"
    return base / f"{column}.faiss", base / f"{column}.json"


def build(folder: Path, column: str = "embedding", index_type: str = "auto") -> IndexInfo:
    """Build and store the index of `folder`'s `column`; returns what was built."""
    if index_type not in INDEX_TYPES:
        raise InvalidArgument("--type", f"one of {', '.join(INDEX_TYPES)}, got {index_type!r}")
    manifest = read_manifest(folder)
    vectors = read_vectors(shards(folder, manifest), column)
    if vectors.shape[0] == 0:
        raise InvalidArgument("folder", f"a dataset with rows; {folder} has none")
    chosen = choose_type(vectors.shape[0], index_type)
    started = time.perf_counter()
    index = build_index(vectors, chosen)
    info = IndexInfo(
        column=column,
        rows=int(vectors.shape[0]),
        dims=int(vectors.shape[1]),
        index_type=chosen,
        merkle_root=str(manifest.get("merkle_root", "")),
        build_seconds=round(time.perf_counter() - started, 3),
        hnsw_m=HNSW_M if chosen == "hnsw" else 0,
        ef_construction=EF_CONSTRUCTION if chosen == "hnsw" else 0,
    )
    index_file, info_file = index_paths(folder, column)
    index_file.parent.mkdir(parents=True, exist_ok=True)
    partial = index_file.with_name(f".{index_file.name}.part")
    _faiss().write_index(index, str(partial))
    os.replace(partial, index_file)
    partial = info_file.with_name(f".{info_file.name}.part")
    partial.write_bytes(info.to_json())
    os.replace(partial, info_file)
    return info


def load(folder: Path, column: str = "embedding") -> tuple[Any, IndexInfo]:
    """The stored index of `column`, refused when it was built for another version."""
    manifest = read_manifest(folder)
    index_file, info_file = index_paths(folder, column)
    if not index_file.is_file() or not info_file.is_file():
        raise FailedPrecondition(
            f"{folder} has no index of column {column!r} ({index_file}); build it with "
            f"`allmende dataset index {folder} --column {column}`"
        )
    try:
        info = IndexInfo(**dict(json.loads(info_file.read_bytes())))
    except (ValueError, TypeError, RecursionError) as exc:
        raise IntegrityError(f"{info_file} is not an index description ({exc})") from None
    root = str(manifest.get("merkle_root", ""))
    if info.merkle_root != root:
        raise FailedPrecondition(
            f"the index in {index_file.parent} was built for another version of the dataset "
            f"(merkle root {info.merkle_root}; this one is {root}); rebuild it with "
            f"`allmende dataset index {folder} --column {column}`"
        )
    index = _faiss().read_index(str(index_file))
    if int(index.ntotal) != info.rows or int(index.d) != info.dims:
        raise IntegrityError(f"{index_file} does not match {info_file}")
    return index, info
