"""Thin gRPC servicers: protobuf in, one call into the domain, protobuf out."""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator

import grpc

from allmende.coordinator.domain.coordinator import Coordinator, JobView
from allmende.coordinator.domain.jobs import InputRecord, JobRequest, job_rule
from allmende.coordinator.domain.leasing import MAX_LEASE_UNITS
from allmende.coordinator.domain.submit import SubmitOutcome
from allmende.coordinator.domain.trust import peer_address
from allmende.coordinator.metrics import Metrics
from allmende.coordinator.transport.errors import MAX_DETAILS, STATUS, streaming, unary
from allmende.protocol.errors import InvalidArgument, ResourceExhausted, Unauthenticated
from allmende.protocol.kinds.base import rule_text
from allmende.protocol.limits import MAX_JOB_BYTES, MAX_JOB_ITEMS
from allmende.v1 import allmende_pb2 as pb
from allmende.v1 import allmende_pb2_grpc as rpc

DOWNLOAD_CHUNK = 1 << 20


def _bearer(context: grpc.ServicerContext) -> str:
    sent = ""
    for key, value in context.invocation_metadata():
        if key == "authorization" and isinstance(value, str):
            sent = value.removeprefix("Bearer ").strip()
    return sent


def check_admin(context: grpc.ServicerContext, token: str) -> None:
    """Admin RPCs carry `authorization: Bearer <token>` metadata."""
    sent = _bearer(context)
    if not sent:
        raise Unauthenticated("admin token: expected `authorization: Bearer <token>` metadata")
    if not hmac.compare_digest(sent.encode(), token.encode()):
        raise Unauthenticated("admin token: does not match this coordinator's admin.token")


def check_reader(context: grpc.ServicerContext, tokens: tuple[str, ...]) -> None:
    """Researcher RPCs (job status, datasets) are open unless the coordinator serves
    `--private`; then they need the reader token or the admin token."""
    if not tokens:
        return
    sent = _bearer(context)
    if not sent:
        raise Unauthenticated(
            "token: this coordinator is private; expected `authorization: Bearer <token>` "
            "metadata with its reader.token (--token-file)"
        )
    if not any(hmac.compare_digest(sent.encode(), t.encode()) for t in tokens):
        raise Unauthenticated("token: matches neither this coordinator's reader nor admin token")


def job_status_pb(view: JobView, items_per_s: float = 0.0) -> pb.JobStatus:
    job, counts = view.job, view.counts
    s = job.settings
    return pb.JobStatus(
        job_id=job.job_id,
        name=job.name,
        state=job.state,
        spec=pb.JobSpec(
            name=job.name,
            kind=s.kind,
            model=s.model,
            redundancy=s.redundancy,
            unit_size=s.unit_size,
            tau=s.tau,
            max_replicas=s.max_replicas,
            lease_seconds=s.lease_seconds,
            result_dtype=s.result_dtype,
            gold_fraction=s.gold_fraction,
            rule=rule_text(job_rule(s)),
            license=s.license,
        ),
        items=job.items,
        unique_items=job.unique_items,
        fetch_rows=job.fetch_rows,
        units_total=counts.units_total,
        units_accepted=counts.units_accepted,
        units_failed=counts.units_failed,
        units_in_progress=counts.units_in_progress,
        results_received=counts.results_received,
        results_rejected=counts.results_rejected,
        min_agreement=counts.min_agreement,
        created_unix_ms=job.created_ms,
        completed_unix_ms=job.completed_ms,
        failed_units=[pb.FailedUnit(unit_id=u, reason=r) for u, r in counts.failed_units],
        reason=job.reason,
        volunteers=counts.volunteers,
        priority=job.priority,
        items_per_s=items_per_s,
    )


