"""What every subcommand shares: output helpers, exit codes, error reporting."""

from __future__ import annotations

import json
import sys
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed (remote error, verification failure)
EXIT_USAGE = 2  # bad flags or bad input; nothing was changed
EXIT_REFUSED = 3  # a volunteer refused the coordinator's work (trust failure)
EXIT_UNREACHABLE = 4  # the coordinator could not be reached

EXIT_CODES_HELP = """exit codes:
  0  success
  1  the operation failed (the coordinator refused it, or a check failed)
  2  bad flags or bad input; nothing was changed
  3  (volunteer) work refused: the coordinator's key or a unit's signature did not verify
  4  the coordinator could not be reached
"""


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def out(line: str = "") -> None:
    print(line, flush=True)


def err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def out_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True), flush=True)
