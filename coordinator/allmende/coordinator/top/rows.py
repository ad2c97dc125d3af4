"""The cells of `coordinator top`'s tables, in a wide and a compact layout, without textual.

Below `NARROW` terminal columns (an 80x24 terminal, an ssh session on a phone) the wide
tables did not fit: the job names, the volunteers' results and last contact were cut off
behind a horizontal scrollbar. The compact layout keeps what an operator acts on (which
job or volunteer, its state, progress or results, its name, when it was last seen) and
drops what the wide one adds (rates, priority, leases, failure reasons).
"""

from __future__ import annotations

import time

from allmende.coordinator.top.format import ago, bar, eta, progress, short, volunteer_state
from allmende.v1 import allmende_pb2 as pb

NARROW = 100  # terminal columns below which the compact layout is used
SHORT = 30  # terminal rows below which the header row is hidden
# Enough of a job id to act on it (admin actions take 6 characters after "job-").
COMPACT_JOB_ID = 12


def job_columns(compact: bool) -> tuple[str, ...]:
    if compact:
        return ("job", "state", "progress", "units", "ETA", "failed", "name")
    return ("job", "state", "kind", "progress", "units", "items/s", "ETA", "failed", "prio", "name")


def job_row(job: pb.JobStatus, compact: bool) -> tuple[str, ...]:
    done = progress(job)
    units = f"{job.units_accepted}/{job.units_total}"
    if compact:
        return (
            short(job.job_id, COMPACT_JOB_ID),
            job.state,
            f"{bar(done, 4)}{done * 100:4.0f}%",
            units,
            eta(job),
            str(job.units_failed),
            job.name[:32],
        )
    reasons = "; ".join(f"{short(f.unit_id[-7:], 7)}: {f.reason}" for f in job.failed_units[:2])
    return (
        job.job_id,
        job.state,
        job.spec.kind,
        f"{bar(done, 8)} {done * 100:3.0f}%",
        units,
        f"{job.items_per_s:.1f}",
        eta(job),
        f"{job.units_failed} {reasons}".strip() if job.units_failed else "0",
        str(job.priority),
        job.name[:32],
    )


def volunteer_columns(compact: bool) -> tuple[str, ...]:
    if compact:
        return ("volunteer", "name", "state", "valid", "invalid", "last seen")
    return (
        "volunteer",
        "name",
        "state",
        "items/s",
        "valid",
        "invalid",
        "pending",
        "leases",
        "last seen",
    )


def volunteer_row(v: pb.VolunteerStatus, now_ms: int, compact: bool) -> tuple[str, ...]:
    seen = ago(now_ms, v.last_seen_unix_ms)
    if compact:
        return (
            short(v.volunteer_id, 8),
            v.display_name[:10] or "-",
            volunteer_state(v),
            str(v.results_valid),
            str(v.results_invalid),
            seen,
        )
    return (
        short(v.volunteer_id),
        v.display_name[:18] or "-",
        volunteer_state(v),
        f"{v.items_per_s:.1f}",
        str(v.results_valid),
        str(v.results_invalid),
        str(v.results_pending),
        str(v.leases_active),
        seen,
    )


def event_row(e: pb.Event, compact: bool) -> tuple[str, ...]:
    where = e.unit_id or e.job_id or e.volunteer_id
    if compact and e.unit_id and len(where) > 14:
        where = "…" + where[-13:]  # a unit id ends in what tells units apart (…-u000007)
    else:
        where = short(where, 14 if compact else 24)
    return (time.strftime("%H:%M:%S", time.gmtime(e.unix_ms / 1000)), e.kind, where, e.message)


def validation_text(v: pb.ValidationCounts, compact: bool) -> str:
    rows = [
        ("units accepted", "accepted", v.units_accepted),
        ("units failed", "failed", v.units_failed),
        ("results valid", "valid", v.results_valid),
        ("results invalid", "invalid", v.results_invalid),
        ("results pending", "pending", v.results_pending),
        ("disagreements", "disagree", v.disagreements),
        ("leases expired", "expired", v.leases_expired),
        ("banned", "banned", v.volunteers_banned),
    ]
    if compact:
        return "\n".join(f"{label:<9}{count:>6}" for _, label, count in rows)
    return "\n".join(f"{label:<17}{count}" for label, _, count in rows)
