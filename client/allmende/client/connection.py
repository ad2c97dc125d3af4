"""The one small class through which clients talk to a coordinator over gRPC.

It converts gRPC failures into `RemoteError`, which says whether retrying may help
(UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED from load) or not (everything else).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import grpc

from allmende.protocol.limits import MAX_MESSAGE_BYTES
from allmende.protocol.requests import sign_request
from allmende.protocol.signing import SigningKey
from allmende.v1 import allmende_pb2 as pb
from allmende.v1 import allmende_pb2_grpc as rpc

DEFAULT_TIMEOUT_S = 30.0
UPLOAD_TIMEOUT_S = 600.0
VOLUNTEER = "/allmende.v1.VolunteerService/"
TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

T = TypeVar("T")


class RemoteError(Exception):
    """A call to the coordinator failed; `transient` says whether a retry may succeed."""

    def __init__(self, code: str, details: str, transient: bool) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details
        self.transient = transient


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = (exc.details() if hasattr(exc, "details") else "") or str(code)
        raise RemoteError(code.name, details, code in TRANSIENT) from None


def parse_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"--coordinator: expected HOST:PORT, got {address!r}")
    return address


class CoordinatorClient:
    def __init__(
        self,
        address: str,
        admin_token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        signer: SigningKey | None = None,
    ) -> None:
        self.address = parse_address(address)
        # The volunteer key that signs LeaseWork, SubmitResult and ReleaseWork calls.
        self.signer = signer
        self.timeout_s = timeout_s
        self._metadata: list[tuple[str, str]] = (
            [("authorization", f"Bearer {admin_token}")] if admin_token else []
        )
        self.channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.keepalive_time_ms", 60_000),
            ],
        )
        self.volunteers = rpc.VolunteerServiceStub(self.channel)
        self.jobs = rpc.JobServiceStub(self.channel)
        self.datasets = rpc.DatasetServiceStub(self.channel)
        self.admin = rpc.AdminServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        return _call(
            lambda: method(request, timeout=timeout or self.timeout_s, metadata=self._metadata)
        )

    # volunteers
    def info(self) -> pb.GetCoordinatorInfoResponse:
        return self._unary(self.volunteers.GetCoordinatorInfo, pb.GetCoordinatorInfoRequest())

    def register(self, request: pb.RegisterVolunteerRequest) -> str:
        response = self._unary(self.volunteers.RegisterVolunteer, request)
        return str(response.volunteer_id)

    def _signed(self, name: str, method: Any, request: Any) -> Any:
        """A volunteer call, signed with `signer` (method, body hash, time, nonce)."""
        if self.signer is None:
            raise RuntimeError("volunteer calls need a signer (the volunteer's key)")
        metadata = [*self._metadata, *sign_request(self.signer, f"{VOLUNTEER}{name}", request)]
        return _call(lambda: method(request, timeout=self.timeout_s, metadata=metadata))

    def lease(self, volunteer_id: str) -> pb.LeaseWorkResponse:
        request = pb.LeaseWorkRequest(volunteer_id=volunteer_id)
        return self._signed("LeaseWork", self.volunteers.LeaseWork, request)

    def submit(self, envelope: bytes, signature: bytes, payload: bytes) -> pb.SubmitResultResponse:
        request = pb.SubmitResultRequest(envelope=envelope, signature=signature, payload=payload)
        return self._signed("SubmitResult", self.volunteers.SubmitResult, request)

    def release(self, volunteer_id: str, lease_id: str, reason: str) -> None:
        request = pb.ReleaseWorkRequest(volunteer_id=volunteer_id, lease_id=lease_id, reason=reason)
        self._signed("ReleaseWork", self.volunteers.ReleaseWork, request)

    # jobs
    def create_job(self, requests: Iterable[pb.CreateJobRequest]) -> pb.CreateJobResponse:
        return _call(
            lambda: self.jobs.CreateJob(
                iter(requests), timeout=UPLOAD_TIMEOUT_S, metadata=self._metadata
            )
        )

    def get_job(self, job_id: str) -> pb.JobStatus:
        return self._unary(self.jobs.GetJob, pb.GetJobRequest(job_id=job_id)).job

    def list_jobs(self) -> list[pb.JobStatus]:
        return list(self._unary(self.jobs.ListJobs, pb.ListJobsRequest()).jobs)

    # administration (admin token)
    def pause_job(self, job_id: str) -> pb.JobStatus:
        return self._unary(self.admin.PauseJob, pb.JobRef(job_id=job_id))

    def resume_job(self, job_id: str) -> pb.JobStatus:
        return self._unary(self.admin.ResumeJob, pb.JobRef(job_id=job_id))

    def cancel_job(self, job_id: str) -> pb.JobStatus:
        return self._unary(self.admin.CancelJob, pb.JobRef(job_id=job_id))

    def update_job(self, request: pb.UpdateJobRequest) -> pb.JobStatus:
        return self._unary(self.admin.UpdateJob, request)

    def list_volunteers(self) -> list[pb.VolunteerStatus]:
        return list(self._unary(self.admin.ListVolunteers, pb.ListVolunteersRequest()).volunteers)

    def ban_volunteer(self, volunteer_id: str, reason: str) -> pb.VolunteerStatus:
        request = pb.BanVolunteerRequest(volunteer_id=volunteer_id, reason=reason)
        return self._unary(self.admin.BanVolunteer, request)

    def unban_volunteer(self, volunteer_id: str) -> pb.VolunteerStatus:
        return self._unary(self.admin.UnbanVolunteer, pb.VolunteerRef(volunteer_id=volunteer_id))

    def overview(self, events: int = 50) -> pb.GetOverviewResponse:
        return self._unary(self.admin.GetOverview, pb.GetOverviewRequest(events=events))

    # datasets
    def manifest(self, job_id: str) -> pb.GetManifestResponse:
        return self._unary(self.datasets.GetManifest, pb.GetManifestRequest(job_id=job_id))

    def download(self, job_id: str, name: str, offset: int = 0) -> Iterator[bytes]:
        request = pb.DownloadFileRequest(job_id=job_id, name=name, offset=offset)
        stream = _call(
            lambda: self.datasets.DownloadFile(
                request, timeout=UPLOAD_TIMEOUT_S, metadata=self._metadata
            )
        )
        iterator = iter(stream)
        while True:
            chunk = _call(lambda: next(iterator, None))
            if chunk is None:
                return
            yield chunk.data
