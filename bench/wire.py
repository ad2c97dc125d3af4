"""Wire cost: bytes a volunteer uploads per embedding, divided by 4 x dims (raw float32).

    python bench/wire.py [--n 2048] [--unit-size 256]

Real embeddings of STS-B sentences, cut into units as the coordinator would, each sealed
exactly as the engine does (fp16, byte-shuffle, zstd; signed envelope) and measured as the
serialised SubmitResultRequest. Alternatives are measured on the same rows for context.
Goal: ratio <= 0.45.
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import zstandard
from corpus import stsb_texts

GOAL = 0.45


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--unit-size", type=int, default=256)
    args = parser.parse_args()

    from allmende.client.tasks.computer import TaskComputer
    from allmende.protocol import codec
    from allmende.protocol.kinds.columns import Layout
    from allmende.protocol.models import DEFAULT_MODEL, ModelRegistry
    from allmende.protocol.signing import SigningKey
    from allmende.protocol.wire import CODEC, ResultEnvelope, sign_envelope
    from allmende.v1 import allmende_pb2 as pb

    texts = stsb_texts(args.n)
    computer = TaskComputer(ModelRegistry(), "cpu")
    matrix = computer.embedder(DEFAULT_MODEL).embed(texts)
    dims = matrix.shape[1]
    key = SigningKey.generate()

    def upload_bytes(dtype: str) -> int:
        total = 0
        for start in range(0, len(texts), args.unit_size):
            rows = matrix[start : start + args.unit_size]
            encoded = codec.encode(rows, dtype)
            envelope = ResultEnvelope(
                unit_id=f"job-0123456789ab-u{start:06d}",
                lease_id="f" * 32,
                volunteer_id=key.fingerprint,
                rows=len(rows),
                columns=(Layout("embedding", dtype, dims),),
                codec=CODEC,
                payload_sha256=hashlib.sha256(encoded.payload).digest(),
                unit_sha256=hashlib.sha256(b"unit").digest(),
                model_sha256=ModelRegistry().get(DEFAULT_MODEL).weights_sha256,
                device="cpu",
                compute_ms=350,
                created_ms=1_764_000_000_000,
            )
            blob, signature = sign_envelope(key, envelope)
            request = pb.SubmitResultRequest(
                envelope=blob, signature=signature, payload=encoded.payload
            )
            total += request.ByteSize()
        return total

    raw = len(texts) * 4 * dims
    zstd = zstandard.ZstdCompressor(level=codec.ZSTD_LEVEL)
    rows = [
        ("float32 raw", raw),
        ("float32 + zstd", len(zstd.compress(matrix.astype("<f4").tobytes()))),
        ("float16 + zstd (no shuffle)", len(zstd.compress(matrix.astype("<f2").tobytes()))),
        (
            "float16 + shuffle + zstd: payload only",
            sum(
                len(codec.encode(matrix[s : s + args.unit_size], "float16").payload)
                for s in range(0, len(texts), args.unit_size)
            ),
        ),
        ("SubmitResult, float16 (default)", upload_bytes("float16")),
        ("SubmitResult, int8 (--dtype int8)", upload_bytes("int8")),
    ]
    print(
        f"{len(texts)} STS-B embeddings ({DEFAULT_MODEL}, {dims} dims), units of {args.unit_size}"
    )
    print(f"{'encoding':<42} {'bytes/embedding':>16} {'ratio to 4 x dims':>18}")
    for name, size in rows:
        print(f"{name:<42} {size / len(texts):16.1f} {size / raw:18.3f}")
    ratio = upload_bytes("float16") / raw
    verdict = "PASS" if ratio <= GOAL else "FAIL"
    print(f"uploaded bytes per embedding / (4 x dims) = {ratio:.3f}   (goal <= {GOAL})  {verdict}")
    # fp16 keeps quality: cosine of stored rows with the fp32 originals
    back = codec.decode(codec.encode(matrix, "float16").payload, "float16", *matrix.shape)
    cos = np.einsum("ij,ij->i", back, matrix) / np.linalg.norm(back, axis=1)
    print(f"float16 round trip: lowest cosine to float32 rows {cos.min():.7f}")


if __name__ == "__main__":
    main()
