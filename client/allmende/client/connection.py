"""The one small class through which clients talk to a coordinator over gRPC.

It converts gRPC failures into `RemoteError`, which says whether retrying may help
(UNAVAILABLE) or not (everything else: a refused request stays refused). Every call has a
deadline.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from allmende.protocol.limits import MAX_MESSAGE_BYTES, MAX_REASON_CHARS
from allmende.protocol.requests import sign_request
from allmende.protocol.signing import SigningKey
from allmende.protocol.tls import cert_sha256, fetch_certificate, is_loopback, server_name
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
        # A coordinator's rate limit (RESOURCE_EXHAUSTED, "... retry in N s") passes with
        # time; other RESOURCE_EXHAUSTED answers (a message too large) do not.
        rate_limited = code == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry in" in details
        raise RemoteError(code.name, details, code in TRANSIENT or rate_limited) from None


def parse_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"--coordinator: expected HOST:PORT, got {address!r}")
    return address


class CoordinatorClient:
    """Talks to one coordinator. The channel opens on first use: TLS when the coordinator
    offers it (the certificate is then pinned through the coordinator key, see
    protocol/tls.py), plaintext only to a loopback address or with `insecure`."""

    def __init__(
        self,
        address: str,
        admin_token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        signer: SigningKey | None = None,
        insecure: bool = False,
    ) -> None:
        self.address = parse_address(address)
        # The volunteer key that signs LeaseWork, SubmitResult(s) and ReleaseWork calls.
        self.signer = signer
        self.timeout_s = timeout_s
        self.insecure = insecure or os.environ.get("ALLMENDE_INSECURE") == "1"
        self._metadata: list[tuple[str, str]] = (
            [("authorization", f"Bearer {admin_token}")] if admin_token else []
        )
        self._channel: grpc.Channel | None = None
        self._stubs: dict[str, Any] = {}
        self._lock = threading.Lock()
        # sha256 of the TLS certificate this channel trusts; empty for plaintext.
        self.tls_cert_sha256 = b""

    @property
    def channel(self) -> grpc.Channel:
        with self._lock:
            if self._channel is None:
                self._channel = self._open()
            return self._channel

    def _open(self) -> grpc.Channel:
        host, _, port = self.address.rpartition(":")
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
        ]
        try:
            pem = fetch_certificate(host.strip("[]"), int(port), timeout_s=min(5.0, self.timeout_s))
        except OSError as exc:
            raise RemoteError("UNAVAILABLE", f"cannot reach {self.address}: {exc}", True) from None
        if pem is not None:
            self.tls_cert_sha256 = cert_sha256(pem)
            options.append(("grpc.ssl_target_name_override", server_name(pem)))
            credentials = grpc.ssl_channel_credentials(root_certificates=pem)
            return grpc.secure_channel(self.address, credentials, options=options)
        if not (is_loopback(host) or self.insecure):
            raise RemoteError(
                "FAILED_PRECONDITION",
                f"{self.address} does not offer TLS; use --insecure (or ALLMENDE_INSECURE=1) "
                "only on a network you trust",
                False,
            )
        return grpc.insecure_channel(self.address, options=options)

    def _stub(self, name: str, factory: Callable[[grpc.Channel], Any]) -> Any:
        stub = self._stubs.get(name)
        if stub is None:
            stub = self._stubs[name] = factory(self.channel)
        return stub

    @property
    def volunteers(self) -> rpc.VolunteerServiceStub:
        return self._stub("volunteers", rpc.VolunteerServiceStub)

    @property
    def jobs(self) -> rpc.JobServiceStub:
        return self._stub("jobs", rpc.JobServiceStub)

    @property
    def datasets(self) -> rpc.DatasetServiceStub:
        return self._stub("datasets", rpc.DatasetServiceStub)

    @property
    def admin(self) -> rpc.AdminServiceStub:
        return self._stub("admin", rpc.AdminServiceStub)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

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

    def _signed(self, name: str, method: Any, request: Any, timeout: float | None = None) -> Any:
        """A volunteer call, signed with `signer` (method, body hash, time, nonce)."""
        if self.signer is None:
            raise RuntimeError("volunteer calls need a signer (the volunteer's key)")
        metadata = [*self._metadata, *sign_request(self.signer, f"{VOLUNTEER}{name}", request)]
        return _call(lambda: method(request, timeout=timeout or self.timeout_s, metadata=metadata))

    def lease(self, volunteer_id: str, max_units: int = 1) -> pb.LeaseWorkResponse:
        """Up to `max_units` leases: the first in `lease`, the others in `more_leases`."""
        request = pb.LeaseWorkRequest(
            volunteer_id=volunteer_id, max_units=max_units if max_units > 1 else 0
        )
        return self._signed("LeaseWork", self.volunteers.LeaseWork, request)

    def submit(self, envelope: bytes, signature: bytes, payload: bytes) -> pb.SubmitResultResponse:
        request = pb.SubmitResultRequest(envelope=envelope, signature=signature, payload=payload)
        return self._signed("SubmitResult", self.volunteers.SubmitResult, request)

    def submit_many(
        self, volunteer_id: str, results: Sequence[tuple[bytes, bytes, bytes]]
    ) -> pb.SubmitResultsResponse:
        """Several (envelope, signature, payload) results in one call, each answered alone."""
        request = pb.SubmitResultsRequest(
            volunteer_id=volunteer_id,
            results=[
                pb.SubmitResultRequest(envelope=e, signature=s, payload=p) for e, s, p in results
            ],
        )
        return self._signed("SubmitResults", self.volunteers.SubmitResults, request)

    def release(self, volunteer_id: str, lease_id: str, reason: str) -> None:
        request = pb.ReleaseWorkRequest(
            volunteer_id=volunteer_id, lease_id=lease_id, reason=reason[:MAX_REASON_CHARS]
        )
        self._signed("ReleaseWork", self.volunteers.ReleaseWork, request)

    def held_leases(self, volunteer_id: str) -> list[pb.Lease]:
        """The unexpired leases this volunteer holds, each with its unit as handed out."""
        request = pb.ListLeasesRequest(volunteer_id=volunteer_id)
        return list(self._signed("ListLeases", self.volunteers.ListLeases, request).leases)

    def verdicts(self, volunteer_id: str, unit_ids: Sequence[str]) -> pb.GetVerdictsResponse:
        """The final verdicts on this volunteer's results for `unit_ids` (undecided ones are
        left out), and its lifetime totals."""
        request = pb.GetVerdictsRequest(volunteer_id=volunteer_id, unit_ids=list(unit_ids))
        # Short: asking is best effort and must never hold up work or a stop.
        return self._signed("GetVerdicts", self.volunteers.GetVerdicts, request, timeout=5.0)

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
