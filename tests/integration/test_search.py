"""`allmende dataset index|search` on a real dataset (a whole embed-text job with real
volunteers), checked against exact search done here with numpy; recall@10 of the HNSW index
against exact search on synthetic and real STS-B embeddings; bad input refused by name."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from allmende.cli.main import main
from allmende.protocol.models import DEFAULT_MODEL
from allmende.protocol.signing import SigningKey
from allmende.research.index import build_index, search_index, unit_rows
from tests.integration.research_data import make_dataset, republish

QUERY = "A man is playing a guitar."


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def dataset(
    tmp_path_factory: pytest.TempPathFactory, shared_computer: object, stsb_sentences: list[str]
) -> Iterator[tuple[Path, SigningKey]]:
    texts = list(dict.fromkeys(stsb_sentences))[:300]
    ids = [f"s{i:03d}" for i in range(len(texts))]
    yield make_dataset(tmp_path_factory.mktemp("search"), shared_computer, texts, ids,
                       unit_size=64)


def rows(folder: Path) -> dict[str, list[object]]:
    shards = sorted(str(p) for p in folder.rglob("*.parquet") if "_allmende" not in p.parts)
    return pq.ParquetDataset(shards).read().to_pydict()


@pytest.mark.slow
def test_search_finds_what_exact_search_finds_embedding_the_query_with_the_pinned_model(
    capsys: pytest.CaptureFixture[str], dataset: tuple[Path, SigningKey],
    shared_computer: object, tmp_path: Path,
) -> None:
    source, key = dataset
    folder = tmp_path / "copy"
    shutil.copytree(source, folder)
    code, out, err = run_cli(capsys, "dataset", "index", str(folder), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert (info["rows"], info["dims"], info["index_type"]) == (300, 384, "flat")
    stored = sorted(p.name for p in (folder / "_allmende" / "index").iterdir())
    assert stored == ["embedding.faiss", "embedding.json"]
    # Out of the data path: the folder still verifies, and Parquet readers see only shards.
    assert main(["dataset", "verify", str(folder), "--fingerprint", key.fingerprint]) == 0

    code, out, err = run_cli(capsys, "dataset", "search", str(folder), QUERY, "-k", "5",
                             "--device", "cpu", "--json")
    assert code == 0, err
    hits = json.loads(out)
    table = rows(folder)
    vectors = unit_rows(np.asarray(table["embedding"], dtype=np.float32))
    query = shared_computer.run("embed-text", DEFAULT_MODEL, [QUERY])[0]  # type: ignore[attr-defined]
    cosines = vectors @ (query / np.linalg.norm(query))
    best = np.argsort(-cosines)[:5]
    assert [h["id"] for h in hits] == [table["id"][i] for i in best]
    assert [h["text"] for h in hits] == [table["text"][i] for i in best]
    assert np.allclose([h["score"] for h in hits], cosines[best], atol=1e-5)
    assert "guitar" in hits[0]["text"].lower()

    code, out, _ = run_cli(capsys, "dataset", "search", str(folder), QUERY, "-k", "2")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].split()[1] == hits[0]["id"]
    # More rows asked for than there are: all of them, no placeholders.
    code, out, _ = run_cli(capsys, "dataset", "search", str(folder), QUERY, "-k", "1000",
                           "--json")
    assert code == 0 and len({h["id"] for h in json.loads(out)}) == 300


@pytest.mark.slow
def test_index_and_search_refuse_bad_input_by_name(
    capsys: pytest.CaptureFixture[str], dataset: tuple[Path, SigningKey], tmp_path: Path,
) -> None:
    source, key = dataset
    folder = tmp_path / "copy"
    shutil.copytree(source, folder)
    code, _, err = run_cli(capsys, "dataset", "index", str(folder), "--column", "nope")
    assert code == 2 and "--column" in err and "no 'nope'" in err
    code, _, err = run_cli(capsys, "dataset", "index", str(folder), "--column", "text")
    assert code == 2 and "a vector column" in err and "'text' is string" in err
    code, _, err = run_cli(capsys, "dataset", "search", str(folder), QUERY)
    assert code == 1 and "no index of column 'embedding'" in err and "dataset index" in err
    code, _, err = run_cli(capsys, "dataset", "search", str(folder), QUERY, "--column", "text")
    assert code == 2 and "a vector column that embed-text computes (embedding)" in err
    assert not (folder / "_allmende" / "index").exists()  # nothing written by the refusals

    assert main(["dataset", "index", str(folder)]) == 0
    # A new version of the dataset (a row withdrawn, signed by the coordinator): the index
    # of the old one would answer with rows that are gone.
    republish(folder, key, lambda columns: [values.pop() for values in columns.values()])
    code, _, err = run_cli(capsys, "dataset", "search", str(folder), QUERY)
    assert code == 1 and "built for another version of the dataset" in err
    assert main(["dataset", "index", str(folder)]) == 0
    code, out, _ = run_cli(capsys, "dataset", "search", str(folder), QUERY, "--json",
                           "--device", "cpu")
    assert code == 0 and len(json.loads(out)) == 10


def clustered(rows: int, dims: int, seed: int, centres: int = 500) -> np.ndarray:
    """Unit vectors around random centres, as embeddings cluster by topic."""
    rng = np.random.default_rng(seed)
    middle = unit_rows(rng.standard_normal((centres, dims)).astype(np.float32))
    noise = rng.standard_normal((rows, dims)).astype(np.float32) / np.sqrt(dims)
    return unit_rows(middle[rng.integers(0, centres, rows)] + noise)


def recall_at_10(base: np.ndarray, queries: np.ndarray) -> float:
    _, exact = search_index(build_index(base, "flat"), queries, 10)
    _, found = search_index(build_index(base, "hnsw"), queries, 10)
    return sum(len(set(f) & set(e)) for f, e in zip(found.tolist(), exact.tolist(),
                                                     strict=True)) / exact.size


def test_hnsw_recall_at_10_on_a_synthetic_set() -> None:
    """bench/search.py measures the same on 100,000 rows."""
    data = clustered(20_200, 384, seed=3)
    assert recall_at_10(data[:20_000], data[20_000:]) >= 0.95


@pytest.mark.slow
def test_hnsw_recall_at_10_on_real_stsb_embeddings(
    shared_computer: object, stsb_sentences: list[str]
) -> None:
    """bench/search.py measures the same on all 13,227 STS-B train and dev sentences."""
    unique = list(dict.fromkeys(stsb_sentences))[:1500]
    vectors = shared_computer.run("embed-text", DEFAULT_MODEL, unique)  # type: ignore[attr-defined]
    assert recall_at_10(vectors[200:], vectors[:200]) >= 0.95
