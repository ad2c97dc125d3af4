"""The `allmende` entry point and its command groups: each role's group adds its commands,
the entry point imports no role by name, building the parser imports no role's heavy
dependencies, and a group that cannot be imported says which extra to install."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from allmende.cli import groups
from allmende.cli.common import EXIT_UNREACHABLE
from allmende.cli.groups import GROUPS, CommandGroup
from allmende.cli.main import build_parser, main

HEAVY = ("grpc", "sqlalchemy", "textual", "torch", "transformers", "pyarrow", "numpy")


def top_level_commands(parser: argparse.ArgumentParser) -> list[str]:
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


def test_the_groups_add_their_commands_in_order() -> None:
    expected = [name for group in GROUPS for name in group.commands]
    assert top_level_commands(build_parser()) == expected
    assert expected == ["coordinator", "job", "model", "volunteers", "volunteer", "dataset", "demo"]


def test_the_entry_point_imports_no_role_and_the_parser_no_heavy_dependency() -> None:
    code = (
        "import sys\n"
        "from allmende.cli.main import build_parser\n"
        "roles = ('allmende.client', 'allmende.coordinator', 'allmende.demo')\n"
        "print(sorted(m for m in sys.modules if m.startswith(roles)))\n"
        "build_parser()\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    before, after = done.stdout.splitlines()
    assert before == "[]", "importing the entry point imported a role"
    assert after == "[]", "building the parser imported a heavy dependency"


def test_a_group_that_cannot_be_imported_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = CommandGroup("allmende.no_such_role.commands", ("volunteer",), "volunteer")
    others = tuple(g for g in GROUPS if "volunteer" not in g.commands)
    monkeypatch.setattr(groups, "GROUPS", (*others, missing))
    assert "volunteer" in top_level_commands(build_parser())
    # Whatever follows the command, flags included, gets the message, not a usage error.
    assert main(["volunteer", "--headless", "--coordinator", "h:1"]) == 1
    assert capsys.readouterr().err == (
        "allmende: allmende.no_such_role is not installed; install the extra for this role, "
        "e.g. pip install 'allmende[volunteer]'\n"
    )
    # The other groups still work: `job list` runs, and finds nothing listening on port 1.
    assert main(["job", "list", "--coordinator", "127.0.0.1:1"]) == EXIT_UNREACHABLE
