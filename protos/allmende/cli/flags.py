"""Flag types and flags that several command groups share: addresses, numbers in a range, the
admin token and the reader token. Each type raises argparse's error with what it expected."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def address(value: str) -> str:
    """An argparse type: HOST:PORT."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def at_least(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= `least`."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
        if number < least:
            raise argparse.ArgumentTypeError(f"expected a number >= {least}, got {number}")
        return number

    return parse


positive = at_least(1)
non_negative = at_least(0)


def number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None


def fraction(value: str) -> float:
    given = number(value)
    if not 0.0 <= given <= 0.5:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 0.5, got {given}")
    return given


def unit_interval(value: str) -> float:
    given = number(value)
    if not 0.0 < given <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a cosine in (0, 1], got {given}")
    return given


def admin_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coordinator", type=address, required=True, help="HOST:PORT")
    p.add_argument("--admin-token-file", required=True, help="the coordinator's admin.token")


def reader_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--token-file",
        help="for a coordinator serving --private: its reader.token (or admin.token)",
    )
