"""The researcher's tools read both folder layouts: everything in the root (part-*.parquet,
manifest.json) and Hugging Face's (data/*.parquet, _allmende/manifest.json). The rows here
are made up (every embedding the same unit vector), so recomputing them must disagree."""

from __future__ import annotations

from pathlib import Path

import pytest

from allmende.protocol.models import DEFAULT_MODEL
from allmende.protocol.signing import SigningKey
from allmende.research.index import build
from allmende.research.recompute import recompute
from allmende.research.search import search
from tests.integration.test_recompute_needs import signed_folder


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