class VolunteerServicer(rpc.VolunteerServiceServicer):
    def __init__(self, coordinator: Coordinator, metrics: Metrics | None = None) -> None:
        self.c = coordinator
        self.metrics = metrics

    def _peer(self, context: grpc.ServicerContext) -> str:
        """The caller's network address; loopback only when the policy does not exempt it."""
        return peer_address(context.peer(), keep_loopback=not self.c.policy.loopback_exempt)

    @unary
    def GetCoordinatorInfo(
        self, request: pb.GetCoordinatorInfoRequest, context: grpc.ServicerContext
    ) -> pb.GetCoordinatorInfoResponse:
        public_key, fp, version, models, kinds = self.c.info()
        return pb.GetCoordinatorInfoResponse(
            public_key=public_key,
            fingerprint=fp,
            version=version,
            models=models,
            task_kinds=kinds,
            tls_cert_sha256=self.c.tls_binding[0],
            tls_cert_signature=self.c.tls_binding[1],
            key_chain=[
                pb.SignedKeyRotation(rotation=r, signature=sig) for r, sig in self.c.key_chain
            ],
        )

    @unary
    def RegisterVolunteer(
        self, request: pb.RegisterVolunteerRequest, context: grpc.ServicerContext
    ) -> pb.RegisterVolunteerResponse:
        volunteer_id = self.c.register_volunteer(
            request.public_key,
            request.display_name,
            request.client_version,
            request.hardware,
            request.signature,
            self._peer(context),
        )
        return pb.RegisterVolunteerResponse(volunteer_id=volunteer_id)

    @unary
    def LeaseWork(
        self, request: pb.LeaseWorkRequest, context: grpc.ServicerContext
    ) -> pb.LeaseWorkResponse:
        started = time.perf_counter()
        offer = self.c.lease_work(
            request.volunteer_id,
            self._peer(context),
            request.max_units or 1,
            fetch_urls=request.fetch_urls,
        )
        grants = offer.grants
        if self.metrics is not None:
            self.metrics.lease_latency.observe(time.perf_counter() - started)
            if grants:
                self.metrics.units_leased.inc(len(grants))
        leases = [
            pb.Lease(
                lease_id=g.lease_id,
                deadline_unix_ms=g.deadline_ms,
                unit=pb.SignedWorkUnit(unit=g.blob, signature=g.signature),
            )
            for g in grants
        ]
        return pb.LeaseWorkResponse(
            lease=leases[0] if leases else None,
            more_leases=leases[1:],
            work_remaining=offer.work_remaining,
            retry_after_ms=offer.retry_after_ms,
            notice=offer.notice,
        )

    def _count(self, outcome: SubmitOutcome) -> None:
        if self.metrics is None:
            return
        m = self.metrics
        m.results.labels(outcome.status).inc()
        if outcome.unit_status == "accepted":
            m.units_accepted.inc()
            m.items_accepted.inc(outcome.rows)
        elif outcome.unit_status == "failed":
            m.units_failed.inc()

    @unary
    def SubmitResult(
        self, request: pb.SubmitResultRequest, context: grpc.ServicerContext
    ) -> pb.SubmitResultResponse:
        started = time.perf_counter()
        outcome = self.c.submit_result(
            request.envelope, request.signature, request.payload, peer_address(context.peer())
        )
        if self.metrics is not None:
            self.metrics.submit_latency.observe(time.perf_counter() - started)
        self._count(outcome)
        return pb.SubmitResultResponse(status=outcome.status, reason=outcome.reason)

    @unary
    def SubmitResults(
        self, request: pb.SubmitResultsRequest, context: grpc.ServicerContext
    ) -> pb.SubmitResultsResponse:
        started = time.perf_counter()
        answers = self.c.submit_results(
            request.volunteer_id,
            [(r.envelope, r.signature, r.payload) for r in request.results],
            MAX_LEASE_UNITS,
            peer_address(context.peer()),
        )
        response = pb.SubmitResultsResponse()
        for answer in answers:
            if isinstance(answer, SubmitOutcome):
                self._count(answer)
                response.results.add(status=answer.status, reason=answer.reason)
            else:
                code = STATUS.get(type(answer), grpc.StatusCode.INTERNAL).name
                if self.metrics is not None:
                    self.metrics.rejected_requests.labels("SubmitResults", code).inc()
                response.results.add(
                    status="refused", reason=answer.message[:MAX_DETAILS], code=code
                )
        if self.metrics is not None:
            self.metrics.submit_latency.observe(time.perf_counter() - started)
        return response

    @unary
    def ReleaseWork(
        self, request: pb.ReleaseWorkRequest, context: grpc.ServicerContext
    ) -> pb.ReleaseWorkResponse:
        self.c.release_work(request.volunteer_id, request.lease_id, request.reason)
        return pb.ReleaseWorkResponse()

    @unary
    def ListLeases(
        self, request: pb.ListLeasesRequest, context: grpc.ServicerContext
    ) -> pb.ListLeasesResponse:
        grants = self.c.held_leases(request.volunteer_id)
        return pb.ListLeasesResponse(
            leases=[
                pb.Lease(
                    lease_id=g.lease_id,
                    deadline_unix_ms=g.deadline_ms,
                    unit=pb.SignedWorkUnit(unit=g.blob, signature=g.signature),
                )
                for g in grants
            ]
        )

    @unary
    def GetVerdicts(
        self, request: pb.GetVerdictsRequest, context: grpc.ServicerContext
    ) -> pb.GetVerdictsResponse:
        report = self.c.verdicts(request.volunteer_id, list(request.unit_ids))
        t = report.totals
        return pb.GetVerdictsResponse(
            verdicts=[
                pb.ResultVerdict(
                    unit_id=v.unit_id,
                    job_id=v.job_id,
                    verdict=v.verdict,
                    reason=v.reason,
                    credit=v.credit,
                    rows=v.rows,
                )
                for v in report.verdicts
            ],
            totals=pb.VerdictTotals(
                results_valid=t.results_valid,
                results_invalid=t.results_invalid,
                results_pending=t.results_pending,
                credit=t.credit,
                items_valid=t.items_valid,
            ),
        )


