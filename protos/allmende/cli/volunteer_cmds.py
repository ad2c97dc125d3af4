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
from typing import Any

from allmende.cli.common import EXIT_USAGE, CliError, err, out
from allmende.client.engine import EngineConfig, Event, VolunteerEngine
from allmende.client.engine.events import Stopped
from allmende.client.engine.identity import default_home
from allmende.client.settings import (
    KEYS_BY_NAME,
    flags_from,
    load_settings,
    resolve_config_path,
    resolve_home,
)
from allmende.client.tui.state import ViewState, handed_back

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

    def log_event(event: Event) -> None:
        if event.telemetry:
            return
        out(json.dumps(event.as_dict(), sort_keys=True) if json_lines else event.as_line())
        if isinstance(event, Stopped) and event.exit_code:
            err(f"allmende volunteer: {event.reason}")

    engine = VolunteerEngine(config, on_event=log_event)
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
