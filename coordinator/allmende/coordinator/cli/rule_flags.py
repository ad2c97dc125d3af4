"""`job create`'s keep-rule flags, made from the task kinds' declarations.

Each rule parameter a kind declares (protocol/kinds: `RuleParam`) is a flag of its own
(`keep_languages` → `--keep-languages`); a flag given for a kind that does not declare it is
refused. Values are checked here against the model when this machine's registry knows it
(errors name the flag), and always again by the coordinator.
"""

from __future__ import annotations

import argparse

from allmende.cli.common import EXIT_USAGE, CliError
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds import KINDS
from allmende.protocol.models import ModelRegistry

_DEST = "rule_"


def add_rule_flags(p: argparse.ArgumentParser) -> None:
    """One flag per rule parameter of any kind, each saying which kinds take it."""
    takers: dict[str, list[str]] = {}
    helps: dict[str, str] = {}
    for kind in KINDS.values():
        for param in kind.rule:
            takers.setdefault(param.name, []).append(kind.name)
            helps.setdefault(param.name, param.help)
    for name, kinds in takers.items():
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=_DEST + name,
            metavar="VALUE",
            help=f"{helps[name]} ({', '.join(kinds)} jobs)",
        )


def rule_from_flags(args: argparse.Namespace) -> dict[str, str]:
    """The rule parameters given, checked against the job's kind (and its model when known).
    Raises CliError (exit 2) naming the flag."""
    given = {
        key[len(_DEST) :]: value
        for key, value in vars(args).items()
        if key.startswith(_DEST) and value is not None
    }
    kind = KINDS.get(args.kind)
    if kind is None:  # the coordinator refuses the kind, naming the ones it has
        return given
    declared = {param.name for param in kind.rule}
    for name in given:
        if name not in declared:
            takers = [k.name for k in KINDS.values() if any(p.name == name for p in k.rule)]
            raise CliError(
                f"--{name.replace('_', '-')}: applies to {', '.join(takers)} jobs; this job's "
                f"kind is {kind.name}",
                EXIT_USAGE,
            )
    registry = ModelRegistry()
    if given and args.model in registry.names():
        try:
            kind.parse_rule(given, registry.get(args.model))
        except InvalidArgument as exc:
            flag = "--" + exc.field.removeprefix("rule.").replace("_", "-")
            raise CliError(f"{flag}: expected {exc.expected}", EXIT_USAGE) from None
    return given
