"""Property-based fuzzing of the decoders that meet untrusted bytes first.

The result codec (`codec.decode`), the signed wire objects (`wire.decode_unit`,
`wire.decode_envelope`) and the dataset manifest check (`manifest.verify_manifest`) each
promise one error class for bad input. Whatever bytes, dtype or shape arrive, each answers
with a well-formed value or that error: never another exception, never a MemoryError, and
never an allocation that neither the declared shape nor the input paid for.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tracemalloc
from typing import Any

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from allmende.protocol import codec, manifest, wire
from allmende.protocol.errors import IntegrityError, InvalidArgument
from allmende.protocol.signing import SigningKey
from allmende.v1 import allmende_pb2 as pb

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------- codec.decode

VALID_DTYPES = sorted(codec.DTYPES)
WRONG_DTYPES = st.one_of(
    st.sampled_from(["", "float64", "FLOAT16", "int8 ", " float16", "f2", "<f2", "uint8", "i1"]),
    st.text(max_size=16),
)
# Small enough that exact-size payloads are cheap to build, with the boundaries around zero.
GOOD_SIDES = st.integers(1, 24)
WRONG_SIDES = st.one_of(st.integers(-3, 0), st.sampled_from([-(2**31), -(2**63)]))


def _mostly(good: st.SearchStrategy[Any], wrong: st.SearchStrategy[Any]) -> Any:
    """Draw from `good` three times in four, so the checks after this one are reached."""
    return st.sampled_from([True, True, True, False]).flatmap(lambda ok: good if ok else wrong)


DTYPE_NAMES = _mostly(st.sampled_from(VALID_DTYPES), WRONG_DTYPES)
SIDES = _mostly(GOOD_SIDES, WRONG_SIDES)


def _shuffled(raw: bytes, itemsize: int) -> bytes:
    """The byte shuffle of codec.encode, built here so a payload can bypass encode's checks."""
    if itemsize == 1 or not raw:
        return raw
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, itemsize).T.tobytes()


def _frame(content: bytes, *, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=1, write_content_size=content_size).compress(content)


@st.composite
def payload_for(draw: st.DrawFn, dtype: str, rows: int, dims: int) -> bytes:
    """Garbage, valid zstd frames of random content, and frames of exactly the right size."""
    itemsize = codec.DTYPES[dtype].itemsize if dtype in codec.DTYPES else 2
    count = max(rows, 0) * max(dims, 0)
    size = count * itemsize
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(
        st.sampled_from(
            [
                "raw",
                "frame",
                "exact-bits",
                "exact-finite",
                "exact-special",
                "off-by-one",
                "exact-then-junk",
                "two-frames",
                "truncated",
                "flipped",
            ]
        )
    )
    if kind == "raw":
        return draw(st.binary(max_size=1024))
    if kind == "frame":
        return _frame(draw(st.binary(max_size=4096)), content_size=draw(st.booleans()))
    if kind == "exact-bits":  # random bits: NaN and inf patterns included for float types
        return _frame(rng.bytes(size))
    if kind in ("exact-finite", "exact-special", "exact-then-junk", "two-frames"):
        if dtype in ("float16", "float32"):
            values = rng.standard_normal(count).astype(codec.DTYPES[dtype])
            if kind == "exact-special" and count:
                special = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e6, -0.0, 6e-8]))
                with np.errstate(over="ignore"):
                    values[rng.integers(count)] = special
            raw = values.tobytes()
        else:
            raw = rng.bytes(size)
        body = _shuffled(raw, itemsize)
        if kind == "exact-then-junk":
            return _frame(body) + draw(st.binary(min_size=1, max_size=64))
        if kind == "two-frames":
            cut = draw(st.integers(0, len(body)))
            return _frame(body[:cut]) + _frame(body[cut:])
        return _frame(body, content_size=draw(st.booleans()))
    if kind == "off-by-one":
        return _frame(rng.bytes(max(size + draw(st.sampled_from([-1, 1, itemsize])), 0)))
    frame = _frame(rng.bytes(size))
    if kind == "truncated":
        return frame[: draw(st.integers(0, max(len(frame) - 1, 0)))]
    at = draw(st.integers(0, len(frame) - 1))
    return frame[:at] + bytes([frame[at] ^ (1 << draw(st.integers(0, 7)))]) + frame[at + 1 :]


