"""Benchmark `dataset index|search`: build time, query latency, memory and recall@10 of the
index `allmende dataset index` builds, against exact search.

Two sets: a synthetic one (``--rows``, default 100,000 unit vectors of 384 dims drawn
around 2,000 random centres (``--centres``), as sentence embeddings cluster by topic;
queries drawn from the same distribution), and the real STS-B sentences (tests/data/stsb,
train and dev, deduplicated), embedded with all-MiniLM-L6-v2 as an embed-text job would
(needs allmende[volunteer]; skipped with --no-stsb), 500 of them held out as queries.

For each set it reports the index type chosen by row count (auto) and, where auto chose
exact search, HNSW forced too, so its recall is measured on real rows as well. The goal is
recall@10 >= 0.95; the script exits non-zero when it is missed.

    python bench/search.py [--rows 100000] [--queries 1000] [--centres 2000] [--no-stsb]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT / "tests" / "data" / "stsb"
GOAL = 0.95
K = 10

if importlib.util.find_spec("allmende") is None or (
    importlib.util.find_spec("allmende.research") is None
):
    sys.path[:0] = [str(ROOT / part) for part in ("client", "coordinator", "protos")]

import numpy as np  # noqa: E402

from allmende.research.index import (  # noqa: E402
    build_index,
    choose_type,
    search_index,
    unit_rows,
)


def clustered(rows: int, dims: int, seed: int, centres: int = 2000) -> np.ndarray:
    """Unit vectors around random centres (cosine to their centre about 0.7)."""
    rng = np.random.default_rng(seed)
    middle = unit_rows(rng.standard_normal((centres, dims)).astype(np.float32))
    picks = rng.integers(0, centres, rows)
    noise = rng.standard_normal((rows, dims)).astype(np.float32) / np.sqrt(dims)
    return unit_rows(middle[picks] + noise)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(set(f) & set(e)) for f, e in zip(found.tolist(), exact.tolist(), strict=True))
    return hits / exact.size


def rss_mib() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def measure(name: str, base: np.ndarray, queries: np.ndarray, index_type: str) -> float:
    import faiss

    exact_index = build_index(base, "flat")
    _, exact = search_index(exact_index, queries, K)
    before = rss_mib()
    started = time.perf_counter()
    index = build_index(base, index_type)
    built = time.perf_counter() - started
    grown = rss_mib() - before
    size = faiss.serialize_index(index).size / 2**20
    _, found = search_index(index, queries, K)  # batch: every query at once
    singles = []
    for row in queries[:200]:
        started = time.perf_counter()
        search_index(index, row[None, :], K)
        singles.append(time.perf_counter() - started)
    recall = recall_at_k(found, exact)
    print(
        f"{name}: {base.shape[0]:,} rows x {base.shape[1]}, {index_type}: build {built:.1f} s, "
        f"query {np.median(singles) * 1000:.2f} ms median (p99 "
        f"{np.percentile(singles, 99) * 1000:.2f} ms), index {size:.0f} MiB on disk, "
        f"resident memory +{grown:.0f} MiB, recall@{K} {recall:.4f}",
        flush=True,
    )
    return recall


def stsb_vectors() -> np.ndarray:
    from allmende.protocol.kinds.compute import Computers
    from allmende.protocol.models import DEFAULT_MODEL, ModelRegistry

    texts: list[str] = []
    for split in ("train", "dev"):
        with (STSB / f"sts-{split}.csv").open(encoding="utf-8") as fh:
            for fields in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
                texts += fields[5:7]
    unique = list(dict.fromkeys(texts))
    started = time.perf_counter()
    vectors = Computers(ModelRegistry()).run("embed-text", DEFAULT_MODEL, unique)
    print(f"STS-B: embedded {len(unique):,} sentences in {time.perf_counter() - started:.1f} s")
    return vectors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument(
        "--centres",
        type=int,
        default=2000,
        help="clusters of the synthetic set; as many as rows: no structure, the worst case",
    )
    parser.add_argument("--no-stsb", action="store_true")
    args = parser.parse_args()
    import faiss

    print(
        f"Python {platform.python_version()}, faiss {version('faiss-cpu')}, "
        f"{os.cpu_count()} CPUs, {faiss.omp_get_max_threads()} faiss threads"
    )
    recalls = []
    data = clustered(args.rows + args.queries, 384, seed=7, centres=args.centres)
    base, queries = data[: args.rows], data[args.rows :]
    chosen = choose_type(args.rows)
    recalls.append(measure("synthetic", base, queries, chosen))
    if not args.no_stsb:
        vectors = stsb_vectors()
        base, queries = vectors[500:], vectors[:500]
        chosen = choose_type(base.shape[0])
        recalls.append(measure("STS-B", base, queries, chosen))
        if chosen != "hnsw":
            recalls.append(measure("STS-B", base, queries, "hnsw"))
    worst = min(recalls)
    print(f"lowest recall@{K} {worst:.4f} (goal >= {GOAL})")
    return 0 if worst >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
