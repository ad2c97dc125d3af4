"""Signed objects on the wire: work units and result envelopes.

Both are protobuf messages serialised once by their author, signed as bytes and parsed only
after the signature over those exact bytes has been checked. This module is the one place
that turns those bytes into plain values and back.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from allmende.protocol.errors import IntegrityError, InvalidArgument
from allmende.protocol.kinds.columns import Layout
from allmende.protocol.signing import CTX_RESULT, CTX_WORK_UNIT, SigningKey, verify
from allmende.v1 import allmende_pb2 as pb

CODEC = "shuffle+zstd"
# A bound on the energy a result may report per 1,000 items (10 kWh): far above any real
# device, low enough that a job's total cannot be swamped by one absurd claim.
MAX_ENERGY_WH_PER_1000 = 10_000.0


@dataclass(frozen=True)
class WorkUnit:
    unit_id: str
    job_id: str
    kind: str
    model: str
    model_sha256: str
    texts: tuple[str, ...]
    dims: int
    result_dtype: str
    created_ms: int
    lease_id: str = ""  # set when the unit is composed for one lease
    # Image kinds: one image file per row, beside `texts` ('' there when the kind takes no
    # text). Empty for text kinds.
    images: tuple[bytes, ...] = ()
    # Rows the volunteer fetches (opt-in): one URL per row beside `images`, '' for a row
    # whose bytes are in `images`; empty when no row is a URL.
    urls: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return len(self.texts)

    def row(self, i: int) -> tuple[str, bytes]:
        """Row `i`'s inputs: its text and its image (b'' for text kinds)."""
        return self.texts[i], self.images[i] if self.images else b""

    def url(self, i: int) -> str:
        """Row `i`'s URL ('' for a row given by its bytes)."""
        return self.urls[i] if self.urls else ""


def encode_unit(unit: WorkUnit) -> bytes:
    message = pb.WorkUnit(
        unit_id=unit.unit_id,
        job_id=unit.job_id,
        kind=unit.kind,
        model=unit.model,
        model_sha256=unit.model_sha256,
        texts=list(unit.texts),
        dims=unit.dims,
        result_dtype=unit.result_dtype,
        created_unix_ms=unit.created_ms,
        lease_id=unit.lease_id,
        images=list(unit.images),
        urls=list(unit.urls),
    )
    return bytes(message.SerializeToString(deterministic=True))


def sign_unit(key: SigningKey, unit: WorkUnit) -> tuple[bytes, bytes]:
    blob = encode_unit(unit)
    return blob, key.sign(CTX_WORK_UNIT, blob)


def decode_unit(blob: bytes) -> WorkUnit:
    message = pb.WorkUnit()
    try:
        message.ParseFromString(blob)
    except DecodeError as exc:
        raise InvalidArgument("unit", f"a serialised WorkUnit ({exc})") from None
    return WorkUnit(
        unit_id=message.unit_id,
        job_id=message.job_id,
        kind=message.kind,
        model=message.model,
        model_sha256=message.model_sha256,
        texts=tuple(message.texts),
        dims=message.dims,
        result_dtype=message.result_dtype,
        created_ms=message.created_unix_ms,
        lease_id=message.lease_id,
        images=tuple(message.images),
        urls=tuple(message.urls),
    )


def open_unit(blob: bytes, signature: bytes, coordinator_key: bytes) -> WorkUnit:
    """Verify a work unit's signature over the bytes received, then parse them."""
    verify(coordinator_key, CTX_WORK_UNIT, blob, signature)
    return decode_unit(blob)


# Columns a result may have, and the widest a column may be (8192 rows x 4096 float32 is
# the codec's cap anyway).
MAX_RESULT_COLUMNS = 16
MAX_COLUMN_WIDTH = 65_536


