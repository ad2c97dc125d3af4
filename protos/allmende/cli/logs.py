"""Logging for every `allmende` command: the level, and plain or JSON lines.

`--log-level` (or ALLMENDE_LOG_LEVEL) sets Allmende's own loggers; libraries stay at WARNING
unless the level is DEBUG, so `--log-level info` shows the coordinator's INFO lines without
gRPC's and SQLAlchemy's chatter. `-v` is `--log-level debug`. `--log-json` (or
ALLMENDE_LOG_JSON=1) writes one JSON object per line, with an ISO 8601 UTC timestamp, for log
collectors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from allmende.protocol.errors import InvalidArgument

LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LEVEL = "warning"
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
HANDLER_NAME = "allmende-cli"


def iso_now() -> str:
    """Now, UTC, to the millisecond: "2026-12-03T09:40:12.345Z"."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line: dict[str, Any] = {
            "ts": stamp.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, sort_keys=True)


class IsoFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        return stamp.replace("+00:00", "Z")


def add_log_flags(parser: argparse.ArgumentParser, *, sub: bool = False) -> None:
    """The logging flags; on a subcommand (`sub`) they override the top-level ones only when
    given, so both `allmende --log-level info coordinator serve` and `allmende coordinator
    serve --log-level info` work."""
    default = argparse.SUPPRESS if sub else None
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LEVELS,
        default=default,
        help=f"debug, info, warning or error (default {DEFAULT_LEVEL}) [ALLMENDE_LOG_LEVEL]",
    )
    parser.add_argument(
        "--log-json",
        action="store_true",
        default=default,
        help="log one JSON object per line [ALLMENDE_LOG_JSON=1]",
    )


def resolve_level(flag: str | None, verbose: bool, env: Mapping[str, str]) -> str:
    if flag:
        return flag
    if verbose:
        return "debug"
    value = env.get("ALLMENDE_LOG_LEVEL", "").strip().lower()
    if not value:
        return DEFAULT_LEVEL
    if value not in LEVELS:
        raise InvalidArgument("ALLMENDE_LOG_LEVEL", f"one of {', '.join(LEVELS)}, got {value!r}")
    return value


def setup_logging(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> None:
    level_name = resolve_level(
        getattr(args, "log_level", None), bool(getattr(args, "verbose", False)), env
    )
    as_json = bool(getattr(args, "log_json", False)) or env.get("ALLMENDE_LOG_JSON") == "1"
    level = getattr(logging, level_name.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else IsoFormatter(PLAIN_FORMAT))
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):  # ours from an earlier call only (tests call main often)
        if old.get_name() == HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    # Libraries speak up only at WARNING, unless everything was asked for.
    root.setLevel(level if level == logging.DEBUG else max(level, logging.WARNING))
    logging.getLogger("allmende").setLevel(level)
