"""Operating a coordinator: pausing, resuming and cancelling jobs, changing their priority,
redundancy and tau, banning volunteers, and the figures `coordinator top` shows.

Every action takes a full id or an unambiguous prefix of one (domain/ids.py).

The answers are records the store reads (`VolunteerStats` is re-exported here, so that the
servicer, which never imports the store, can name it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from allmende.coordinator.domain.coordinator import Coordinator, JobView
from allmende.coordinator.domain.ids import resolve_id
from allmende.coordinator.domain.jobs import MAX_REDUNDANCY
from allmende.coordinator.domain.takedown import Removal
from allmende.coordinator.store.admin_sql import ValidationStats
from allmende.coordinator.store.admin_sql import VolunteerStats as VolunteerStats
from allmende.coordinator.store.lookup_sql import IdKind
from allmende.protocol.errors import InvalidArgument, NotFound, shown

MAX_EVENTS = 1000


@dataclass(frozen=True)
class Overview:
    jobs: list[JobView]
    rates: dict[str, float]
    volunteers: list[VolunteerStats]
    validation: ValidationStats
    events: list[tuple[int, str, str, str, str, str]]
    now_ms: int
    fingerprint: str


class Admin:
    def __init__(self, coordinator: Coordinator) -> None:
        self.c = coordinator
        self.store = coordinator.store

    # ------------------------------------------------------------------ ids

    def resolve(self, kind: IdKind, given: str) -> str:
        """The one id of `kind` that `given` is, or is an unambiguous prefix of (see
        domain/ids.py)."""
        return resolve_id(self.store, kind, given)

    # ------------------------------------------------------------------ jobs

    def pause_job(self, job_id: str) -> JobView:
        job_id = self.resolve("job", job_id)
        self.store.set_job_state(job_id, ("running",), "paused", self.c.clock())
        return self.c.job_status(job_id)

    def resume_job(self, job_id: str) -> JobView:
        job_id = self.resolve("job", job_id)
        self.store.set_job_state(job_id, ("paused",), "running", self.c.clock())
        return self.c.job_status(job_id)

    def cancel_job(self, job_id: str) -> JobView:
        job_id = self.resolve("job", job_id)
        self.store.set_job_state(job_id, ("running", "paused"), "cancelled", self.c.clock())
        return self.c.job_status(job_id)

    def remove_rows(self, job_id: str, ids: list[str], reason: str) -> Removal:
        """A takedown: the next version of a finished job's dataset, without rows `ids`."""
        return self.c.remove_rows(self.resolve("job", job_id), ids, reason)

    def update_job(
        self, job_id: str, priority: int | None, redundancy: int | None, tau: float | None
    ) -> JobView:
        job_id = self.resolve("job", job_id)
        if priority is not None and not -1000 <= priority <= 1000:
            raise InvalidArgument("priority", f"-1000 to 1000, got {priority}")
        if redundancy is not None and not 1 <= redundancy <= MAX_REDUNDANCY:
            raise InvalidArgument("redundancy", f"1 to {MAX_REDUNDANCY}, got {redundancy}")
        if tau is not None and not (math.isfinite(tau) and 0.0 < tau <= 1.0):
            raise InvalidArgument("tau", f"a cosine threshold in (0, 1], got {tau}")
        if priority is None and redundancy is None and tau is None:
            raise InvalidArgument("update", "at least one of priority, redundancy, tau")
        self.store.update_job(job_id, self.c.clock(), priority, redundancy, tau)
        return self.c.job_status(job_id)

    def _stats(self, now_ms: int, volunteer_id: str | None = None) -> list[VolunteerStats]:
        self.c.flush_seen()
        return [
            replace(v, daily_quota=self.c.policy.quota(v.reputation_valid))
            for v in self.store.volunteer_stats(now_ms, volunteer_id)
        ]

    def volunteers(self) -> list[VolunteerStats]:
        return self._stats(self.c.clock())

    def _one(self, volunteer_id: str) -> VolunteerStats:
        found = self._stats(self.c.clock(), volunteer_id)
        if not found:
            raise NotFound(f"volunteer {shown(volunteer_id)} does not exist")
        return found[0]

    def ban(self, volunteer_id: str, reason: str) -> VolunteerStats:
        if len(reason) > 500:
            raise InvalidArgument("reason", "at most 500 characters")
        volunteer_id = self.resolve("volunteer", volunteer_id)
        self.store.set_banned(
            volunteer_id, True, reason or "banned by an administrator", self.c.clock()
        )
        return self._one(volunteer_id)

    def unban(self, volunteer_id: str) -> VolunteerStats:
        """Lift a ban and a quarantine. A volunteer released from quarantine keeps its
        record: it starts again from full replication, and one more fault sends it back."""
        volunteer_id = self.resolve("volunteer", volunteer_id)
        self.store.set_banned(volunteer_id, False, "", self.c.clock())
        if self._one(volunteer_id).quarantined:
            self.store.release_quarantine(volunteer_id, self.c.clock())
        return self._one(volunteer_id)

    def overview(self, events: int) -> Overview:
        if events > MAX_EVENTS:
            raise InvalidArgument("events", f"at most {MAX_EVENTS}, got {events}")
        now = self.c.clock()
        return Overview(
            jobs=self.c.list_jobs(),
            rates=self.store.job_rates(now),
            volunteers=self._stats(now),
            validation=self.store.validation_stats(now),
            events=self.store.recent_events(events or 50),
            now_ms=now,
            fingerprint=self.c.key.fingerprint,
        )
