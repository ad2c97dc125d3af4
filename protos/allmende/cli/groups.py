"""The command groups the `allmende` command is made of, each kept with its role.

The entry point names no role's module in an import statement: it imports each group module
below with importlib and calls its `add_commands(subparsers)`, in this order (the order
`allmende --help` lists the commands in). The list is fixed rather than found through
package entry points, so a source tree on PYTHONPATH builds the same command as an
installed wheel. A group whose module cannot be imported (its role's package or a
dependency is missing) leaves a placeholder for each of its commands that says which extra
to install.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass

from allmende.cli.common import EXIT_FAILED, CliError


@dataclass(frozen=True)
class CommandGroup:
    module: str  # defines add_commands(subparsers)
    commands: tuple[str, ...]  # the top-level commands it adds
    extra: str  # the extra that installs what it needs


GROUPS = (
    # The operator's: run a coordinator, create and steer jobs, serve models, see and ban
    # volunteers.
    CommandGroup(
        "allmende.coordinator.cli.commands",
        ("coordinator", "job", "model", "volunteers"),
        "coordinator",
    ),
    CommandGroup("allmende.client.cli.commands", ("volunteer",), "volunteer"),
    CommandGroup("allmende.cli.research", ("dataset",), "dataset"),
    # The demo runs both roles in one process: a package of its own (allmende.demo).
    CommandGroup("allmende.demo.commands", ("demo",), "all"),
)

MISSING_HANDLER = "allmende.cli.groups:not_installed"


def add_groups(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for group in GROUPS:
        try:
            module = importlib.import_module(group.module)
        except ModuleNotFoundError as exc:
            for name in group.commands:
                _placeholder(sub, name, group.extra, exc.name or group.module)
            continue
        module.add_commands(sub)


def _placeholder(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, extra: str, missing: str
) -> None:
    message = (
        f"{missing} is not installed; install the extra for this role, e.g. pip install "
        f"'allmende[{extra}]'"
    )
    # Takes any arguments (no flag is an option here), so that whatever follows the command
    # gets this message rather than an argparse complaint about flags it cannot know.
    p = sub.add_parser(
        name, help=f"(not installed: allmende[{extra}])", add_help=False, prefix_chars="\0"
    )
    p.add_argument("arguments", nargs="*")
    p.set_defaults(handler=MISSING_HANDLER, missing=message)


def not_installed(args: argparse.Namespace) -> int:
    raise CliError(str(args.missing), EXIT_FAILED)
