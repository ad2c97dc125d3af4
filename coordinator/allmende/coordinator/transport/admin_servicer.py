"""The administration servicer: job control, volunteer bans and the overview for `top`.

Every call needs the admin token.
"""

from __future__ import annotations

import grpc

from allmende.coordinator.domain.admin import Admin, VolunteerStats
from allmende.coordinator.metrics import Metrics
from allmende.coordinator.transport.errors import unary
from allmende.coordinator.transport.servicers import check_admin, job_status_pb
from allmende.v1 import allmende_pb2 as pb
from allmende.v1 import allmende_pb2_grpc as rpc


def volunteer_pb(v: VolunteerStats) -> pb.VolunteerStatus:
    return pb.VolunteerStatus(
        volunteer_id=v.volunteer_id,
        display_name=v.display_name,
        client_version=v.client_version,
        hardware=v.hardware,
        created_unix_ms=v.created_ms,
        last_seen_unix_ms=v.last_seen_ms,
        online=v.online,
        banned=v.banned,
        ban_reason=v.ban_reason,
        leases_active=v.leases_active,
        results_valid=v.results_valid,
        results_invalid=v.results_invalid,
        results_pending=v.results_pending,
        items_valid=v.items_valid,
        items_per_s=v.items_per_s,
        quarantined=v.quarantined,
        quarantine_reason=v.quarantine_reason,
        credit=v.credit,
        consecutive_valid=v.consecutive_valid,
        gold_checked=v.gold_checked,
        gold_missed=v.gold_missed,
        disagreements=v.disagreements,
        faults=v.faults,
        daily_quota=v.daily_quota,
        leased_today=v.leased_today,
    )


class AdminServicer(rpc.AdminServiceServicer):
    def __init__(self, admin: Admin, admin_token: str, metrics: Metrics | None = None) -> None:
        self.admin = admin
        self.token = admin_token
        self.metrics = metrics

    @unary
    def PauseJob(self, request: pb.JobRef, context: grpc.ServicerContext) -> pb.JobStatus:
        check_admin(context, self.token)
        return job_status_pb(self.admin.pause_job(request.job_id))

    @unary
    def ResumeJob(self, request: pb.JobRef, context: grpc.ServicerContext) -> pb.JobStatus:
        check_admin(context, self.token)
        return job_status_pb(self.admin.resume_job(request.job_id))

    @unary
    def CancelJob(self, request: pb.JobRef, context: grpc.ServicerContext) -> pb.JobStatus:
        check_admin(context, self.token)
        return job_status_pb(self.admin.cancel_job(request.job_id))

    @unary
    def RemoveRows(
        self, request: pb.RemoveRowsRequest, context: grpc.ServicerContext
    ) -> pb.RemoveRowsResponse:
        check_admin(context, self.token)
        done = self.admin.remove_rows(request.job_id, list(request.ids), request.reason)
        return pb.RemoveRowsResponse(
            version=done.version,
            rows_removed=done.rows_removed,
            rows=done.rows,
            merkle_root=done.merkle_root,
        )

    @unary
    def UpdateJob(
        self, request: pb.UpdateJobRequest, context: grpc.ServicerContext
    ) -> pb.JobStatus:
        check_admin(context, self.token)
        view = self.admin.update_job(
            request.job_id,
            request.priority if request.HasField("priority") else None,
            request.redundancy if request.HasField("redundancy") else None,
            request.tau if request.HasField("tau") else None,
        )
        return job_status_pb(view)

    @unary
    def ListVolunteers(
        self, request: pb.ListVolunteersRequest, context: grpc.ServicerContext
    ) -> pb.ListVolunteersResponse:
        check_admin(context, self.token)
        return pb.ListVolunteersResponse(
            volunteers=[volunteer_pb(v) for v in self.admin.volunteers()]
        )

    @unary
    def BanVolunteer(
        self, request: pb.BanVolunteerRequest, context: grpc.ServicerContext
    ) -> pb.VolunteerStatus:
        check_admin(context, self.token)
        return volunteer_pb(self.admin.ban(request.volunteer_id, request.reason))

    @unary
    def UnbanVolunteer(
        self, request: pb.VolunteerRef, context: grpc.ServicerContext
    ) -> pb.VolunteerStatus:
        check_admin(context, self.token)
        return volunteer_pb(self.admin.unban(request.volunteer_id))

    @unary
    def GetOverview(
        self, request: pb.GetOverviewRequest, context: grpc.ServicerContext
    ) -> pb.GetOverviewResponse:
        check_admin(context, self.token)
        o = self.admin.overview(request.events)
        v = o.validation
        return pb.GetOverviewResponse(
            jobs=[job_status_pb(j, o.rates.get(j.job.job_id, 0.0)) for j in o.jobs],
            volunteers=[volunteer_pb(x) for x in o.volunteers],
            validation=pb.ValidationCounts(
                units_accepted=v.units_accepted,
                units_failed=v.units_failed,
                results_valid=v.results_valid,
                results_invalid=v.results_invalid,
                results_pending=v.results_pending,
                disagreements=v.disagreements,
                leases_expired=v.leases_expired,
                volunteers_banned=v.volunteers_banned,
            ),
            events=[
                pb.Event(
                    unix_ms=ts,
                    kind=kind,
                    job_id=job,
                    unit_id=unit,
                    volunteer_id=vol,
                    message=message,
                )
                for ts, kind, job, unit, vol, message in o.events
            ],
            now_unix_ms=o.now_ms,
            fingerprint=o.fingerprint,
        )
