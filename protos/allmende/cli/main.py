"""The `allmende` command's entry point: the top-level flags, the command groups of every
role (found through groups.py, never imported here by name), and dispatch.

Each command names its handler by dotted path ("package.module:function"), imported only when
the command runs, so a volunteer install never imports the coordinator's dependencies and
vice versa. This module and the rest of allmende.cli import neither role (an import-linter
contract in pyproject.toml says so)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import cast

from allmende.cli.common import EXIT_CODES_HELP, EXIT_USAGE, CliError, err
from allmende.cli.groups import add_groups
from allmende.cli.logs import add_log_flags, setup_logging
from allmende.cli.parser import CliParser, version_text
from allmende.protocol.errors import AllmendeError, InvalidArgument


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog="allmende",
        description="Allmende: volunteers compute, quorums verify, researchers get open datasets.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug details (--log-level debug)"
    )
    parser.add_argument("--version", action="version", version=version_text())
    add_log_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The groups add plain ArgumentParsers as far as they know; argparse makes CliParsers.
    add_groups(cast("argparse._SubParsersAction[argparse.ArgumentParser]", sub))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module_name, func_name = args.handler.split(":")
    try:
        setup_logging(args)
        module = importlib.import_module(module_name)
        return int(getattr(module, func_name)(args))
    except CliError as exc:
        err(f"allmende: {exc.message}")
        return exc.code
    except InvalidArgument as exc:
        err(f"allmende: {exc.message}")
        return EXIT_USAGE
    except AllmendeError as exc:
        err(f"allmende: {exc.message}")
        return 1
    except ModuleNotFoundError as exc:
        err(
            f"allmende: {exc.name} is not installed; install the extra for this role, "
            "e.g. pip install 'allmende[coordinator]' or 'allmende[volunteer]'"
        )
        return 1
    except KeyboardInterrupt:
        err("allmende: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
