"""The result codec: float rows → fp16 or int8, byte-shuffled, zstd-compressed; and back.

Decoding is the coordinator's first line of defence against hostile uploads: it refuses to
inflate past the size that the declared shape allows (a decompression bomb stops at the cap),
and refuses wrong sizes, NaN and infinity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import zstandard

from allmende.protocol.errors import InvalidArgument

DTYPES: dict[str, np.dtype[np.generic]] = {
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "int8": np.dtype("i1"),
    # An index into the model's labels (see protocol/kinds/columns.py).
    "label": np.dtype("<u2"),
    # Bytes (a sha256 digest: 32 values per row) and whole numbers (an image's width and
    # height): exact in the float32 matrix results are held in (integers below 2**24).
    "uint8": np.dtype("u1"),
    "int32": np.dtype("<i4"),
}
# Dtypes that carry whole numbers, with their bounds: rounded and clipped on the way out,
# never NaN on the way in.
INTEGER_BOUNDS: dict[str, tuple[int, int]] = {
    "label": (0, 65535),
    "uint8": (0, 255),
    "int32": (-(2**31), 2**31 - 1),
}
INTEGER_DTYPES = frozenset(INTEGER_BOUNDS)
# The scale for int8: unit-normalised embeddings have every component in [-1, 1].
INT8_SCALE = 127.0
# Level 3 compresses fp16 rows within 2 % of level 19 at a tenth of the CPU time, and the
# volunteer compresses while its next unit computes on the same cores.
ZSTD_LEVEL = 3
# The largest result a decoder accepts (8192 rows x 4096 float32 dims), and its read size.
MAX_DECODED_BYTES = 128 * 1024 * 1024
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Encoded:
    payload: bytes
    dtype: str
    rows: int
    dims: int
    raw_bytes: int


def _shuffle(raw: bytes, itemsize: int) -> bytes:
    """Group the k-th byte of every value together: exponents compress, mantissas do not."""
    if itemsize == 1:
        return raw
    if itemsize == 2:  # fp16, the common case: shifts beat a strided byte transpose (~7x)
        values = np.frombuffer(raw, dtype="<u2")
        return (values & 0xFF).astype(np.uint8).tobytes() + (values >> 8).astype(np.uint8).tobytes()
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, itemsize).T.tobytes()


def _unshuffle(data: bytes, itemsize: int) -> bytes:
    if itemsize == 1:
        return data
    if itemsize == 2:  # the same bytes as the transpose below, without its strided copy
        planes = np.frombuffer(data, dtype=np.uint8).reshape(2, -1)
        values = planes[0].astype("<u2")
        values |= planes[1].astype("<u2") << 8
        return bytes(values.tobytes())
    return np.frombuffer(data, dtype=np.uint8).reshape(itemsize, -1).T.tobytes()


def _raw(values: np.ndarray, dtype: str) -> bytes:
    """A column's values (rows x width, float) as the bytes of its wire dtype."""
    if dtype == "int8":
        return bytes(np.clip(np.rint(values * INT8_SCALE), -127, 127).astype(np.int8).tobytes())
    if dtype in INTEGER_DTYPES:
        low, high = INTEGER_BOUNDS[dtype]
        whole = np.clip(np.rint(values), low, high)
        return bytes(whole.astype(DTYPES[dtype]).tobytes())
    return bytes(np.ascontiguousarray(values, dtype=DTYPES[dtype]).tobytes())


def encode(matrix: np.ndarray, dtype: str = "float16", level: int = ZSTD_LEVEL) -> Encoded:
    """Encode a (rows, dims) float matrix for the wire: one column of `dtype`."""
    if matrix.ndim != 2:
        raise InvalidArgument("matrix", f"2 dimensions (rows, dims), got {matrix.ndim}")
    payload, raw_bytes = encode_columns(matrix, [(dtype, matrix.shape[1])], level)
    return Encoded(payload, dtype, matrix.shape[0], matrix.shape[1], raw_bytes)


