"""The one interface every coordinator store implements (SQLite, PostgreSQL).

Every method that changes state is one transaction: it happens whole or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from allmende.coordinator.store.admin_sql import ValidationStats, VolunteerStats
from allmende.coordinator.store.records import (
    DatasetItem,
    DatasetUnit,
    JobCounts,
    JobRecord,
    LeaseGrant,
    LeaseRecord,
    NewItem,
    NewJob,
    NewResult,
    NewUnit,
    ResultRecord,
    UnitRecord,
    Verdict,
    VolunteerRecord,
)

# Decides a unit's fate from all its results; runs inside the submit transaction.
Judge = Callable[[UnitRecord, list[ResultRecord]], Verdict]


class Store(Protocol):
    def close(self) -> None: ...

    # jobs
    def create_job(
        self, job: NewJob, units: Sequence[NewUnit], items: Sequence[NewItem]
    ) -> None: ...
    def get_job(self, job_id: str) -> JobRecord | None: ...
    def list_jobs(self) -> list[JobRecord]: ...
    def job_counts(self, job_id: str, now_ms: int) -> JobCounts: ...

    # volunteers
    def put_volunteer(self, volunteer: VolunteerRecord) -> None: ...
    def get_volunteer(self, volunteer_id: str) -> VolunteerRecord | None: ...

    # leases
    def lease_unit(self, volunteer_id: str, lease_id: str, now_ms: int) -> LeaseGrant | None: ...
    def work_remaining(self, volunteer_id: str, now_ms: int) -> bool: ...
    def get_lease(self, lease_id: str) -> LeaseRecord | None: ...
    def get_unit(self, unit_id: str) -> UnitRecord | None: ...
    def release_lease(self, lease_id: str, reason: str, now_ms: int) -> None: ...

    # results
    def submit_result(self, result: NewResult, judge: Judge) -> Verdict: ...

    # assimilation
    def jobs_in_state(self, state: str) -> list[str]: ...
    def dataset_units(self, job_id: str) -> Iterator[DatasetUnit]: ...
    def dataset_items(self, job_id: str) -> Iterator[DatasetItem]: ...
    def complete_job(self, job_id: str, manifest: bytes, signature: bytes, now_ms: int) -> None: ...
    def get_manifest(self, job_id: str) -> tuple[bytes, bytes] | None: ...

    # events
    def add_event(
        self,
        now_ms: int,
        kind: str,
        message: str,
        job_id: str = "",
        unit_id: str = "",
        volunteer_id: str = "",
    ) -> None: ...
    def recent_events(self, limit: int) -> list[tuple[int, str, str, str, str, str]]: ...

    # administration and monitoring (store/admin_sql.py)
    def set_job_state(
        self, job_id: str, allowed_from: tuple[str, ...], state: str, now_ms: int
    ) -> None: ...
    def update_job(
        self,
        job_id: str,
        now_ms: int,
        priority: int | None = None,
        redundancy: int | None = None,
        tau: float | None = None,
    ) -> None: ...
    def job_rates(self, now_ms: int) -> dict[str, float]: ...
    def job_priority(self, job_id: str) -> int: ...
    def count_active_leases(self, now_ms: int) -> int: ...
    def touch_volunteer(self, volunteer_id: str, now_ms: int) -> None: ...
    def set_banned(self, volunteer_id: str, banned: bool, reason: str, now_ms: int) -> None: ...
    def volunteer_stats(
        self, now_ms: int, volunteer_id: str | None = None
    ) -> list[VolunteerStats]: ...
    def validation_stats(self, now_ms: int) -> ValidationStats: ...
