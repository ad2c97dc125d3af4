"""Test volunteers that speak the real protocol: a raw RPC volunteer and cheap computers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from allmende.client.connection import CoordinatorClient
from allmende.protocol import codec
from allmende.protocol.kinds.columns import Layout
from allmende.protocol.signing import CTX_REGISTER, SigningKey
from allmende.protocol.wire import CODEC, ResultEnvelope, WorkUnit, decode_unit, sign_envelope
from allmende.v1 import allmende_pb2 as pb


def text_vector(text: str, dims: int) -> np.ndarray:
    """A deterministic unit vector per text: what every honest fake volunteer computes."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dims)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


class HashComputer:
    """A cheap honest computer for tests of the protocol, not of the model."""

    device = "cpu"

    def compute(self, unit: WorkUnit) -> np.ndarray:
        return np.stack([text_vector(t, unit.dims) for t in unit.texts])


class RandomComputer:
    """A cheater: random unit vectors of the right shape."""

    device = "cpu"

    def __init__(self, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)

    def compute(self, unit: WorkUnit) -> np.ndarray:
        rows = self.rng.standard_normal((len(unit.texts), unit.dims))
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class RawVolunteer:
    """Drives the volunteer RPCs by hand, for tests that need to misbehave."""

    client: CoordinatorClient
    key: SigningKey = field(default_factory=SigningKey.generate)
    volunteer_id: str = ""

    def register(self) -> str:
        # A client of its own: volunteer calls are signed with this volunteer's key.
        self.client = CoordinatorClient(self.client.address, signer=self.key)
        self.volunteer_id = self.client.register(
            pb.RegisterVolunteerRequest(
                public_key=self.key.public_key, display_name="raw",
                signature=self.key.sign(CTX_REGISTER, self.key.public_key),
            )
        )
        return self.volunteer_id

    def lease(self) -> tuple[pb.Lease, WorkUnit] | None:
        response = self.client.lease(self.volunteer_id)
        if not response.HasField("lease"):
            return None
        return response.lease, decode_unit(response.lease.unit.unit)

    def result(self, lease: pb.Lease, unit: WorkUnit,
               matrix: np.ndarray) -> tuple[bytes, bytes, bytes]:
        encoded = codec.encode(matrix, unit.result_dtype)
        envelope = ResultEnvelope(
            unit_id=unit.unit_id, lease_id=lease.lease_id, volunteer_id=self.volunteer_id,
            rows=encoded.rows, columns=(Layout("embedding", encoded.dtype, encoded.dims),),
            codec=CODEC,
            payload_sha256=hashlib.sha256(encoded.payload).digest(),
            unit_sha256=hashlib.sha256(lease.unit.unit).digest(),
            model_sha256=unit.model_sha256, device="cpu", compute_ms=1, created_ms=0,
        )
        blob, signature = sign_envelope(self.key, envelope)
        return blob, signature, encoded.payload

    def submit(
        self, lease: pb.Lease, unit: WorkUnit, matrix: np.ndarray
    ) -> pb.SubmitResultResponse:
        return self.client.submit(*self.result(lease, unit, matrix))
