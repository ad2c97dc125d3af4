"""The volunteer's settings keys: one table (`KEYS`) of each setting's name, type, flag,
help and check, from which settings.py reads the file, the environment and the flags.

A check returns None for a good value, or what was expected; settings.py puts it in the
error that names the key, variable or flag.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from allmende.protocol.errors import InvalidArgument

ENV_PREFIX = "ALLMENDE_"
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def _check_devices(value: str) -> str | None:
    from allmende.client.engine.devices import check_devices  # the engine loads lazily here

    return check_devices(value)


def _address(value: str) -> str | None:
    if value == "":
        return None
    host, sep, port = value.rpartition(":")
    if sep and host and port.isdigit() and 0 < int(port) <= 65535:
        return None
    return "HOST:PORT"


def _fingerprint(value: str) -> str | None:
    if value == "" or _FINGERPRINT.match(value.lower().replace(":", "")):
        return None
    return "the coordinator's 64-hex-digit key fingerprint"


def _schedule(value: str) -> str | None:
    from allmende.client.engine.policy import parse_schedule

    try:
        parse_schedule(value)
    except InvalidArgument as exc:
        return exc.expected
    return None


def _between(low: float, high: float, what: str) -> Callable[[Any], str | None]:
    return lambda value: None if low <= value <= high else f"{what} from {low:g} to {high:g}"


@dataclass(frozen=True)
class Key:
    name: str
    type: type
    flag: str
    help: str
    check: Callable[[Any], str | None] = lambda value: None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


KEYS: tuple[Key, ...] = (
    Key("coordinator", str, "--coordinator", "coordinator HOST:PORT", _address),
    Key(
        "fingerprint",
        str,
        "--fingerprint",
        "the coordinator key fingerprint to pin (from its operator)",
        _fingerprint,
    ),
    Key(
        "display_name",
        str,
        "--name",
        "display name shown to the coordinator",
        lambda v: None if len(v) <= 64 else "at most 64 characters",
    ),
    Key(
        "device",
        str,
        "--device",
        "auto, cpu, cuda:N, several (cuda:0,cuda:1) or all (default auto)",
        lambda v: _check_devices(v),
    ),
    Key(
        "batch_size",
        int,
        "--batch-size",
        "items per forward pass (default 64)",
        _between(1, 4096, "a whole number"),
    ),
    Key(
        "threads",
        int,
        "--threads",
        "CPU threads for compute (0: all)",
        _between(0, 1024, "a whole number"),
    ),
    Key(
        "gpu_memory_gb",
        float,
        "--gpu-memory-gb",
        "most GPU memory to use, GiB (0: no cap)",
        _between(0, 4096, "GiB"),
    ),
    Key("idle_only", bool, "--idle-only", "compute only while other programs leave the CPU idle"),
    Key(
        "idle_cpu_percent",
        float,
        "--idle-cpu-percent",
        "with --idle-only: others' CPU use that counts as busy (default 25)",
        _between(1, 100, "a percentage"),
    ),
    Key("pause_on_battery", bool, "--pause-on-battery", "pause while running on battery"),
    Key(
        "max_gpu_temp_c",
        int,
        "--max-gpu-temp",
        "pause above this GPU temperature, °C (0: no limit)",
        lambda v: None if v == 0 or 40 <= v <= 120 else "0 (no limit) or 40 to 120 °C",
    ),
    Key(
        "max_cpu_temp_c",
        int,
        "--max-cpu-temp",
        "pause above this CPU temperature, °C (0: no limit)",
        lambda v: None if v == 0 or 40 <= v <= 120 else "0 (no limit) or 40 to 120 °C",
    ),
    Key(
        "schedule",
        str,
        "--schedule",
        'daily windows to compute in, local time, e.g. "22:00-07:00" (empty: always)',
        _schedule,
    ),
    Key(
        "fetch_urls",
        bool,
        "--fetch-urls",
        "also take image jobs whose rows are URLs, and fetch those images from the web "
        "yourself: your machine then connects to the servers the job's URLs name and shows "
        "them your IP address (off by default)",
    ),
    Key(
        "allow_private_addresses",
        bool,
        "--allow-private-addresses",
        "with --fetch-urls: also fetch from loopback, private and other non-public addresses "
        "(for tests and LANs; off by default)",
    ),
)
KEYS_BY_NAME = {key.name: key for key in KEYS}
