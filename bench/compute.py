"""Benchmark the embed-text compute path against sentence-transformers.

Embeds the same STS-B sentences with ``SentenceTransformer.encode`` and with Allmende's
``TextEmbedder`` (same model, device and batch size), alternating the two for several rounds,
checks that they agree row by row, and reports sentences per second and the ratio
``ours / sentence-transformers``. The verdict uses each side's best run, which is robust to
other processes competing for the CPU (a median is printed beside it). The goal is a ratio of
at least 1.0 on CPU; the script exits non-zero when a goal is missed or the embeddings
disagree.

    python bench/compute.py [--n 2000] [--batch-size 64] [--device cpu] [--rounds 5]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT / "tests" / "data" / "stsb"
MIN_COSINE = 0.9999
CPU_GOAL = 1.0

if importlib.util.find_spec("allmende") is None or (
    importlib.util.find_spec("allmende.protocol") is None
):
    sys.path[:0] = [str(ROOT / part) for part in ("client", "coordinator", "protos")]

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
import torch  # noqa: E402

from allmende.client.tasks.embed_text import (  # noqa: E402
    TextEmbedder,
    resolve_model_dir,
    verify_weights,
)
from allmende.protocol.models import DEFAULT_MODEL, ModelRegistry  # noqa: E402


def load_sentences(data_dir: Path, n: int, seed: int) -> list[str]:
    """The first ``n`` sentences of STS-B train+dev after a seeded shuffle (repeated if short)."""
    sentences: list[str] = []
    for name in ("sts-train.csv", "sts-dev.csv"):
        path = data_dir / name
        if not path.is_file():
            raise SystemExit(f"STS-B file not found: {path}")
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
                if len(row) >= 7:
                    sentences += [row[5], row[6]]
    order = np.random.default_rng(seed).permutation(len(sentences))
    shuffled = [sentences[i] for i in order]
    while len(shuffled) < n:
        shuffled += shuffled
    return shuffled[:n]


def timed(fn: Callable[[], npt.NDArray[np.float32]]) -> tuple[float, npt.NDArray[np.float32]]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000, help="sentences per run (default 2000)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto (default cpu)")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed for the sentences")
    parser.add_argument("--data", type=Path, default=STSB, help="STS-B directory")
    args = parser.parse_args(argv)
    if args.n < 1 or args.rounds < 1 or args.batch_size < 1:
        parser.error("--n, --rounds and --batch-size must be positive")

    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    disable_progress_bar: Any = hf_logging.disable_progress_bar
    disable_progress_bar()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    texts = load_sentences(args.data, args.n, args.seed)
    spec = ModelRegistry().get(DEFAULT_MODEL)
    model_dir = resolve_model_dir(spec)
    verify_weights(model_dir, spec.weights_sha256)

    ours = TextEmbedder(model_dir, device=args.device, batch_size=args.batch_size)
    device = str(ours.device)
    reference: Any = SentenceTransformer(str(model_dir), device=device)

    def run_reference() -> npt.NDArray[np.float32]:
        out = reference.encode(
            texts,
            batch_size=args.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=False,
        )
        return np.asarray(out, dtype=np.float32)

    def run_ours() -> npt.NDArray[np.float32]:
        return ours.embed(texts)

    print(
        f"model {spec.name} ({model_dir}), {len(texts)} STS-B sentences, "
        f"batch size {args.batch_size}, device {device}"
    )
    cpu = platform.processor() or platform.machine()
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs ({cpu})"
        + (f", GPU {torch.cuda.get_device_name(ours.device)}" if ours.device.type == "cuda" else "")
    )

    # Warm-up: one full pass each (allocator, oneDNN/cuBLAS kernels for every batch shape).
    _, ref_rows = timed(run_reference)
    _, our_rows = timed(run_ours)

    ref_times: list[float] = []
    our_times: list[float] = []
    for _ in range(args.rounds):
        seconds, ref_rows = timed(run_reference)
        ref_times.append(seconds)
        seconds, our_rows = timed(run_ours)
        our_times.append(seconds)

    cosine = (ref_rows.astype(np.float64) * our_rows.astype(np.float64)).sum(axis=1) / (
        np.linalg.norm(ref_rows, axis=1) * np.linalg.norm(our_rows, axis=1)
    )
    min_cos = float(cosine.min())
    norm_err = float(np.abs(np.linalg.norm(our_rows, axis=1) - 1.0).max())

    n = len(texts)
    rows = [
        ("sentence-transformers encode", ref_times),
        ("allmende TextEmbedder", our_times),
    ]
    print()
    print(f"{'implementation':<30} {'best s/s':>10} {'median s/s':>11}   runs (s)")
    print("-" * 78)
    for name, times in rows:
        med = n / statistics.median(times)
        best = n / min(times)
        runs = " ".join(f"{t:.3f}" for t in times)
        print(f"{name:<30} {best:>10.1f} {med:>11.1f}   {runs}")
    print("-" * 78)

    ratio = min(ref_times) / min(our_times)
    median_ratio = statistics.median(ref_times) / statistics.median(our_times)
    agree = min_cos >= MIN_COSINE and norm_err <= 1e-5
    print(
        f"agreement: min cosine {min_cos:.7f} (need >= {MIN_COSINE}), "
        f"max |norm - 1| {norm_err:.1e}   {'PASS' if agree else 'FAIL'}"
    )
    on_cpu = ours.device.type == "cpu"
    verdict = ("PASS" if ratio >= CPU_GOAL else "FAIL") if on_cpu else "(goal is set for CPU)"
    print(
        f"ratio ours / sentence-transformers: {ratio:.3f} (best runs; median {median_ratio:.3f})  "
        f"goal >= {CPU_GOAL:.1f} on CPU   {verdict}"
    )
    ok = agree and (not on_cpu or ratio >= CPU_GOAL)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