@st.composite
def decode_inputs(draw: st.DrawFn) -> tuple[bytes, str, int, int]:
    dtype = draw(DTYPE_NAMES)
    rows, dims = draw(SIDES), draw(SIDES)
    return draw(payload_for(dtype, rows, dims)), dtype, rows, dims


def assert_decodes_or_refuses(payload: bytes, dtype: str, rows: int, dims: int) -> None:
    try:
        out = codec.decode(payload, dtype, rows, dims)
    except InvalidArgument as exc:
        assert exc.field in ("dtype", "shape", "payload"), exc.message
        event(f"refused: {exc.field}")
        return
    event(f"decoded {dtype}")
    assert dtype in codec.DTYPES
    assert rows > 0 and dims > 0
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.shape == (rows, dims)
    assert np.isfinite(out).all()
    if dtype == "int8":
        assert np.abs(out).max() <= 128 / codec.INT8_SCALE


@FUZZ
@given(decode_inputs())
@example((b"", "float16", 1, 1))
@example((_frame(b""), "int8", 0, 5))
@example((_frame(b"\x00\x7c"), "float16", 1, 1))  # +inf in float16
@example((_frame(b"\x00\x00\xc0\x7f"), "float32", 1, 1))  # NaN in float32
@example((_frame(b"\x01\x02"), "int8", 1, 2))
def test_decode_returns_an_exact_finite_matrix_or_invalid_argument(
    case: tuple[bytes, str, int, int],
) -> None:
    assert_decodes_or_refuses(*case)


@FUZZ
@given(
    st.sampled_from(VALID_DTYPES),
    st.integers(1, 12),
    st.integers(1, 48),
    st.integers(0, 2**32 - 1),
    st.sampled_from([1.0, 1e-3, 100.0, 60000.0]),
)
def test_decode_inverts_encode_for_finite_rows(
    dtype: str, rows: int, dims: int, seed: int, scale: float
) -> None:
    """The happy path under fuzzing: what encode writes, decode reads back at that shape."""
    matrix = (np.random.default_rng(seed).standard_normal((rows, dims)) * scale).astype(np.float32)
    if dtype == "float16":
        matrix = np.clip(matrix, -60000.0, 60000.0)
    elif dtype == "int8":
        matrix = np.clip(matrix, -1.0, 1.0)
    elif dtype == "label":  # indices into a model's labels
        matrix = np.abs(np.rint(matrix)) % 65536
    elif dtype == "uint8":  # bytes of a digest
        matrix = np.abs(np.rint(matrix)) % 256
    elif dtype == "int32":  # whole numbers (widths, heights)
        matrix = np.rint(matrix)
    out = codec.decode(codec.encode(matrix, dtype).payload, dtype, rows, dims)
    assert out.shape == (rows, dims) and out.dtype == np.float32
    # float16 keeps 11 significant bits (6e-8 apart near zero); int8 steps are 1/127.
    rtol, atol = {
        "float32": (0.0, 0.0),
        "float16": (1e-3, 6e-8),
        "int8": (0.0, 0.51 / 127),
        "label": (0.0, 0.0),
        "uint8": (0.0, 0.0),
        "int32": (0.0, 0.0),
    }[dtype]
    np.testing.assert_allclose(out, matrix, rtol=rtol, atol=atol)


@st.composite
def bombs(draw: st.DrawFn) -> tuple[bytes, int]:
    """A small frame that inflates to many MiB, with or without a declared content size."""
    mib = draw(st.integers(2, 48))
    if draw(st.booleans()):
        compressor = zstandard.ZstdCompressor(level=1).compressobj()
        chunk = bytes(1 << 20)
        bomb = b"".join(compressor.compress(chunk) for _ in range(mib)) + compressor.flush()
    else:
        bomb = _frame(bytes(min(mib, 8) << 20))
        mib = min(mib, 8)
    return bomb, mib << 20


