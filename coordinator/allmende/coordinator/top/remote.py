"""Wiring `TopApp` to a coordinator over gRPC with the admin token."""

from __future__ import annotations

from allmende.api.client import ApiClient
from allmende.v1 import allmende_pb2 as pb

EVENTS = 200


class RemoteTop:
    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def fetch(self) -> pb.GetOverviewResponse:
        return self.client.overview(EVENTS)

    def act(self, verb: str, target: str) -> str:
        c = self.client
        if verb == "pause":
            return f"paused {c.pause_job(target).job_id}"
        if verb == "resume":
            return f"resumed {c.resume_job(target).job_id}"
        if verb == "cancel":
            return f"cancelled {c.cancel_job(target).job_id}"
        if verb == "ban":
            v = c.ban_volunteer(target, "banned from coordinator top")
            return f"banned {v.volunteer_id[:12]}"
        if verb == "unban":
            return f"unbanned {c.unban_volunteer(target).volunteer_id[:12]}"
        raise ValueError(f"unknown action {verb!r}")
