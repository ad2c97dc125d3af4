"""Reading the token files that operators' and researchers' commands send."""

from __future__ import annotations

from pathlib import Path

from allmende.cli.common import EXIT_USAGE, CliError


def read_token(path_text: str, flag: str = "--admin-token-file") -> str:
    path = Path(path_text)
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise CliError(f"{flag}: cannot read {path} ({exc.strerror})", EXIT_USAGE) from None
    if not token:
        raise CliError(f"{flag}: {path} is empty", EXIT_USAGE)
    return token


def reader_token(args: object) -> str | None:
    """The token of `--token-file`, for researcher calls to a private coordinator."""
    path = getattr(args, "token_file", None)
    return read_token(path, "--token-file") if path else None