@settings(FUZZ, max_examples=12)
@given(bombs(), st.sampled_from(VALID_DTYPES), st.integers(1, 64), st.integers(1, 384))
def test_decode_stops_a_bomb_at_the_declared_size(
    bomb: tuple[bytes, int], dtype: str, rows: int, dims: int
) -> None:
    payload, inflated = bomb
    expected = rows * dims * codec.DTYPES[dtype].itemsize
    tracemalloc.start()
    try:
        with pytest.raises(InvalidArgument) as info:
            codec.decode(payload, dtype, rows, dims)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.field == "payload"
    assert inflated > expected
    # One buffer of the declared size plus one byte, and the bookkeeping around it.
    assert peak < 3 * expected + (1 << 20), f"peak {peak} bytes for a {expected}-byte shape"


HUGE_SHAPES = [
    pytest.param("float16", 10**9, 384, id="1e9-rows"),
    pytest.param("float32", 10**9, 10**9, id="1e9-by-1e9"),
    pytest.param("int8", 2**32 - 1, 2**32 - 1, id="uint32-max-both"),
    pytest.param("float16", 10**6, 384, id="768MB-for-a-tiny-frame"),
]


@pytest.mark.parametrize(("dtype", "rows", "dims"), HUGE_SHAPES)
def test_decode_refuses_a_huge_declared_shape_without_allocating_it(
    dtype: str, rows: int, dims: int
) -> None:
    payload = _frame(b"tiny payload")
    tracemalloc.start()
    try:
        with pytest.raises(InvalidArgument) as info:
            codec.decode(payload, dtype, rows, dims)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.field in ("shape", "payload")
    assert peak < 16 << 20, f"peak {peak} bytes to refuse a {len(payload)}-byte payload"


# ---------------------------------------------------------------- wire: units and envelopes

TEXT = st.text(max_size=40)
UINT32 = st.integers(0, 2**32 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)


def _envelopes() -> st.SearchStrategy[pb.ResultEnvelope]:
    ids = _mostly(st.text(min_size=1, max_size=40), st.just(""))
    return st.builds(
        pb.ResultEnvelope,
        unit_id=ids,
        lease_id=ids,
        volunteer_id=ids,
        rows=UINT32,
        columns=st.lists(
            st.builds(
                pb.ResultColumn,
                name=TEXT,
                dtype=st.one_of(st.sampled_from(VALID_DTYPES), TEXT),
                width=UINT32,
            ),
            max_size=3,
        ),
        codec=_mostly(st.just(wire.CODEC), TEXT),
        payload_sha256=_mostly(st.binary(min_size=32, max_size=32), st.binary(max_size=40)),
        unit_sha256=st.binary(max_size=40),
        model_sha256=TEXT,
        device=TEXT,
        compute_ms=UINT32,
        created_unix_ms=INT64,
    )


def _units() -> st.SearchStrategy[pb.WorkUnit]:
    return st.builds(
        pb.WorkUnit,
        unit_id=TEXT,
        job_id=TEXT,
        kind=TEXT,
        model=TEXT,
        model_sha256=TEXT,
        texts=st.lists(st.text(max_size=200), max_size=5),
        dims=UINT32,
        result_dtype=TEXT,
        created_unix_ms=INT64,
    )


@st.composite
def mutated(draw: st.DrawFn, messages: st.SearchStrategy[Any]) -> bytes:
    """A valid serialisation, then truncated, bit-flipped, spliced or extended."""
    blob = bytes(draw(messages).SerializeToString(deterministic=True))
    how = draw(st.sampled_from(["as-is", "truncate", "flip", "splice", "append"]))
    if how == "truncate":
        return blob[: draw(st.integers(0, len(blob)))]
    if how == "flip" and blob:
        at = draw(st.integers(0, len(blob) - 1))
        return blob[:at] + bytes([blob[at] ^ (1 << draw(st.integers(0, 7)))]) + blob[at + 1 :]
    if how == "splice":
        at = draw(st.integers(0, len(blob)))
        return blob[:at] + draw(st.binary(min_size=1, max_size=16)) + blob[at:]
    if how == "append":
        return blob + draw(st.binary(min_size=1, max_size=32))
    return blob


def wire_bytes(messages: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=512), mutated(messages))


