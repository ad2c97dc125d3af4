"""The dashboard's panels as Rich text, from a `ViewState`. Pure functions of the state."""

from __future__ import annotations

from rich.text import Text

from allmende.client.probes import HardwareSample
from allmende.client.tui.state import ViewState
from allmende.client.tui.wording import format_bytes, format_duration, short_unit

STYLE = {"good": "green", "warn": "yellow", "bad": "bold red", "info": ""}


def status_word(state: ViewState) -> tuple[str, str]:
    """(one word for the title bar, its style)."""
    if state.stopped is not None:
        return ("stopped", "bold red") if state.stopped.exit_code else ("stopped", "dim")
    if state.stopping:
        return "stopping…", "yellow"
    if state.paused:
        word = state.paused if state.paused.startswith("paused") else "paused"
        return word, "bold yellow"
    if state.pause_requested:
        return "pausing…", "yellow"
    if state.connection == "retrying":
        return "offline", "bold yellow"
    if state.connection == "connecting":
        return "connecting…", "yellow"
    if state.download is not None:
        return "downloading a model", "bold cyan"
    if state.computing:
        return "computing", "bold green"
    return "idle", "cyan"


def fit_address(address: str, width: int) -> str:
    """Shorten the host, never the port: "coordinator.exam…:50051"."""
    if len(address) <= width:
        return address
    host, _, port = address.rpartition(":")
    keep = max(width - len(port) - 2, 1)
    return f"{host[:keep]}…:{port}"


def connection(
    state: ViewState, address: str, fingerprint: str, wide: bool = False, width: int = 80
) -> Text:
    text = Text()
    text.append(fit_address(address, width) if address else "(no coordinator)", style="bold")
    text.append("\nkey ")
    whole = len(fingerprint) + len("key ") <= width
    shown = fingerprint if whole else fingerprint[:16] + "…"
    text.append(shown if fingerprint else "(not pinned)", style="cyan")
    text.append(" pinned" if fingerprint and not whole else "", style="dim")
    text.append("\n")
    kind = state.connection
    if kind == "connected":
        text.append("● connected", style="green")
        if state.rtt_ms is not None:
            text.append(f" · rtt {state.rtt_ms:.0f} ms", style="dim")
    elif kind == "connecting":
        text.append("○ connecting…", style="yellow")
    elif kind == "retrying":
        text.append(f"◌ retrying in {state.retry_in_s()} s", style="bold yellow")
    elif kind == "refused":
        text.append("✖ refused", style="bold red")
    elif kind == "unreachable":
        text.append("✖ unreachable", style="bold red")
    elif kind == "error":
        text.append("✖ stopped by an error", style="bold red")
    else:
        text.append(f"■ {state.connection_detail or 'stopped'}", style="dim")
    return text


def banner(state: ViewState) -> tuple[Text, str] | None:
    """A problem the volunteer should read in full, and its level ("bad" or "warn")."""
    kind = state.connection
    if kind in ("refused", "unreachable", "error"):
        text = Text(state.connection_detail)
        text.append("  r: start again · q: leave", style="bold")
        return text, "bad"
    if kind == "retrying":
        text = Text(
            f"Coordinator unreachable ({state.connection_detail}); retrying in "
            f"{state.retry_in_s()} s. Finished results are kept on disk."
        )
        return text, "warn"
    return None


def _percent(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}%"


def hardware(state: ViewState, wide: bool) -> Text:
    sample: HardwareSample | None = state.sample
    text = Text()
    if sample is None:
        text.append("waiting for the first sample…", style="dim")
        return text
    text.append("CPU ", style="bold")
    text.append(f"{_percent(sample.cpu_percent):>4}")
    if sample.cpu_temperature_c is not None:
        text.append(f" {sample.cpu_temperature_c:.0f}°C")
    if sample.cpu_ours_percent is not None:
        text.append(f"  ours {_percent(sample.cpu_ours_percent)}", style="green")
        text.append(f" · others {_percent(sample.cpu_others_percent)}", style="dim")
    if sample.cpu_temperature_c is None and wide:
        text.append(" · temperature: no sensor", style="dim")
    text.append("\nRAM ", style="bold")
    text.append(pair(sample.memory_used_bytes, sample.memory_total_bytes))
    if sample.memory_ours_bytes is not None:
        text.append(f"  ours {format_bytes(sample.memory_ours_bytes)}", style="green")
    if sample.on_battery:
        text.append(f"\nBattery {_percent(sample.battery_percent)}, not plugged in", "yellow")
    if not sample.gpus:
        text.append("\nGPU ", style="bold")
        text.append("none reported (no NVML)", style="dim")
    for gpu in sample.gpus:
        text.append(f"\nGPU{gpu.index} ", style="bold")
        if wide:
            text.append(f"{gpu.name} ", style="dim")
        text.append(f"{_percent(gpu.utilisation_percent):>4} ")
        if gpu.memory_used_bytes is not None:
            text.append(pair(gpu.memory_used_bytes, gpu.memory_total_bytes) + " ")
        if gpu.memory_ours_bytes:
            ours = format_bytes(gpu.memory_ours_bytes).split()[0]
            text.append(f"({ours} ours) ", style="green")
        if gpu.temperature_c is not None:
            text.append(f"{gpu.temperature_c:.0f}°C ")
        if gpu.power_w is not None:
            text.append(f"{gpu.power_w:.0f} W")
    return text