@dataclass(frozen=True)
class ResultEnvelope:
    unit_id: str
    lease_id: str
    volunteer_id: str
    rows: int
    columns: tuple[Layout, ...]  # the result's columns, in payload order
    codec: str
    payload_sha256: bytes
    unit_sha256: bytes
    model_sha256: str
    device: str
    compute_ms: int
    created_ms: int
    claimed_tokens: int = 0
    # Energy for this unit scaled to 1,000 items, in Wh (0: unknown); `energy_estimated`:
    # summed from power readings, not read from the device's own energy counter.
    energy_wh_per_1000: float = 0.0
    energy_estimated: bool = False


def encode_envelope(env: ResultEnvelope) -> bytes:
    message = pb.ResultEnvelope(
        unit_id=env.unit_id,
        lease_id=env.lease_id,
        volunteer_id=env.volunteer_id,
        rows=env.rows,
        columns=[pb.ResultColumn(name=c.name, dtype=c.dtype, width=c.width) for c in env.columns],
        codec=env.codec,
        payload_sha256=env.payload_sha256,
        unit_sha256=env.unit_sha256,
        model_sha256=env.model_sha256,
        device=env.device,
        compute_ms=env.compute_ms,
        created_unix_ms=env.created_ms,
        claimed_tokens=env.claimed_tokens,
        energy_wh_per_1000=env.energy_wh_per_1000,
        energy_estimated=env.energy_estimated,
    )
    return bytes(message.SerializeToString(deterministic=True))


def decode_envelope(blob: bytes) -> ResultEnvelope:
    message = pb.ResultEnvelope()
    try:
        message.ParseFromString(blob)
    except DecodeError as exc:
        raise InvalidArgument("envelope", f"a serialised ResultEnvelope ({exc})") from None
    for field in ("unit_id", "lease_id", "volunteer_id"):
        if not getattr(message, field):
            raise InvalidArgument(f"envelope.{field}", "a non-empty string")
    if message.codec != CODEC:
        raise InvalidArgument("envelope.codec", f"{CODEC!r}, got {message.codec!r}")
    if len(message.payload_sha256) != 32:
        raise InvalidArgument("envelope.payload_sha256", "32 bytes")
    energy = message.energy_wh_per_1000
    if not (math.isfinite(energy) and 0.0 <= energy <= MAX_ENERGY_WH_PER_1000):
        raise InvalidArgument(
            "envelope.energy_wh_per_1000",
            f"a number of watt-hours from 0 to {MAX_ENERGY_WH_PER_1000:g}, got {energy!r}",
        )
    if not 1 <= len(message.columns) <= MAX_RESULT_COLUMNS:
        raise InvalidArgument(
            "envelope.columns",
            f"1 to {MAX_RESULT_COLUMNS} result columns, got {len(message.columns)}",
        )
    for n, column in enumerate(message.columns):
        if not column.name or not 1 <= column.width <= MAX_COLUMN_WIDTH:
            raise InvalidArgument(
                f"envelope.columns[{n}]",
                f"a named column 1 to {MAX_COLUMN_WIDTH} values wide, got "
                f"{column.name[:40]!r} x {column.width}",
            )
    return ResultEnvelope(
        unit_id=message.unit_id,
        lease_id=message.lease_id,
        volunteer_id=message.volunteer_id,
        rows=message.rows,
        columns=tuple(Layout(c.name, c.dtype, c.width) for c in message.columns),
        codec=message.codec,
        payload_sha256=message.payload_sha256,
        unit_sha256=message.unit_sha256,
        model_sha256=message.model_sha256,
        device=message.device,
        compute_ms=message.compute_ms,
        created_ms=message.created_unix_ms,
        claimed_tokens=message.claimed_tokens,
        energy_wh_per_1000=energy,
        energy_estimated=message.energy_estimated,
    )


def sign_envelope(key: SigningKey, env: ResultEnvelope) -> tuple[bytes, bytes]:
    blob = encode_envelope(env)
    return blob, key.sign(CTX_RESULT, blob)


def check_payload(env: ResultEnvelope, payload: bytes) -> None:
    if hashlib.sha256(payload).digest() != env.payload_sha256:
        raise IntegrityError("payload does not match the sha256 in its signed envelope")