@FUZZ
@given(wire_bytes(_units()))
@example(b"\xff")
@example(b"\x0a\x02\xff\xfe")  # unit_id with invalid UTF-8
@example(b"\x0b" * 200)  # start-group tags nested past the parser's depth limit
def test_decode_unit_returns_a_unit_or_invalid_argument(blob: bytes) -> None:
    try:
        unit = wire.decode_unit(blob)
    except InvalidArgument as exc:
        assert exc.field == "unit", exc.message
        event("refused")
        return
    event("decoded")
    assert isinstance(unit, wire.WorkUnit)
    assert all(isinstance(t, str) for t in unit.texts)
    assert 0 <= unit.dims < 2**32
    # What decoded re-encodes to a unit that decodes to the same values.
    assert wire.decode_unit(wire.encode_unit(unit)) == unit


@FUZZ
@given(wire_bytes(_envelopes()))
@example(b"\xff")
@example(b"\x12\x01\x80")  # lease_id with invalid UTF-8
@example(b"\x28" + b"\xff" * 10 + b"\x01")  # a varint longer than ten bytes
def test_decode_envelope_returns_a_checked_envelope_or_invalid_argument(blob: bytes) -> None:
    try:
        env = wire.decode_envelope(blob)
    except InvalidArgument as exc:
        assert exc.field.startswith("envelope"), exc.message
        event(f"refused: {exc.field}")
        return
    event("decoded")
    assert env.unit_id and env.lease_id and env.volunteer_id
    assert env.codec == wire.CODEC
    assert len(env.payload_sha256) == 32
    assert 0 <= env.rows < 2**32
    assert 1 <= len(env.columns) <= wire.MAX_RESULT_COLUMNS
    assert all(c.name and 1 <= c.width <= wire.MAX_COLUMN_WIDTH for c in env.columns)
    assert wire.decode_envelope(wire.encode_envelope(env)) == env


# ---------------------------------------------------------------- manifest.verify_manifest

KEY = SigningKey.generate()
PINNED = KEY.fingerprint
OTHER = SigningKey.generate()

SHARD_NAMES = st.one_of(
    st.sampled_from(
        ["part-00000.parquet", "../escape.parquet", ".hidden.parquet", "a/b.parquet", "x.csv"]
    ),
    st.text(max_size=20),
    st.integers(),
    st.none(),
)
HEXES = st.one_of(
    st.binary(min_size=32, max_size=32).map(bytes.hex),
    st.text(alphabet="0123456789abcdefABCDEF xyz", max_size=70),
    st.integers(),
)
JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


GOOD_SHARDS = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.integers(0, 99).map("part-{:05d}.parquet".format),
            "sha256": st.binary(min_size=32, max_size=32).map(bytes.hex),
            "rows": st.integers(0, 10**6),
        }
    ),
    max_size=3,
)


def _valid_manifest(shards: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": manifest.FORMAT,
        "coordinator_fingerprint": PINNED,
        "shards": shards,
        "merkle_root": manifest.merkle_root([s["sha256"] for s in shards]),
        "rows": sum(s["rows"] for s in shards),
    }


@st.composite
def manifests(draw: st.DrawFn) -> bytes:
    """Manifest documents: valid, valid but for one field, or each field right, wrong or
    missing."""
    mode = draw(st.sampled_from(["valid", "one-off", "fuzzed"]))
    if mode != "fuzzed":
        valid = _valid_manifest(draw(GOOD_SHARDS))
        if mode == "one-off":
            key = draw(st.sampled_from(sorted(valid)))
            if draw(st.booleans()):
                del valid[key]
            else:
                valid[key] = draw(JSON_VALUES)
        return manifest.encode_manifest(valid)
    shards = draw(
        st.lists(
            st.one_of(
                st.fixed_dictionaries({"name": SHARD_NAMES, "sha256": HEXES}),
                JSON_VALUES,
            ),
            max_size=4,
        )
    )
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["format"] = draw(st.one_of(st.just(manifest.FORMAT), st.text(max_size=20)))
    if draw(st.booleans()):
        doc["coordinator_fingerprint"] = draw(st.sampled_from([PINNED, OTHER.fingerprint, ""]))
    if draw(st.booleans()):
        doc["shards"] = draw(st.one_of(st.just(shards), JSON_VALUES))
    if draw(st.booleans()):
        try:
            hashes = [str(s.get("sha256", "")) for s in shards]
            right = manifest.merkle_root(hashes)
        except (AttributeError, ValueError):
            right = "0" * 64
        doc["merkle_root"] = draw(st.one_of(st.just(right), JSON_VALUES))
    doc.update(draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)))
    top = draw(st.one_of(st.just(doc), JSON_VALUES))
    if draw(st.booleans()):
        return manifest.encode_manifest(top) if isinstance(top, dict) else json.dumps(top).encode()
    return json.dumps(top, allow_nan=True).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@st.composite
