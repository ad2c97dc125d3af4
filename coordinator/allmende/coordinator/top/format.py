"""Plain text for the top screen: durations, rates, progress and ETA, without textual."""

from __future__ import annotations

from allmende.v1 import allmende_pb2 as pb


def volunteer_state(v: pb.VolunteerStatus) -> str:
    """One word for a volunteer: banned, quarantine, online or offline."""
    if v.banned:
        return "banned"
    if v.quarantined:
        return "quarantine"
    return "online" if v.online else "offline"


def ago(now_ms: int, then_ms: int) -> str:
    if not then_ms:
        return "never"
    seconds = max(0, (now_ms - then_ms) // 1000)
    if seconds < 90:
        return f"{seconds}s ago"
    if seconds < 5400:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def duration(seconds: float) -> str:
    if seconds < 0 or seconds != seconds:  # negative or NaN
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def progress(job: pb.JobStatus) -> float:
    return job.units_accepted / job.units_total if job.units_total else 0.0


def eta(job: pb.JobStatus) -> str:
    """Time left at the job's recent rate of accepted items."""
    if job.state != "running":
        return "-"
    left_units = job.units_total - job.units_accepted - job.units_failed
    if left_units <= 0:
        return "0s"
    if job.items_per_s <= 0:
        return "?"
    items_per_unit = job.unique_items / job.units_total if job.units_total else 0
    return duration(left_units * items_per_unit / job.items_per_s)


def bar(fraction: float, width: int = 12) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def short(identifier: str, length: int = 12) -> str:
    return identifier[:length]
