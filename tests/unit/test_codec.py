"""Tests of the result codec: fp16/int8/float32 + byte-shuffle + zstd, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard

from allmende.protocol.codec import DTYPES, INT8_SCALE, _shuffle, _unshuffle, decode, encode
from allmende.protocol.errors import InvalidArgument


def unit_rows(rows: int = 256, dims: int = 384, seed: int = 7) -> np.ndarray:
    """Realistic embeddings: normal vectors normalised to unit length."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((rows, dims)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def raw_payload(values: np.ndarray, dtype: str) -> bytes:
    """A payload built by hand (shuffle + zstd), bypassing encode's own checks."""
    raw = np.ascontiguousarray(values, dtype=DTYPES[dtype]).tobytes()
    size = DTYPES[dtype].itemsize
    shuffled = np.frombuffer(raw, dtype=np.uint8).reshape(-1, size).T.tobytes()
    return zstandard.ZstdCompressor().compress(shuffled)


def test_fp16_round_trip_is_exact_for_fp16_values() -> None:
    m = unit_rows(64, 384).astype(np.float16).astype(np.float32)
    enc = encode(m, "float16")
    assert (enc.dtype, enc.rows, enc.dims, enc.raw_bytes) == ("float16", 64, 384, 64 * 384 * 2)
    out = decode(enc.payload, "float16", 64, 384)
    assert out.dtype == np.float32
    assert out.shape == (64, 384)
    np.testing.assert_array_equal(out, m)


def test_fp16_rounds_float32_input_to_nearest_fp16() -> None:
    m = unit_rows(8, 16)
    out = decode(encode(m, "float16").payload, "float16", 8, 16)
    np.testing.assert_array_equal(out, m.astype(np.float16).astype(np.float32))
    assert not np.array_equal(out, m)  # it really did round


def test_float32_round_trip_is_exact() -> None:
    m = unit_rows(10, 33)
    out = decode(encode(m, "float32").payload, "float32", 10, 33)
    np.testing.assert_array_equal(out, m)


def test_int8_round_trip_within_one_quantisation_step() -> None:
    m = unit_rows(32, 384)
    enc = encode(m, "int8")
    assert enc.raw_bytes == 32 * 384
    out = decode(enc.payload, "int8", 32, 384)
    assert out.shape == (32, 384)
    assert np.max(np.abs(out - m)) <= 0.5 / INT8_SCALE + 1e-7
    # 384 uniform rounding errors of at most 1/254 each cost about 0.001 of cosine
    cos = np.sum(out * m, axis=1) / np.linalg.norm(out, axis=1)
    assert cos.min() > 0.998


def test_int8_clips_out_of_range_values() -> None:
    m = np.array([[2.0, -3.0, 0.5]], dtype=np.float32)
    out = decode(encode(m, "int8").payload, "int8", 1, 3)
    np.testing.assert_allclose(out, [[1.0, -1.0, 64 / 127]], atol=1e-7)


def test_shuffle_is_applied_on_the_wire() -> None:
    m = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    wire = zstandard.ZstdDecompressor().decompress(encode(m, "float16").payload)
    raw = m.astype("<f2").tobytes()
    assert wire == raw[0::2] + raw[1::2]


@pytest.mark.parametrize("itemsize", [2, 4])
@pytest.mark.parametrize("values", [0, 1, 7, 256 * 384])
def test_shuffle_gives_the_byte_planes_and_unshuffle_undoes_it(itemsize: int, values: int) -> None:
    raw = np.random.default_rng(values).integers(0, 256, values * itemsize, np.uint8).tobytes()
    planes = b"".join(raw[k::itemsize] for k in range(itemsize))  # the format, by definition
    assert _shuffle(raw, itemsize) == planes
    assert _unshuffle(planes, itemsize) == raw


def test_real_embeddings_compress_below_045_of_float32() -> None:
    m = unit_rows(256, 384)
    enc = encode(m, "float16")
    assert len(enc.payload) < 0.45 * m.astype(np.float32).nbytes


def test_encode_refuses_wrong_rank_and_unknown_dtype() -> None:
    with pytest.raises(InvalidArgument) as err:
        encode(np.zeros(5, dtype=np.float32))
    assert err.value.field == "matrix"
    with pytest.raises(InvalidArgument) as err:
        encode(np.zeros((2, 2), dtype=np.float32), "bfloat16")
    assert err.value.field == "dtype"