def signature_documents(draw: st.DrawFn, manifest_bytes: bytes) -> bytes:
    """manifest.sig contents: right, by another key, malformed, or not JSON at all."""
    kind = draw(st.sampled_from(["right"] * 4 + ["other-key", "fields", "garbage", "json"]))
    if kind == "garbage":
        return draw(st.binary(max_size=256))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    signer = KEY if kind != "other-key" else OTHER
    document = json.loads(manifest.sign_manifest(signer, manifest_bytes))
    if kind == "fields":
        field = draw(st.sampled_from(["public_key", "signature", "algorithm", "context"]))
        document[field] = draw(
            st.one_of(
                JSON_VALUES,
                st.binary(max_size=70).map(_b64),
                st.text(alphabet="ABCDabcd+/=!é ", max_size=90),
            )
        )
        if draw(st.booleans()):
            del document[field]
    return json.dumps(document).encode()


@st.composite
def manifest_pairs(draw: st.DrawFn) -> tuple[bytes, bytes]:
    body = draw(st.one_of(manifests(), st.binary(max_size=256)))
    return body, draw(signature_documents(body))


def assert_verifies_or_integrity_error(manifest_bytes: bytes, signature_bytes: bytes) -> None:
    try:
        verified = manifest.verify_manifest(manifest_bytes, signature_bytes, PINNED)
    except IntegrityError as exc:
        event(f"refused: {exc.message.split(':')[0].split(' ')[0]}")
        return
    event("verified")
    # Only a document signed by the pinned key, naming it, with a consistent root passes.
    assert verified.fingerprint == PINNED
    doc = verified.manifest
    assert doc["format"] == manifest.FORMAT
    assert doc["coordinator_fingerprint"] == PINNED
    names = [s["name"] for s in doc["shards"]]
    assert all(n.endswith(".parquet") and "/" not in n and not n.startswith(".") for n in names)
    assert doc["merkle_root"] == manifest.merkle_root(
        [str(s.get("sha256", "")) for s in doc["shards"]]
    )


@FUZZ
@given(st.binary(max_size=512), st.binary(max_size=512))
@example(b"{}", b"")
@example(b"{}", b"null")
@example(b"{}", b'{"public_key": 5, "signature": "AA=="}')
@example(b"{}", '{"public_key": "\u00e9", "signature": "AA=="}'.encode())
@example(b"{}", b'{"public_key": "' + b"1" * 5000 + b'"}')
def test_verify_manifest_on_arbitrary_bytes_raises_only_integrity_error(
    manifest_bytes: bytes, signature_bytes: bytes
) -> None:
    assert_verifies_or_integrity_error(manifest_bytes, signature_bytes)


@FUZZ
@given(manifest_pairs())
def test_verify_manifest_on_near_valid_documents(pair: tuple[bytes, bytes]) -> None:
    assert_verifies_or_integrity_error(*pair)


def test_verify_manifest_accepts_the_valid_document() -> None:
    """The control case: the fuzzed neighbourhood above does contain a passing document."""
    sha = hashlib.sha256(b"shard").hexdigest()
    doc = {
        "format": manifest.FORMAT,
        "coordinator_fingerprint": PINNED,
        "shards": [{"name": "part-00000.parquet", "sha256": sha}],
        "merkle_root": manifest.merkle_root([sha]),
    }
    body = manifest.encode_manifest(doc)
    verified = manifest.verify_manifest(body, manifest.sign_manifest(KEY, body), PINNED)
    assert verified.manifest == doc


@pytest.mark.parametrize("nested", [b"[" * 100_000, b'{"a":' * 100_000], ids=["lists", "objects"])
def test_verify_manifest_refuses_a_deeply_nested_signature_document(nested: bytes) -> None:
    with pytest.raises(IntegrityError):
        manifest.verify_manifest(b"{}", nested, PINNED)
