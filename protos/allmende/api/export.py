"""Exporting a verified dataset folder for other tools.

`clip-retrieval`: the layout clip-retrieval's `clip_inference` writes and its `clip_index`
(and autofaiss) read: `img_emb/img_emb_N.npy` and `text_emb/text_emb_N.npy` (float32, one row
per dataset row) and `metadata/metadata_N.parquet` (every other column, the same rows in the
same order; the caption as `caption` and, where the dataset has one, the image's `url`, as
clip-retrieval names them), one N per dataset shard. Only a verified folder is exported:
the caller checks the manifest's signature and every shard's sha256 first (`verify_folder`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from allmende.protocol.errors import InvalidArgument
from allmende.protocol.manifest import MANIFEST_NAME, meta_dir, shard_path

FORMATS = ("clip-retrieval",)
EMBEDDINGS = {"image_embedding": "img_emb", "text_embedding": "text_emb"}
RENAMED = {"text": "caption"}


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks()
    width = array.type.list_size
    values = array.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float32).reshape(-1, width)


def export_clip_retrieval(folder: Path, out: Path) -> int:
    """Write `folder`'s shards in clip-retrieval's layout under `out`; returns the rows.
    A dataset without an `image_embedding` column (a text kind's) is refused by name."""
    manifest = json.loads((meta_dir(folder) / MANIFEST_NAME).read_bytes())
    shards = [shard["name"] for shard in manifest["shards"]]
    rows = 0
    for n, name in enumerate(shards):
        table = pq.read_table(shard_path(folder, name))
        if "image_embedding" not in table.column_names:
            raise InvalidArgument(
                "--format",
                "a dataset with an image_embedding column for clip-retrieval (clip-filter or "
                f"embed-image), {manifest['job'].get('kind', 'this')} has none",
            )
        for column, sub in EMBEDDINGS.items():
            if column in table.column_names:
                (out / sub).mkdir(parents=True, exist_ok=True)
                np.save(out / sub / f"{sub}_{n}.npy", _matrix(table.column(column)))
        (out / "metadata").mkdir(parents=True, exist_ok=True)
        metadata = table.drop_columns([c for c in EMBEDDINGS if c in table.column_names])
        # clip-retrieval's own names: the caption is `caption` (a URL is `url` already).
        metadata = metadata.rename_columns(
            [RENAMED.get(name, name) for name in metadata.column_names]
        )
        pq.write_table(metadata, out / "metadata" / f"metadata_{n}.parquet")
        rows += table.num_rows
    return rows