def test_decode_refuses_a_zstd_bomb_at_the_cap() -> None:
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(100 * 1024 * 1024))
    assert len(bomb) < 100_000  # it really is a bomb
    with pytest.raises(InvalidArgument) as err:
        decode(bomb, "float16", 2, 4)
    assert err.value.field == "payload"
    assert "at most 16 bytes" in err.value.message  # stopped at the cap (bench/codec.py: how fast)


def test_decode_refuses_a_bomb_without_a_declared_content_size() -> None:
    # A streamed frame does not say how big it is; the cap must still hold.
    chunks = zstandard.ZstdCompressor().compressobj()
    block = bytes(1 << 20)
    bomb = b"".join(chunks.compress(block) for _ in range(50)) + chunks.flush()
    with pytest.raises(InvalidArgument) as err:
        decode(bomb, "float32", 1, 1)
    assert err.value.field == "payload"


def test_decode_refuses_a_short_payload() -> None:
    enc = encode(unit_rows(3, 8), "float16")
    with pytest.raises(InvalidArgument) as err:
        decode(enc.payload, "float16", 4, 8)
    assert err.value.field == "payload"
    assert "64 bytes" in err.value.message and "got 48" in err.value.message


def test_decode_refuses_a_longer_payload() -> None:
    enc = encode(unit_rows(4, 8), "float16")
    with pytest.raises(InvalidArgument) as err:
        decode(enc.payload, "float16", 3, 8)
    assert err.value.field == "payload"


def test_decode_refuses_wrong_dtype_for_the_bytes() -> None:
    # float16 bytes declared as float32 with the same row count: half the size expected
    enc = encode(unit_rows(4, 8), "float16")
    with pytest.raises(InvalidArgument):
        decode(enc.payload, "float32", 4, 8)


@pytest.mark.parametrize(
    "payload", [b"", b"garbage bytes, not zstd", bytes(range(256)), b"\x28\xb5\x2f\xfd\x00"]
)
def test_decode_refuses_garbage(payload: bytes) -> None:
    with pytest.raises(InvalidArgument) as err:
        decode(payload, "float16", 2, 2)
    assert err.value.field == "payload"


def test_decode_refuses_a_truncated_frame() -> None:
    enc = encode(unit_rows(16, 64), "float16")
    with pytest.raises(InvalidArgument) as err:
        decode(enc.payload[: len(enc.payload) // 2], "float16", 16, 64)
    assert err.value.field == "payload"


def test_decode_refuses_unknown_dtype() -> None:
    enc = encode(unit_rows(2, 2), "float16")
    with pytest.raises(InvalidArgument) as err:
        decode(enc.payload, "float64", 2, 2)
    assert err.value.field == "dtype"
    assert "float64" in err.value.message


@pytest.mark.parametrize(("rows", "dims"), [(0, 4), (4, 0), (-1, 4), (4, -2), (0, 0)])
def test_decode_refuses_non_positive_shape(rows: int, dims: int) -> None:
    enc = encode(unit_rows(2, 2), "float16")
    with pytest.raises(InvalidArgument) as err:
        decode(enc.payload, "float16", rows, dims)
    assert err.value.field == "shape"


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_decode_refuses_nan_and_inf_naming_the_row(dtype: str, bad: float) -> None:
    m = unit_rows(5, 6)
    m[3, 2] = bad
    payload = raw_payload(m, dtype)
    with pytest.raises(InvalidArgument) as err:
        decode(payload, dtype, 5, 6)
    assert err.value.field == "payload"
    assert "row 3" in err.value.message


def test_decode_names_the_first_bad_row() -> None:
    m = unit_rows(6, 4)
    m[4, 0] = np.nan
    m[1, 3] = np.inf
    with pytest.raises(InvalidArgument) as err:
        decode(raw_payload(m, "float16"), "float16", 6, 4)
    assert "row 1" in err.value.message


def test_fp16_overflow_becomes_inf_and_is_refused() -> None:
    # 1e5 is beyond fp16's range: an honest encoder produces inf, which decode refuses.
    m = np.array([[1e5, 0.0]], dtype=np.float32)
    with np.errstate(over="ignore"):
        payload = encode(m, "float16").payload
    with pytest.raises(InvalidArgument) as err:
        decode(payload, "float16", 1, 2)
    assert "row 0" in err.value.message
