"""How the dashboard words what it shows: sizes, durations, unit ids, and work given up or
handed back. Plain functions, shared by the state's log lines (state.py), the renderers
(render.py) and the headless volunteer command's summary.
"""

from __future__ import annotations

from allmende.client.engine import events as ev


def work_given_up(done: int, items: int, seconds: float) -> str:
    """ "120 of 600 rows computed in 4.2 s, given up" """
    of = f" of {items:,}" if items else ""
    return f"{done:,}{of} rows computed in {seconds:.1f} s, given up"


def handed_back(e: ev.Stopped) -> str:
    """What a stop handed back to the coordinator, for a summary ('' when nothing)."""
    if not e.handed_back:
        return ""
    text = f"; {e.handed_back} unit(s) handed back to the coordinator"
    if e.handed_back_rows:
        text += f" ({e.handed_back_rows:,} rows computed in {e.handed_back_s:.1f} s, given up)"
    return text


def short_unit(unit_id: str) -> str:
    """`job-0123456789ab-u000042` → `…ab-u000042`: enough to tell units apart in a log."""
    return unit_id if len(unit_id) <= 16 else "…" + unit_id[-15:]


def format_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