def pair(used: int | None, total: int | None) -> str:
    """ "9.0/32.0 GB": used and total in the unit of the total."""
    if used is None or total is None:
        return f"{format_bytes(used)}/{format_bytes(total)}"
    number, unit = format_bytes(total).split()
    scale = total / float(number) if float(number) else 1.0
    return f"{used / scale:.1f}/{number} {unit}"


def bar(fraction: float, width: int) -> Text:
    width = max(width, 4)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    blocks = " ▏▎▍▌▋▊▉"
    text = Text("█" * full, style="green")
    if full < width:
        text.append(blocks[part] if part else "", style="green")
        text.append("·" * (width - full - (1 if part else 0)), style="dim")
    return text


def download(state: ViewState, width: int) -> Text:
    """A served model on its way from the coordinator, as a progress bar."""
    d = state.download
    assert d is not None
    text = Text()
    text.append(f"downloading model {d.model}", style="bold")
    text.append(" from the coordinator · checked against its signed manifest", style="dim")
    text.append("\n")
    fraction = d.done / d.total if d.total else 0.0
    label = f" {fraction * 100:3.0f}%"
    details = f"  {format_bytes(d.done)}/{format_bytes(d.total)}"
    text.append_text(bar(fraction, width - len(label) - len(details)))
    text.append(label, style="bold")
    text.append(details)
    return text


def unit(state: ViewState, width: int) -> Text:
    if state.download is not None:
        return download(state, width)
    current = state.unit
    text = Text()
    if current is None:
        if state.stopped is not None:
            text.append("no unit: stopped", style="dim")
        elif state.paused:
            text.append(f"paused: {state.paused}", style="yellow")
        elif state.idle:
            text.append(f"waiting: {state.idle}", style="dim")
        else:
            text.append("waiting for a unit…", style="dim")
        return text
    text.append(current.job_id, style="bold")
    text.append(f" · {current.kind} · {current.model}", style="")
    text.append(f" · unit {short_unit(current.unit_id)}", style="dim")
    text.append("\n")
    fraction, how = state.unit_progress()
    label = f" {fraction * 100:3.0f}%"
    rate = state.unit_rate()
    done = round(fraction * current.items)
    details = f"  {done}/{current.items}"
    details += f" · {rate:.0f} items/s" if rate else ""
    if current.computed:
        details += " · done, sending"
    else:
        details += f" · ETA {format_duration(state.eta_s())}"
    if how == "estimated":
        details += " (est.)"
    if state.paused:
        details += " · paused"
    text.append_text(bar(fraction, width - len(label) - len(details)))
    text.append(label, style="bold")
    text.append(details)
    return text


def throughput_label(state: ViewState) -> Text:
    series = state.throughput()
    now = series[-1] if series else 0.0
    peak = max(series) if series else 0.0
    text = Text("items/s ", style="dim")
    text.append(f"now {now:.0f} · peak {peak:.0f}")
    return text


def contribution(state: ViewState) -> Text:
    text = Text()
    # Once the coordinator has answered: its verdicts, lifetime (as `volunteers list`).
    text.append("valid " if state.totals else "accepted ", style="dim")
    text.append(f"{state.accepted:,}", style="bold green")
    text.append(" · pending ", style="dim")
    text.append(f"{state.pending:,}", style="bold")
    text.append(" · invalid " if state.totals else " · rejected ", style="dim")
    text.append(f"{state.rejected:,}", style="bold red" if state.rejected else "bold")
    if state.refused or state.errors:
        text.append(f"\nunits refused {state.refused} · results failed {state.errors}", style="red")
    text.append("\nitems ", style="dim")
    text.append(f"{state.items_sent:,}")
    text.append(" · credit ", style="dim")
    text.append(f"{state.credit:,}", style="bold")
    if state.totals is not None and state.totals.remembered:
        text.append(" (last run)", style="dim")
    text.append("\nenergy ", style="dim")
    if state.energy_measured is None:
        text.append("-")
    elif state.energy_measured:
        text.append(f"{state.energy_wh:.2f} Wh", style="bold")
        text.append(", measured (GPU counter)", style="dim")
    else:  # power times time: an estimate, and said to be ("est.": fits 80 columns)
        sources = " + ".join(sorted(state.energy.sources - {"GPU energy counter"}))
        text.append(f"≈{state.energy_wh:.2f} Wh", style="bold")
        text.append(f", est. ({sources})", style="dim")
    if state.spooled:
        text.append(f"\n{state.spooled} result(s) on disk, to send later", style="yellow")
    return text
