"""A raw volunteer and admin over plain gRPC stubs, for tests that send hostile input.

The real engine never sends a forged signature or a NaN row; this helper builds every
message itself (its own Ed25519 key, its own envelopes and payloads) so a test can break
exactly one thing and assert the coordinator's answer with the exact `grpc.StatusCode`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import grpc
import numpy as np
import pytest

from allmende.protocol import codec
from allmende.protocol.kinds.columns import Layout
from allmende.protocol.requests import sign_request
from allmende.protocol.signing import CTX_REGISTER, SigningKey
from allmende.protocol.wire import CODEC, ResultEnvelope, WorkUnit, decode_unit, sign_envelope
from allmende.v1 import allmende_pb2 as pb
from allmende.v1 import allmende_pb2_grpc as rpc

# Larger than the coordinator's 16 MiB cap, so the *server* is the one that refuses.
CLIENT_MAX_BYTES = 64 * 1024 * 1024
TIMEOUT_S = 20.0
MODEL = "all-MiniLM-L6-v2"


def channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_send_message_length", CLIENT_MAX_BYTES),
            ("grpc.max_receive_message_length", CLIENT_MAX_BYTES),
        ],
    )


def expect_error(call: Callable[[], Any], code: grpc.StatusCode, *needles: str) -> str:
    """Run `call`, assert it fails with `code` and details naming every needle."""
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        # A server-streaming call fails only once it is read.
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    error: Any = info.value
    details = error.details() or ""
    assert error.code() == code, f"expected {code}, got {error.code()}: {details}"
    for needle in needles:
        assert needle.lower() in details.lower(), f"{needle!r} not in {details!r}"
    return details


def job_stream(texts: list[str], ids: list[str] | None = None,
               **fields: Any) -> list[pb.CreateJobRequest]:
    """A CreateJob stream: the spec (embed-text with the default model unless told), then items."""
    fields.setdefault("kind", "embed-text")
    fields.setdefault("model", MODEL)
    ids = ids if ids is not None else [f"id-{i}" for i in range(len(texts))]
    items = [pb.InputItem(id=i, text=t, line=n + 1)
             for n, (i, t) in enumerate(zip(ids, texts, strict=True))]
    return [pb.CreateJobRequest(spec=pb.JobSpec(**fields), source_name="test.jsonl"),
            pb.CreateJobRequest(items=items)]


def unit_rows(rows: int, dims: int, seed: int = 0) -> np.ndarray:
    """Random unit vectors: honest-looking embeddings of the right shape."""
    matrix = np.random.default_rng(seed).standard_normal((rows, dims)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def text_rows(texts: Iterable[str], dims: int) -> np.ndarray:
    """Unit vectors that depend only on each text, so independent replicas agree."""
    out = []
    for text in texts:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        out.append(unit_rows(1, dims, seed)[0])
    return np.stack(out)


class FakeComputer:
    """A cheap stand-in for the torch model: `device` and `compute(unit)` only."""

    device = "cpu"

    def __init__(self) -> None:
        self.units: list[str] = []

    def compute(self, unit: WorkUnit) -> np.ndarray:
        self.units.append(unit.unit_id)
        return text_rows(unit.texts, unit.dims)


class RawVolunteer:
    """A volunteer made of plain stubs and its own key."""

    def __init__(self, address: str, key: SigningKey | None = None) -> None:
        self.key = key or SigningKey.generate()
        self.channel = channel(address)
        self.stub = rpc.VolunteerServiceStub(self.channel)
        self.volunteer_id = ""

    def close(self) -> None:
        self.channel.close()

    def register(self) -> str:
        response = self.stub.RegisterVolunteer(
            pb.RegisterVolunteerRequest(
                public_key=self.key.public_key, display_name="raw", client_version="raw/0",
                hardware="test", signature=self.key.sign(CTX_REGISTER, self.key.public_key),
            ),
            timeout=TIMEOUT_S,
        )
        self.volunteer_id = response.volunteer_id
        return self.volunteer_id

    def signed(self, method: str, request: Any) -> list[tuple[str, str | bytes]]:
        """Request-signature metadata for a volunteer call (see protocol/requests.py)."""
        return sign_request(self.key, f"/allmende.v1.VolunteerService/{method}", request)

    def lease_response(self) -> pb.LeaseWorkResponse:
        request = pb.LeaseWorkRequest(volunteer_id=self.volunteer_id)
        return self.stub.LeaseWork(request, timeout=TIMEOUT_S,
                                   metadata=self.signed("LeaseWork", request))

    def lease(self) -> pb.Lease:
        response = self.lease_response()
        assert response.HasField("lease"), "expected a lease"
        return response.lease

    def release(self, lease_id: str, reason: str = "test") -> pb.ReleaseWorkResponse:
        request = pb.ReleaseWorkRequest(volunteer_id=self.volunteer_id, lease_id=lease_id,
                                        reason=reason)
        return self.stub.ReleaseWork(request, timeout=TIMEOUT_S,
                                     metadata=self.signed("ReleaseWork", request))

    def envelope(self, lease: pb.Lease, payload: bytes, rows: int, dims: int,
                 **overrides: Any) -> ResultEnvelope:
        unit = decode_unit(lease.unit.unit)
        env = ResultEnvelope(
            unit_id=unit.unit_id, lease_id=lease.lease_id, volunteer_id=self.volunteer_id,
            rows=rows, columns=(Layout("embedding", unit.result_dtype, dims),), codec=CODEC,
            payload_sha256=hashlib.sha256(payload).digest(),
            unit_sha256=hashlib.sha256(lease.unit.unit).digest(),
            model_sha256=unit.model_sha256, device="cpu", compute_ms=1,
            created_ms=int(time.time() * 1000),
        )
        return replace(env, **overrides)

    def result(self, lease: pb.Lease, matrix: np.ndarray | None = None,
               payload: bytes | None = None, rows: int | None = None, dims: int | None = None,
               signer: SigningKey | None = None, **overrides: Any,
               ) -> tuple[bytes, bytes, bytes]:
        """(envelope, signature, payload) for a lease; honest unless told otherwise."""
        unit = decode_unit(lease.unit.unit)
        if matrix is None:
            matrix = text_rows(unit.texts, unit.dims)
        if payload is None:
            payload = codec.encode(matrix, unit.result_dtype).payload
        env = self.envelope(lease, payload, matrix.shape[0] if rows is None else rows,
                            matrix.shape[1] if dims is None else dims, **overrides)
        blob, signature = sign_envelope(signer or self.key, env)
        return blob, signature, payload

    def submit(self, envelope: bytes, signature: bytes, payload: bytes,
               ) -> pb.SubmitResultResponse:
        request = pb.SubmitResultRequest(envelope=envelope, signature=signature,
                                         payload=payload)
        return self.stub.SubmitResult(request, timeout=TIMEOUT_S,
                                      metadata=self.signed("SubmitResult", request))


class RawAdmin:
    """Job and dataset stubs, with the admin token when one is given."""

    def __init__(self, address: str, token: str | None = None) -> None:
        self.channel = channel(address)
        self.jobs = rpc.JobServiceStub(self.channel)
        self.datasets = rpc.DatasetServiceStub(self.channel)
        self.volunteers = rpc.VolunteerServiceStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []

    def close(self) -> None:
        self.channel.close()

    def create_job(self, requests: Iterable[pb.CreateJobRequest],
                   metadata: list[tuple[str, str]] | None = None) -> pb.CreateJobResponse:
        return self.jobs.CreateJob(
            iter(list(requests)), timeout=TIMEOUT_S,
            metadata=self.metadata if metadata is None else metadata,
        )

    def get_job(self, job_id: str) -> pb.JobStatus:
        return self.jobs.GetJob(pb.GetJobRequest(job_id=job_id), timeout=TIMEOUT_S).job

    def job_ids(self) -> list[str]:
        jobs = self.jobs.ListJobs(pb.ListJobsRequest(), timeout=TIMEOUT_S).jobs
        return sorted(job.job_id for job in jobs)

    def info(self) -> pb.GetCoordinatorInfoResponse:
        return self.volunteers.GetCoordinatorInfo(pb.GetCoordinatorInfoRequest(),
                                                  timeout=TIMEOUT_S)
