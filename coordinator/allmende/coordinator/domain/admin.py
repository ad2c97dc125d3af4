"""Operating a coordinator: pausing, resuming and cancelling jobs, changing their priority,
redundancy and tau, banning volunteers, and the figures `coordinator top` shows.

Every action takes a full id or an unambiguous prefix of one (at least `MIN_PREFIX`
characters; for jobs, not counting the `job-` every job id starts with), so the CLI and
`coordinator top` resolve ids the same way and a slip of the keyboard cannot ban or cancel
something by a one-character prefix.

The answers are records the store reads (`VolunteerStats` is re-exported here, so that the
servicer, which never imports the store, can name it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from allmende.coordinator.domain.coordinator import Coordinator, JobView
from allmende.coordinator.domain.jobs import MAX_REDUNDANCY
from allmende.coordinator.domain.takedown import Removal
from allmende.coordinator.store.admin_sql import ValidationStats
from allmende.coordinator.store.admin_sql import VolunteerStats as VolunteerStats
from allmende.coordinator.store.lookup_sql import IdKind
from allmende.protocol.errors import InvalidArgument, NotFound, shown

MAX_EVENTS = 1000
# The shortest id prefix an action accepts: 6 hex digits are 16.7 million ids, so a prefix
# that long names one thing on any real coordinator, and a shorter one is likely a slip.
MIN_PREFIX = 6
# How many matches an ambiguous prefix's error lists.
SHOWN_MATCHES = 8
JOB_TAG = "job-"
# Longer than any id the coordinator makes (volunteer ids are 64 hex digits, job ids far
# shorter): anything longer is no id, and is refused before it reaches a LIKE pattern.
MAX_ID_CHARS = 128


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
        """The one id of `kind` that `given` is, or is an unambiguous prefix of.

        InvalidArgument for a prefix that is too short or matches several ids (the message
        lists what it matched); NotFound when nothing matches."""
        field = f"{kind}_id"
        if not given:
            listing = "job list" if kind == "job" else "volunteers list"
            raise InvalidArgument(field, f"a {kind} id (see `allmende {listing}`)")
        if len(given) > MAX_ID_CHARS:
            raise InvalidArgument(field, f"at most {MAX_ID_CHARS} characters, got {len(given)}")
        if self.store.ids_with_prefix(kind, given, 1) == [given]:
            return given  # a whole id: no length rule for ids the store itself holds
        significant = given.removeprefix(JOB_TAG) if kind == "job" else given
        prefixes = [given]
        if kind == "job" and not given.startswith(JOB_TAG):
            prefixes.append(JOB_TAG + given)  # `job pause 4f2a9c` means job-4f2a9c...
        matches = sorted(
            {m for p in prefixes for m in self.store.ids_with_prefix(kind, p, SHOWN_MATCHES + 1)}
        )
        if len(significant) < MIN_PREFIX:
            extra = "" if kind == "volunteer" else f" after {JOB_TAG!r}"
            raise InvalidArgument(
                field,
                f"at least {MIN_PREFIX} characters of the id{extra}, got {shown(given)}"
                + (f", which matches {_listed(kind, matches)}" if matches else ""),
            )
        if not matches:
            raise NotFound(f"{kind} {shown(given)} does not exist")
        if len(matches) > 1:
            raise InvalidArgument(
                field, f"a prefix of one {kind}; {shown(given)} matches {_listed(kind, matches)}"
            )
        return matches[0]

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


def _listed(kind: IdKind, matches: list[str]) -> str:
    """'2 volunteers: 1a2b3c4d5e6f7a8b…, 1f0e…' for an error message; at most a few."""
    width = 16 if kind == "volunteer" else 24
    shown_ids = [m if len(m) <= width else m[:width] + "…" for m in matches[:SHOWN_MATCHES]]
    more = len(matches) > SHOWN_MATCHES
    count = f"more than {SHOWN_MATCHES}" if more else str(len(matches))
    noun = kind if len(matches) == 1 else f"{kind}s"
    return f"{count} {noun}: {', '.join(shown_ids)}" + (", …" if more else "")
