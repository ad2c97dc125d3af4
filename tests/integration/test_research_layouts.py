"""The researcher's tools read both folder layouts: everything in the root (part-*.parquet,
manifest.json) and Hugging Face's (data/*.parquet, _allmende/manifest.json). The rows here
are made up (every embedding the same unit vector), so recomputing them must disagree."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from allmende.protocol.manifest import (
    FORMAT,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    encode_manifest,
    merkle_root,
    sha256_file,
    sign_manifest,
)
from allmende.protocol.models import DEFAULT_MODEL, ModelRegistry
from allmende.protocol.signing import SigningKey
from allmende.research.index import build
from allmende.research.recompute import recompute
from allmende.research.search import search


def signed_folder(folder: Path, key: SigningKey) -> None:
    model = ModelRegistry().get(DEFAULT_MODEL)
    folder.mkdir()
    vector = [1.0] + [0.0] * (model.dims - 1)
    table = pa.table({
        "id": ["a", "b"],
        "text": ["one", "two"],
        "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(vector * 2, pa.float32()), model.dims
        ),
    })
    shard = folder / "part-00000.parquet"
    pq.write_table(table, shard)
    shards = [{"name": shard.name, "rows": 2, "bytes": shard.stat().st_size,
               "sha256": sha256_file(shard)}]
    manifest = encode_manifest({
        "format": FORMAT,
        "job": {"id": "job-test", "kind": "embed-text", "tau": 0.999, "result_dtype": "float16"},
        "model": {"name": model.name, "weights_sha256": model.weights_sha256,
                  "dims": model.dims},
        "rows": 2,
        "shards": shards,
        "merkle_root": merkle_root([s["sha256"] for s in shards]),
        "coordinator_fingerprint": key.fingerprint,
    })
    (folder / MANIFEST_NAME).write_bytes(manifest)
    (folder / SIGNATURE_NAME).write_bytes(sign_manifest(key, manifest))


def hugging_face_layout(folder: Path) -> None:
    (folder / "data").mkdir()
    (folder / "_allmende").mkdir()
    for shard in folder.glob("*.parquet"):
        shard.rename(folder / "data" / shard.name)
    for name in ("manifest.json", "manifest.sig"):
        (folder / name).rename(folder / "_allmende" / name)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["root", "hugging-face"])
def test_recompute_and_index_read_either_layout(
    tmp_path: Path, shared_computer: object, layout: str
) -> None:
    folder = tmp_path / "dataset"
    signed_folder(folder, SigningKey.generate())
    if layout == "hugging-face":
        hugging_face_layout(folder)
        assert not list(folder.glob("*.parquet"))
    report = recompute(folder, fraction=1.0, computers=shared_computer, seed=5)  # type: ignore[arg-type]
    assert (report.model, report.rows_checked) == (DEFAULT_MODEL, 2)
    assert [(d.id, d.column) for d in report.disagreements] == [
        ("a", "embedding"), ("b", "embedding")
    ]
    info = build(folder)
    assert (info.rows, info.index_type) == (2, "flat")
    assert (folder / "_allmende" / "index" / "embedding.faiss").is_file()
    hits = search(folder, "one", k=5, computers=shared_computer)  # type: ignore[arg-type]
    assert sorted((h.id, h.text) for h in hits) == [("a", "one"), ("b", "two")]
