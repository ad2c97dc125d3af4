"""Codec speed: decoding a volunteer's result, and refusing a decompression bomb.

    python bench/codec.py [--rounds 200]

1. Decode of a 256x384 fp16 result (the usual unit) against the reference byte transpose
   that defines the shuffle format, on the same payload: ratio = reference time / ours
   (goal >= 1.0; the fp16 path un-shuffles with shifts instead of a strided copy).
2. Refusing a 100 MiB zstd bomb declared as 2x4 fp16, against inflating it whole with
   zstandard (what a decoder without a cap would do): ratio = our time / inflating time
   (goal <= 0.01: the refusal stops at the declared size).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import zstandard
from corpus import ROOT  # noqa: F401  (puts the source roots on sys.path)

DECODE_GOAL = 1.0
BOMB_GOAL = 0.01


def best_of(rounds: int, call: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be positive")

    from allmende.protocol.codec import decode, encode
    from allmende.protocol.errors import InvalidArgument

    rows = np.random.default_rng(0).standard_normal((256, 384)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    payload = encode(rows, "float16").payload

    def reference() -> np.ndarray:
        shuffled = zstandard.ZstdDecompressor().decompress(payload)
        raw = np.frombuffer(shuffled, np.uint8).reshape(2, -1).T.tobytes()
        return np.frombuffer(raw, "<f2").reshape(256, 384).astype(np.float32)

    assert np.array_equal(reference(), decode(payload, "float16", 256, 384))
    ours = best_of(args.rounds, lambda: decode(payload, "float16", 256, 384))
    ref = best_of(args.rounds, reference)
    ratio = ref / ours
    verdict = "PASS" if ratio >= DECODE_GOAL else "FAIL"
    print(
        f"decode 256x384 fp16: ours {ours * 1e6:.0f} us, reference transpose "
        f"{ref * 1e6:.0f} us, ratio {ratio:.2f} (goal >= {DECODE_GOAL}) {verdict}"
    )

    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(100 * 1024 * 1024))

    def refuse() -> None:
        try:
            decode(bomb, "float16", 2, 4)
        except InvalidArgument:
            return
        raise AssertionError("the bomb was not refused")

    refused = best_of(5, refuse)
    inflated = best_of(
        3, lambda: zstandard.ZstdDecompressor().decompress(bomb, max_output_size=101 * 1024 * 1024)
    )
    ratio = refused / inflated
    verdict = "PASS" if ratio <= BOMB_GOAL else "FAIL"
    print(
        f"zstd bomb ({len(bomb):,} bytes -> 100 MiB): refused in {refused * 1e6:.0f} us, "
        f"inflating it takes {inflated * 1e3:.1f} ms, ratio {ratio:.4f} "
        f"(goal <= {BOMB_GOAL}) {verdict}"
    )


if __name__ == "__main__":
    main()