def encode_columns(
    matrix: np.ndarray, columns: Sequence[tuple[str, int]], level: int = ZSTD_LEVEL
) -> tuple[bytes, int]:
    """Encode a result whose columns (dtype, width) sit side by side in `matrix`: each
    column in its dtype, byte-shuffled on its own, all in one zstd frame. Returns the
    payload and the raw size. With one float16 column this is the float16 format above."""
    if matrix.ndim != 2:
        raise InvalidArgument("matrix", f"2 dimensions (rows, dims), got {matrix.ndim}")
    if sum(width for _, width in columns) != matrix.shape[1]:
        raise InvalidArgument(
            "matrix", f"{sum(w for _, w in columns)} columns, got {matrix.shape[1]}"
        )
    parts = []
    raw_bytes = 0
    start = 0
    for dtype, width in columns:
        if dtype not in DTYPES:
            raise InvalidArgument("dtype", f"one of {sorted(DTYPES)}, got {dtype!r}")
        raw = _raw(matrix[:, start : start + width], dtype)
        start += width
        raw_bytes += len(raw)
        parts.append(_shuffle(raw, DTYPES[dtype].itemsize))
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    return zstandard.ZstdCompressor(level=level).compress(body), raw_bytes


def decode(payload: bytes, dtype: str, rows: int, dims: int) -> np.ndarray:
    """Decode a payload into float32 (rows, dims), refusing anything but exactly that shape.

    Raises InvalidArgument naming what is wrong; never allocates more than the declared size.
    """
    return decode_columns(payload, [("", dtype, dims)], rows)


def decode_columns(
    payload: bytes, columns: Sequence[tuple[str, str, int]], rows: int
) -> np.ndarray:
    """Decode a result of `columns` (name, dtype, width) into one float32 matrix, rows by
    the sum of the widths, refusing anything but exactly that shape, NaN and infinity
    (errors name the column when it has a name)."""
    for _, dtype, _ in columns:
        if dtype not in DTYPES:
            raise InvalidArgument("dtype", f"one of {sorted(DTYPES)}, got {dtype!r}")
    dims = sum(width for _, _, width in columns)
    shown = "+".join(dtype for _, dtype, _ in columns)
    if rows <= 0 or dims <= 0 or any(width <= 0 for _, _, width in columns):
        raise InvalidArgument("shape", f"positive rows and widths, got {rows}x{dims}")
    sizes = [rows * width * DTYPES[dtype].itemsize for _, dtype, width in columns]
    expected = sum(sizes)
    if expected > MAX_DECODED_BYTES:
        raise InvalidArgument(
            "shape", f"at most {MAX_DECODED_BYTES} bytes of rows, got {rows}x{dims} {shown}"
        )
    data = _inflate(payload, expected, f"{rows}x{dims} {shown}")
    if len(columns) == 1:
        _, dtype, width = columns[0]
        return _values(columns[0][0], data, dtype, rows, width)
    out = np.empty((rows, dims), dtype=np.float32)
    offset = start = 0
    for (name, dtype, width), size in zip(columns, sizes, strict=True):
        out[:, start : start + width] = _values(
            name, data[offset : offset + size], dtype, rows, width
        )
        offset += size
        start += width
    return out


def _inflate(payload: bytes, expected: int, shown: str) -> bytes:
    try:
        # Stream in chunks with a hard cap: read at most one byte past the declared size, so
        # a decompression bomb costs us `expected + 1` bytes and no more, and a small frame
        # with a huge declared shape costs only what it really inflates to.
        chunks: list[bytes] = []
        size = 0
        with zstandard.ZstdDecompressor().stream_reader(payload) as stream:
            while size <= expected:
                more = stream.read(min(READ_CHUNK, expected + 1 - size))
                if not more:
                    break
                chunks.append(more)
                size += len(more)
        data = b"".join(chunks)
    except zstandard.ZstdError as exc:
        raise InvalidArgument("payload", f"a valid zstd frame ({exc})") from None
    if len(data) > expected:
        raise InvalidArgument("payload", f"at most {expected} bytes once decompressed ({shown})")
    if len(data) != expected:
        raise InvalidArgument(
            "payload", f"{expected} bytes once decompressed ({shown}), got {len(data)}"
        )
    return data


def _values(name: str, data: bytes, dtype: str, rows: int, width: int) -> np.ndarray:
    itemsize = DTYPES[dtype].itemsize
    values = np.frombuffer(_unshuffle(data, itemsize), dtype=DTYPES[dtype]).reshape(rows, width)
    if dtype == "int8":
        return values.astype(np.float32) / INT8_SCALE
    out = values.astype(np.float32)
    if dtype not in INTEGER_DTYPES and not np.isfinite(out).all():
        bad_row = int(np.argwhere(~np.isfinite(out))[0][0])
        where = f"column {name!r} row {bad_row}" if name else f"row {bad_row}"
        raise InvalidArgument("payload", f"finite values only, {where} has NaN or inf")
    return out
