"""`allmende volunteer`: run the engine, headless (log lines) for now."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path

from allmende.cli.common import err, out
from allmende.client.engine import EngineConfig, Event, VolunteerEngine
from allmende.client.engine.events import Stopped
from allmende.client.engine.identity import default_home


def volunteer(args: argparse.Namespace) -> int:
    config = EngineConfig(
        coordinator=args.coordinator,
        fingerprint=args.fingerprint,
        home=Path(args.home) if args.home else default_home(),
        device=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
        exit_when_idle=args.exit_when_idle,
        display_name=args.name,
        give_up_after_s=120.0 if args.exit_when_idle else None,
    )
    if not args.headless:
        err("allmende: the terminal UI is not available in this version; running headless")

    def log_event(event: Event) -> None:
        out(json.dumps(event.as_dict(), sort_keys=True) if args.json else event.as_line())
        if isinstance(event, Stopped) and event.exit_code:
            err(f"allmende volunteer: {event.reason}")

    engine = VolunteerEngine(config, on_event=log_event)
    signal.signal(signal.SIGTERM, lambda *_: engine.stop())
    try:
        return engine.run()
    except KeyboardInterrupt:
        engine.stop()
        return 130
