"""How a run ends: the exit codes `VolunteerEngine.run` returns, and `Stop`, which carries
one and its reason out of whichever part of the engine decided that the run is over."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4


class Stop(Exception):
    """End the run with exit code `code`, telling the volunteer `reason`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
