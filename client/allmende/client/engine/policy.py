"""When the volunteer's machine may compute: schedule, idle-only, battery, CPU and GPU
temperature.

`Policy.check` looks at one hardware sample and the local time and says why to pause (a
sentence for the volunteer) or None. Temperature and idleness use hysteresis so the engine
does not flap on and off around a threshold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time as daytime

from allmende.client.probes import HardwareSample
from allmende.protocol.errors import InvalidArgument

# Resume only this far below the temperature limit.
TEMPERATURE_HYSTERESIS_C = 5.0
# Resume idle-only work only when others use this much less CPU than the threshold.
IDLE_HYSTERESIS_PERCENT = 5.0

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class Window:
    start: daytime
    end: daytime

    def contains(self, now: daytime) -> bool:
        if self.start == self.end:
            return True  # "00:00-00:00": all day
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end  # over midnight, e.g. 22:00-07:00

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_schedule(text: str, key: str = "schedule") -> tuple[Window, ...]:
    """Parse "HH:MM-HH:MM[, HH:MM-HH:MM ...]" (local time); "" means any time."""
    if not text.strip():
        return ()
    windows = []
    for part in text.split(","):
        match = _WINDOW.match(part)
        if not match:
            raise InvalidArgument(key, f'daily windows like "22:00-07:00", got {part.strip()!r}')
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise InvalidArgument(key, f"times from 00:00 to 24:00, got {part.strip()!r}")
        end = daytime(0, 0) if h2 == 24 else daytime(h2, m2)
        windows.append(Window(daytime(h1, m1), end))
    return tuple(windows)


@dataclass(frozen=True)
class Limits:
    """The pause rules a volunteer chose; zero values mean the rule is off."""

    device: str = "auto"
    idle_only: bool = False
    idle_cpu_percent: float = 25.0
    pause_on_battery: bool = False
    max_gpu_temp_c: float = 0.0
    schedule: str = ""
    max_cpu_temp_c: float = 0.0


class Policy:
    """Stateful (for hysteresis) evaluation of `Limits` against samples and the clock."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.windows = parse_schedule(limits.schedule)
        self._hot = False
        self._cpu_hot = False
        self._busy = False

    def check(self, sample: HardwareSample | None, now: daytime) -> str | None:
        limits = self.limits
        if self.windows and not any(w.contains(now) for w in self.windows):
            spans = ", ".join(str(w) for w in self.windows)
            resume = next_start(self.windows, now)
            return f"outside the schedule ({spans}); resuming at {resume:%H:%M}"
        if sample is None:
            return None
        if limits.pause_on_battery and sample.on_battery:
            return "on battery"
        if limits.max_gpu_temp_c > 0:
            gpu = sample.gpu(limits.device)
            if gpu is not None and gpu.temperature_c is not None:
                limit = limits.max_gpu_temp_c
                resume_below = limit - TEMPERATURE_HYSTERESIS_C
                self._hot = gpu.temperature_c > (resume_below if self._hot else limit)
                if self._hot:
                    return (
                        f"GPU {gpu.index} at {gpu.temperature_c:.0f} °C, above the "
                        f"{limit:.0f} °C limit; resuming below {resume_below:.0f} °C"
                    )
        if limits.max_cpu_temp_c > 0 and sample.cpu_temperature_c is not None:
            limit, celsius = limits.max_cpu_temp_c, sample.cpu_temperature_c
            resume_below = limit - TEMPERATURE_HYSTERESIS_C
            self._cpu_hot = celsius > (resume_below if self._cpu_hot else limit)
            if self._cpu_hot:
                return (
                    f"CPU at {celsius:.0f} °C, above the {limit:.0f} °C limit; "
                    f"resuming below {resume_below:.0f} °C"
                )
        if limits.idle_only:
            others = sample.cpu_others_percent
            if others is not None:
                threshold = limits.idle_cpu_percent
                resume_below = max(threshold - IDLE_HYSTERESIS_PERCENT, 0.0)
                self._busy = others > (resume_below if self._busy else threshold)
                if self._busy:
                    return f"machine in use (other programs at {others:.0f}% CPU)"
        return None


def next_start(windows: tuple[Window, ...], now: daytime) -> daytime:
    """The start of the window that opens next after `now` (local time of day)."""

    def minutes_until(t: daytime) -> int:
        delta = (t.hour * 60 + t.minute) - (now.hour * 60 + now.minute)
        return delta if delta > 0 else delta + 24 * 60

    return min((w.start for w in windows), key=minutes_until)
