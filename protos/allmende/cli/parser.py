"""The argument parser every `allmende` command and subcommand is built from.

Plain argparse reports an unknown flag of a subcommand with the top-level usage
(`allmende job create --redundnacy 3` printed `usage: allmende [-h] ... COMMAND`), and when
a required flag is also missing it reports only that, hiding the typo that caused it
(`--inptu` for `--input`). Here the subcommand that was given the flag reports it, with its
own usage and the flag it probably meant.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any, NoReturn


def version_text() -> str:
    try:
        version = metadata.version("allmende")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "unknown (not installed)"
    python = ".".join(str(part) for part in sys.version_info[:3])
    return f"allmende {version} (Python {python})"


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors name unknown flags, with this parser's usage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._given: list[str] = []

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._given = list(sys.argv[1:] if args is None else args)
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self._subparser_action() is None:
            # A leaf command was given something it does not take: say so here, with this
            # command's usage, rather than let the top-level parser say it with its own.
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        unknown = self._unknown_flags()
        if unknown:
            # An unknown flag explains most other complaints (a required flag "missing"
            # because its name was mistyped), so it comes first and alone.
            message = "; ".join(self._explain(flag) for flag in unknown)
        super().error(message)

    def _subparser_action(self) -> argparse.Action | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
        return None

    def _known_flags(self) -> list[str]:
        return [flag for flag in self._option_string_actions if flag.startswith("--")]

    def _unknown_flags(self) -> list[str]:
        if self._subparser_action() is not None:
            return []  # a command group: its subcommand judges the flags after it
        known = self._known_flags()
        unknown = []
        for token in self._given:
            if token == "--":
                break
            if not token.startswith("--") or len(token) < 3:
                continue
            flag = token.split("=", 1)[0]
            if flag in self._option_string_actions:
                continue
            if self.allow_abbrev and sum(k.startswith(flag) for k in known) == 1:
                continue  # argparse takes an unambiguous abbreviation
            unknown.append(flag)
        return unknown

    def _explain(self, flag: str) -> str:
        close = difflib.get_close_matches(flag, self._known_flags(), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"unknown flag {flag}{hint}; `{self.prog} --help` lists the flags"
