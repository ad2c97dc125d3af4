"""The calls of operators and researchers: jobs, administration (the admin token),
`coordinator top`'s overview, datasets and served models. The `allmende` command and
`coordinator top` share this client; the volunteer's connection adds its signed calls to it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from allmende.api.channel import UPLOAD_TIMEOUT_S, Connection, remote_call
from allmende.v1 import allmende_pb2 as pb


class ApiClient(Connection):
    """Talks to one coordinator; the channel opens on first use (see `Connection`)."""

    def info(self) -> pb.GetCoordinatorInfoResponse:
        return self._unary(self.volunteers.GetCoordinatorInfo, pb.GetCoordinatorInfoRequest())

    # jobs
    def create_job(self, requests: Iterable[pb.CreateJobRequest]) -> pb.CreateJobResponse:
        return remote_call(
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

    def remove_rows(self, job_id: str, ids: list[str], reason: str) -> pb.RemoveRowsResponse:
        return self._unary(
            self.admin.RemoveRows, pb.RemoveRowsRequest(job_id=job_id, ids=ids, reason=reason)
        )

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
        stream = remote_call(
            lambda: self.datasets.DownloadFile(
                request, timeout=UPLOAD_TIMEOUT_S, metadata=self._metadata
            )
        )
        iterator = iter(stream)
        while True:
            chunk = remote_call(lambda: next(iterator, None))
            if chunk is None:
                return
            yield chunk.data

    # served models
    def add_model(
        self, requests: Iterable[pb.AddModelRequest], timeout_s: float = UPLOAD_TIMEOUT_S
    ) -> pb.ModelInfo:
        """Upload a model folder (admin token): the header, then every file's chunks."""
        response = remote_call(
            lambda: self.models.AddModel(iter(requests), timeout=timeout_s, metadata=self._metadata)
        )
        return response.model

    def list_models(self) -> list[pb.ModelInfo]:
        return list(self._unary(self.models.ListModels, pb.ListModelsRequest()).models)

    def model_manifest(self, name: str) -> pb.GetModelManifestResponse:
        """A served model's manifest exactly as signed, and its signature (check both with
        protocol/model_manifest.py `open_manifest`)."""
        return self._unary(self.models.GetModelManifest, pb.GetModelManifestRequest(name=name))

    def download_model_file(self, name: str, path: str, offset: int = 0) -> Iterator[bytes]:
        """A served model's file from byte `offset` on, in chunks. A download cut short (by
        the deadline, too) resumes from the bytes already received."""
        request = pb.DownloadModelFileRequest(name=name, path=path, offset=offset)
        stream = remote_call(
            lambda: self.models.DownloadModelFile(
                request, timeout=UPLOAD_TIMEOUT_S, metadata=self._metadata
            )
        )
        iterator = iter(stream)
        while True:
            chunk = remote_call(lambda: next(iterator, None))
            if chunk is None:
                return
            yield chunk.data