class JobServicer(rpc.JobServiceServicer):
    def __init__(
        self,
        coordinator: Coordinator,
        admin_token: str,
        metrics: Metrics | None = None,
        readers: tuple[str, ...] = (),
    ) -> None:
        self.c = coordinator
        self.admin_token = admin_token
        self.metrics = metrics
        self.readers = readers  # tokens researcher calls need (none: open)

    @unary
    def CreateJob(
        self, request_iterator: Iterator[pb.CreateJobRequest], context: grpc.ServicerContext
    ) -> pb.CreateJobResponse:
        check_admin(context, self.admin_token)
        spec: pb.JobSpec | None = None
        source = ""
        records: list[InputRecord] = []
        size = 0
        for message in request_iterator:
            if message.HasField("spec"):
                if spec is not None:
                    raise InvalidArgument("spec", "exactly one spec, in the first message")
                spec = message.spec
                source = message.source_name
            elif spec is None:
                raise InvalidArgument("spec", "the job spec in the first message")
            if len(records) + len(message.items) > MAX_JOB_ITEMS:
                raise ResourceExhausted(f"a job holds at most {MAX_JOB_ITEMS} items")
            size += sum(
                len(item.text)
                + len(item.id)
                + len(item.image)
                + len(item.url)
                + len(item.source_url)
                for item in message.items
            )
            if size > MAX_JOB_BYTES:
                raise ResourceExhausted(f"a job upload holds at most {MAX_JOB_BYTES} bytes")
            records.extend(
                InputRecord(
                    item.id,
                    item.text,
                    item.line or len(records) + n + 1,
                    item.image if item.HasField("image") else None,
                    item.url,
                    item.source_url,
                )
                for n, item in enumerate(message.items)
            )
        if spec is None:
            raise InvalidArgument("spec", "the job spec in the first message")
        req = JobRequest(
            name=spec.name,
            kind=spec.kind,
            model=spec.model,
            redundancy=spec.redundancy,
            unit_size=spec.unit_size,
            tau=spec.tau,
            max_replicas=spec.max_replicas,
            lease_seconds=spec.lease_seconds,
            result_dtype=spec.result_dtype,
            source_name=source[:500],
            gold_fraction=spec.gold_fraction if spec.HasField("gold_fraction") else None,
            rule=dict(spec.rule),
            license=spec.license,
        )
        job_id, items, unique, units = self.c.create_job(req, records)
        return pb.CreateJobResponse(job_id=job_id, items=items, unique_items=unique, units=units)

    @unary
    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.GetJobResponse:
        check_reader(context, self.readers)
        return pb.GetJobResponse(job=job_status_pb(self.c.find_job(request.job_id)))

    @unary
    def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.ServicerContext
    ) -> pb.ListJobsResponse:
        check_reader(context, self.readers)
        return pb.ListJobsResponse(jobs=[job_status_pb(v) for v in self.c.list_jobs()])


class DatasetServicer(rpc.DatasetServiceServicer):
    def __init__(
        self,
        coordinator: Coordinator,
        metrics: Metrics | None = None,
        readers: tuple[str, ...] = (),
    ) -> None:
        self.c = coordinator
        self.metrics = metrics
        self.readers = readers

    @unary
    def GetManifest(
        self, request: pb.GetManifestRequest, context: grpc.ServicerContext
    ) -> pb.GetManifestResponse:
        check_reader(context, self.readers)
        manifest, signature = self.c.manifest(request.job_id)
        return pb.GetManifestResponse(manifest=manifest, signature=signature)

    @streaming
    def DownloadFile(
        self, request: pb.DownloadFileRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.FileChunk]:
        check_reader(context, self.readers)
        path = self.c.dataset_file(request.job_id, request.name)
        size = path.stat().st_size
        if request.offset > size:
            raise InvalidArgument("offset", f"0 to {size} (the file's size), got {request.offset}")
        with path.open("rb") as handle:
            handle.seek(request.offset)
            while chunk := handle.read(DOWNLOAD_CHUNK):
                yield pb.FileChunk(data=chunk)
