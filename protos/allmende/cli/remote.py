"""Turning coordinator failures into CLI errors with the right exit code."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from allmende.api.channel import RemoteError
from allmende.cli.common import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, CliError

T = TypeVar("T")


def call(fn: Callable[[], T], address: str) -> T:
    try:
        return fn()
    except RemoteError as exc:
        if exc.code == "UNAVAILABLE":
            raise CliError(
                f"coordinator {address} unreachable: {exc.details}", EXIT_UNREACHABLE
            ) from None
        code = EXIT_USAGE if exc.code == "INVALID_ARGUMENT" else EXIT_FAILED
        if exc.details.startswith("CLIENT:"):  # grpc refused to send it; it never left here
            raise CliError(f"not sent ({exc.code}): {exc.details}", code) from None
        raise CliError(f"coordinator refused ({exc.code}): {exc.details}", code) from None
