"""`allmende job pause|resume|cancel|set` and `allmende volunteers list|ban|unban`."""

from __future__ import annotations

import argparse
import time

from allmende.api.client import ApiClient
from allmende.cli.common import EXIT_OK, EXIT_USAGE, CliError, out, out_json
from allmende.cli.remote import call
from allmende.cli.tokens import read_token
from allmende.coordinator.top.format import volunteer_state
from allmende.v1 import allmende_pb2 as pb


def _admin(args: argparse.Namespace) -> ApiClient:
    return ApiClient(args.coordinator, admin_token=read_token(args.admin_token_file))


def _job_line(verb: str, job: pb.JobStatus) -> str:
    """What an action did, with the full id it resolved a prefix to."""
    name = f" ({job.name})" if job.name else ""
    return (
        f"{verb} {job.job_id}{name}: now {job.state}, {job.units_accepted}/{job.units_total} "
        f"units accepted, priority {job.priority}, redundancy {job.spec.redundancy}, "
        f"tau {job.spec.tau:g}"
    )


def pause(args: argparse.Namespace) -> int:
    with _admin(args) as client:
        out(_job_line("paused", call(lambda: client.pause_job(args.job), args.coordinator)))
    return EXIT_OK


def resume(args: argparse.Namespace) -> int:
    with _admin(args) as client:
        out(_job_line("resumed", call(lambda: client.resume_job(args.job), args.coordinator)))
    return EXIT_OK


def cancel(args: argparse.Namespace) -> int:
    with _admin(args) as client:
        job = call(lambda: client.cancel_job(args.job), args.coordinator)
    out(_job_line("cancelled", job) + "; its leases out were cancelled")
    return EXIT_OK


def set_job(args: argparse.Namespace) -> int:
    if args.priority is None and args.redundancy is None and args.tau is None:
        raise CliError("job set: give at least one of --priority, --redundancy, --tau", EXIT_USAGE)
    request = pb.UpdateJobRequest(job_id=args.job)
    if args.priority is not None:
        request.priority = args.priority
    if args.redundancy is not None:
        request.redundancy = args.redundancy
    if args.tau is not None:
        request.tau = args.tau
    with _admin(args) as client:
        out(_job_line("updated", call(lambda: client.update_job(request), args.coordinator)))
    return EXIT_OK


def _ago(now_ms: float, then_ms: int) -> str:
    if not then_ms:
        return "never"
    seconds = max(0, int(now_ms - then_ms) // 1000)
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def volunteer_dict(v: pb.VolunteerStatus) -> dict[str, object]:
    return {
        "volunteer_id": v.volunteer_id,
        "name": v.display_name,
        "online": v.online,
        "banned": v.banned,
        "ban_reason": v.ban_reason,
        "hardware": v.hardware,
        "client_version": v.client_version,
        "last_seen_unix_ms": v.last_seen_unix_ms,
        "leases_active": v.leases_active,
        "results_valid": v.results_valid,
        "results_invalid": v.results_invalid,
        "results_pending": v.results_pending,
        "items_valid": v.items_valid,
        "items_per_s": round(v.items_per_s, 3),
        "quarantined": v.quarantined,
        "quarantine_reason": v.quarantine_reason,
        "credit": v.credit,
        "consecutive_valid": v.consecutive_valid,
        "gold_checked": v.gold_checked,
        "gold_missed": v.gold_missed,
        "disagreements": v.disagreements,
        "faults": v.faults,
        "daily_quota": v.daily_quota,
        "leased_today": v.leased_today,
    }


def list_volunteers(args: argparse.Namespace) -> int:
    with _admin(args) as client:
        volunteers = call(client.list_volunteers, args.coordinator)
    if args.json:
        out_json([volunteer_dict(v) for v in volunteers])
        return EXIT_OK
    if not volunteers:
        out("no volunteers")
        return EXIT_OK
    now = time.time() * 1000
    out(
        f"{'VOLUNTEER':<16} {'NAME':<20} {'STATE':<11} {'VALID':>6} {'INVALID':>7} "
        f"{'STREAK':>6} {'GOLD':>7} {'CREDIT':>9} {'ITEMS':>9} {'ITEMS/S':>8}  LAST SEEN"
    )
    quarantined = []
    for v in volunteers:
        state = volunteer_state(v)
        gold = f"{v.gold_checked - v.gold_missed}/{v.gold_checked}"
        out(
            f"{v.volunteer_id[:16]:<16} {v.display_name[:20]:<20} {state:<11} "
            f"{v.results_valid:>6} {v.results_invalid:>7} {v.consecutive_valid:>6} "
            f"{gold:>7} {v.credit:>9} {v.items_valid:>9} "
            f"{v.items_per_s:>8.1f}  {_ago(now, v.last_seen_unix_ms)}"
        )
        if v.quarantined:
            quarantined.append(v)
    for v in quarantined:
        out(f"quarantined {v.volunteer_id[:16]}: {v.quarantine_reason}")
    return EXIT_OK


def ban(args: argparse.Namespace) -> int:
    # The coordinator resolves a prefix (at least 6 characters, unambiguous) itself, so the
    # CLI and `coordinator top` cannot disagree on what a prefix means.
    with _admin(args) as client:
        v = call(lambda: client.ban_volunteer(args.volunteer, args.reason), args.coordinator)
    out(f"banned {v.volunteer_id} ({v.display_name or 'no name'}): {v.ban_reason}")
    return EXIT_OK


def unban(args: argparse.Namespace) -> int:
    with _admin(args) as client:
        v = call(lambda: client.unban_volunteer(args.volunteer), args.coordinator)
    out(
        f"unbanned {v.volunteer_id} ({v.display_name or 'no name'}): now "
        f"{volunteer_state(v)}; a quarantine, if any, is lifted too"
    )
    return EXIT_OK
