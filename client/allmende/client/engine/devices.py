"""Which compute devices one engine drives: "cpu", "cuda:1", "cuda:0,cuda:1" or "all".

Several devices run as several lanes of one engine (Folding@home v8 calls them resource
groups): each lane has its own lease loop, computer, pause state and "finish the unit, then
stop", while the identity, the connection, the spool and the verdict book stay shared, so one
volunteer key signs every result and one submit thread sends them. A single device is one
lane, and the engine behaves exactly as it did before lanes existed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from allmende.client.probes import HardwareProbe
from allmende.protocol.errors import InvalidArgument

_ONE = re.compile(r"^(auto|cpu|cuda(:\d{1,2})?)$")


def check_devices(text: str, key: str = "device") -> str | None:
    """What is wrong with a device setting, or None. Used by the settings and the engine."""
    if text == "all":
        return None
    parts = [p.strip() for p in text.split(",")]
    if any(not _ONE.match(p) for p in parts):
        return "auto, cpu or cuda:N, a list like cuda:0,cuda:1, or all"
    if len(parts) > 1:
        if "auto" in parts:
            return "a list names each device (cpu or cuda:N); auto stands alone"
        names = [normalise(p) for p in parts]
        if len(set(names)) != len(names):
            return "each device once"
    return None


def normalise(device: str) -> str:
    return "cuda:0" if device == "cuda" else device


def parse_devices(text: str, probe: HardwareProbe | None = None) -> list[str]:
    """The lanes a device setting asks for. "all" means every GPU the probe sees, or the
    CPU when it sees none (a machine without GPUs still computes)."""
    problem = check_devices(text)
    if problem is not None:
        raise InvalidArgument("device", f"{problem}, got {text!r}")
    if text == "all":
        gpus: Sequence[str] = []
        if probe is not None:
            gpus = [d for d, _ in probe.devices() if d.startswith("cuda")]
        return list(gpus) or ["cpu"]
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1:
        return [text]  # one lane, named as the volunteer wrote it (auto stays auto)
    return [normalise(p) for p in parts]
