"""`dataset search`: embed a query with the dataset's own pinned model and return the
nearest rows of its stored index."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds.columns import VectorColumn
from allmende.protocol.kinds.compute import Computers
from allmende.research.folder import read_manifest, read_rows, shards
from allmende.research.index import load, search_index
from allmende.research.pinned import dataset_model


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # cosine similarity with the query
    text: str  # the row's input (its first input column)
    position: int  # the row's place in the dataset


def search(
    folder: Path,
    query: str,
    k: int = 10,
    column: str = "embedding",
    computers: Computers | None = None,
) -> list[Hit]:
    if k < 1:
        raise InvalidArgument("-k", f"a number of rows >= 1, got {k}")
    manifest = read_manifest(folder)
    pinned = dataset_model(manifest)
    vector_columns = [c.name for c, _, _ in pinned.shape.columns if isinstance(c, VectorColumn)]
    if column not in vector_columns:
        raise InvalidArgument(
            "--column",
            f"a vector column that {pinned.kind.name} computes "
            f"({', '.join(vector_columns) or 'none'}), got {column!r}",
        )
    index, _ = load(folder, column)
    if computers is None:
        from allmende.research.pinned import computers as make

        computers = make()
    matrix = computers.run(pinned.kind.name, pinned.model.name, [query])
    vector = pinned.shape.split(matrix)[column]
    scores, positions = search_index(index, vector, k)
    found = [(int(p), float(s)) for p, s in zip(positions[0], scores[0], strict=True) if p >= 0]
    if not found:
        return []
    wanted = np.array(sorted({p for p, _ in found}), dtype=np.int64)
    text_column = pinned.kind.inputs[0]
    rows = read_rows(shards(folder, manifest), wanted, ["id", text_column])
    by_position = {
        int(p): (str(i), "" if t is None else str(t))
        for p, i, t in zip(wanted, rows["id"], rows[text_column], strict=True)
    }
    return [
        Hit(id=by_position[p][0], score=s, text=by_position[p][1], position=p) for p, s in found
    ]
