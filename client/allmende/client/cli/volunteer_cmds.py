"""`allmende volunteer`: the engine behind the terminal UI, or headless with log lines.

Settings come from the settings file, ``ALLMENDE_...`` variables and flags (see
allmende.client.settings). In a terminal the TUI opens (with the first-run screen when no
coordinator is set up yet); with ``--headless``, or when output is not a terminal, each engine
event is one log line (``--json``: one JSON object per line) and Ctrl-C quits cleanly: units
not finished are handed back and finished results stay on disk until they are sent.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from allmende.cli.common import EXIT_USAGE, CliError, err, out
from allmende.cli.logs import iso_now
from allmende.client.engine import EngineConfig, Event, VolunteerEngine
from allmende.client.engine.events import HardwareSampled, Idle, Stopped
from allmende.client.engine.identity import default_home
from allmende.client.probes import HardwareSample
from allmende.client.settings import (
    FETCH_WARNING,
    KEYS_BY_NAME,
    LoadedSettings,
    flags_from,
    load_settings,
    resolve_config_path,
    resolve_home,
)
from allmende.client.tui.state import ViewState
from allmende.client.tui.wording import handed_back
from allmende.protocol.errors import AllmendeError

EXIT_INTERRUPTED = 130


def volunteer(args: argparse.Namespace) -> int:
    env = os.environ
    named_home = resolve_home(args.home, env)
    home = named_home or default_home()
    loaded = load_settings(resolve_config_path(args.config, named_home, env), env, flags_from(args))
    settings = loaded.settings
    extra: dict[str, Any] = {
        "exit_when_idle": args.exit_when_idle,
        "give_up_after_s": 120.0 if args.exit_when_idle else None,
    }
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if not args.headless and not interactive:
        err("allmende: not a terminal; running headless (pass --headless to say so)")
    if args.headless or not interactive:
        if not settings.configured:
            raise CliError(
                "no coordinator set up: pass --coordinator and --fingerprint (or set "
                "ALLMENDE_COORDINATOR and ALLMENDE_FINGERPRINT), or run `allmende volunteer` "
                "in a terminal once to set it up",
                EXIT_USAGE,
            )
        remember_name(loaded)
        return run_headless(settings.engine_config(home, **extra), args.json)

    from allmende.client.probes import HardwareProbe, SystemProbe
    from allmende.client.tui.app import VolunteerApp

    probe: HardwareProbe | None
    try:
        probe = SystemProbe()
    except Exception as exc:  # psutil missing: the dashboard shows no hardware
        err(f"allmende: hardware probe unavailable ({exc})")
        probe = None

    def engine(config: EngineConfig, on_event: Any) -> VolunteerEngine:
        return VolunteerEngine(config, on_event=on_event, probe=probe)

    overridden = [
        KEYS_BY_NAME[name].flag if origin == "flag" else KEYS_BY_NAME[name].env
        for name, origin in loaded.origins.items()
        if origin in ("flag", "env")
    ]
    remember_name(loaded)
    app = VolunteerApp(
        settings=settings,
        home=home,
        engine_factory=engine,
        settings_file=loaded.file,
        overridden=overridden,
        probe=probe,
        engine_extra=extra,
        first_run=True if args.setup else None,
    )
    code = app.run()
    for line in summary(app.state):
        out(line)
    return code if code is not None else 1


def remember_name(loaded: LoadedSettings) -> None:
    """A display name given as a flag is saved to the settings file, as the TUI saves it, so
    the next start (and the coordinator's list) keeps it."""
    if loaded.origins.get("display_name") != "flag":
        return
    name = loaded.settings.display_name
    try:
        if loaded.file.read().get("display_name") != name:
            loaded.file.save({"display_name": name})
    except (OSError, AllmendeError) as exc:  # a read-only or broken file: run anyway
        err(f"allmende: could not save the display name to {loaded.file.path}: {exc}")


def quiet_progress_bars() -> None:
    """No tqdm bars from model loading in log lines (transformers, huggingface_hub)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


class HeadlessLog:
    """Engine events as log lines, each with an ISO 8601 UTC timestamp; idle lines that say
    nothing new are written at most once per `IDLE_EVERY_S` (the engine polls every 2 s)."""

    IDLE_EVERY_S = 60.0

    def __init__(self, json_lines: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.json_lines = json_lines
        self.clock = clock
        self._last_idle: dict[str, tuple[tuple[bool, str], float]] = {}
        self._hardware_said = False

    def _write(self, name: str, fields: dict[str, str]) -> None:
        stamp = iso_now()
        if self.json_lines:
            out(json.dumps({"ts": stamp, "event": name, **fields}, sort_keys=True))
        else:
            out(f"{stamp} event={name} " + " ".join(f"{k}={v}" for k, v in fields.items()))

    def warn(self, message: str) -> None:
        """A warning line (an event named "warning")."""
        if self.json_lines:
            out(json.dumps({"ts": iso_now(), "event": "warning", "message": message}))
        else:
            out(f"{iso_now()} event=warning {message}")

    def __call__(self, event: Event) -> None:
        if isinstance(event, HardwareSampled) and not self._hardware_said:
            self._hardware_said = True  # once: what this machine's sensors report
            self._write("hardware", hardware_fields(event.sample))
            return
        if event.telemetry:
            return
        device: str = getattr(event, "device", "")  # each of several devices idles on its own
        if isinstance(event, Idle):
            key = (event.work_remaining, event.notice)
            now = self.clock()
            last = self._last_idle.get(device)
            if last is not None and last[0] == key and now - last[1] < self.IDLE_EVERY_S:
                return
            self._last_idle[device] = (key, now)
        else:
            self._last_idle.pop(device, None)  # the next idle spell is news again
        stamp = iso_now()
        if self.json_lines:
            out(json.dumps({"ts": stamp, **event.as_dict()}, sort_keys=True))
        else:
            out(f"{stamp} {event.as_line()}")
        if isinstance(event, Stopped) and event.exit_code:
            err(f"allmende volunteer: {event.reason}")
        if isinstance(event, Stopped) and event.handed_back:
            err("allmende volunteer: " + handed_back(event).removeprefix("; "))


def fetch_warning(allow_private: bool) -> str:
    """What --fetch-urls means, and that private addresses are fetched too when allowed."""
    if not allow_private:
        return FETCH_WARNING
    return FETCH_WARNING + (
        " --allow-private-addresses: loopback, private and LAN addresses are fetched too."
    )


def hardware_fields(sample: HardwareSample) -> dict[str, str]:
    """The sensors of this machine, "none" where it has none."""

    def celsius(value: float | None) -> str:
        return "none" if value is None else f"{value:.0f}C"

    gpus = ",".join(
        f"{g.device}:{celsius(g.temperature_c)}:"
        + ("energy-counter" if g.energy_mj is not None else "energy-estimated")
        for g in sample.gpus
    )
    return {
        "cpus": str(sample.cpu_count),
        "cpu_temperature": celsius(sample.cpu_temperature_c),
        "gpus": gpus or "none",
    }


def summary(state: ViewState) -> list[str]:
    """What the volunteer reads after leaving the TUI: its record, and the work handed back."""
    lines = []
    if state.totals is not None:
        t = state.totals
        lines.append(
            f"allmende: {t.results_valid:,} result(s) valid, {t.results_pending:,} pending "
            f"validation, {t.results_invalid:,} invalid; credit {t.credit:,} (lifetime, at "
            "this coordinator)"
        )
    elif state.accepted or state.pending or state.rejected:
        lines.append(
            f"allmende: this session {state.accepted} result(s) accepted, {state.pending} "
            f"pending validation, {state.rejected} rejected"
        )
    if state.spooled:
        lines.append(f"allmende: {state.spooled} result(s) kept on disk to send next time")
    if state.stopped is not None and state.stopped.handed_back:
        lines.append("allmende: " + handed_back(state.stopped).removeprefix("; "))
    return lines


def run_headless(config: EngineConfig, json_lines: bool) -> int:
    """One line per engine event; Ctrl-C or SIGTERM quit cleanly, a second Ctrl-C at once."""

    quiet_progress_bars()
    log = HeadlessLog(json_lines)
    if config.fetch_urls:  # said once, before anything is fetched
        log.warn(fetch_warning(config.allow_private_addresses))
    engine = VolunteerEngine(config, on_event=log)
    interrupted: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        if signum == signal.SIGINT and interrupted:
            raise KeyboardInterrupt  # a second Ctrl-C: leave now; results are on disk
        interrupted.append(signum)
        engine.quit()

    outcome: list[int] = []
    runner = threading.Thread(target=lambda: outcome.append(engine.run()), name="engine")
    runner.daemon = True
    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        runner.start()
        while runner.is_alive():
            runner.join(0.2)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    code = outcome[0] if outcome else 1
    if signal.SIGINT in interrupted and code == 0:
        return EXIT_INTERRUPTED
    return code
