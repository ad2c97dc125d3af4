"""The volunteer's command: `allmende volunteer`. Only argparse here (and the settings'
flags): the handler is named by its dotted path and imported when it runs."""

from __future__ import annotations

import argparse

from allmende.cli.common import EXIT_CODES_HELP
from allmende.cli.logs import add_log_flags
from allmende.client.settings import add_setting_flags


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "volunteer",
        help="donate compute to a coordinator",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_setting_flags(p)  # every setting is a flag, an ALLMENDE_ variable and a TOML key
    p.add_argument("--headless", action="store_true", help="log lines instead of the TUI")
    p.add_argument("--json", action="store_true", help="with --headless: one JSON object per line")
    p.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="exit 0 once no work is left for this volunteer and nothing is in flight",
    )
    p.add_argument(
        "--home",
        help="the volunteer's folder: key, unsent results and (then) volunteer.toml "
        "(default: platform data dir) [ALLMENDE_HOME]",
    )
    p.add_argument(
        "--config",
        help="the settings file (default: volunteer.toml in the platform config folder, "
        "or in --home) [ALLMENDE_CONFIG]",
    )
    p.add_argument("--setup", action="store_true", help="show the first-run screen again")
    add_log_flags(p, sub=True)
    p.set_defaults(handler="allmende.client.cli.volunteer_cmds:volunteer")
