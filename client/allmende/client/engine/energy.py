"""Energy the compute device used, from hardware samples.

Where the GPU keeps its own energy counter (NVML's nvmlDeviceGetTotalEnergyConsumption,
Volta and newer) the meter takes the counter's difference between samples: measured. Elsewhere
it adds power times time between samples, from the GPU's power reading or, on a CPU, from this
process's CPU time at `CPU_WATTS_PER_BUSY_THREAD`: estimated, and said to be. Only intervals
that end while computing count, so an idle volunteer adds nothing.

The engine reports energy per 1,000 items with each result (the coordinator totals it per
job); the TUI shows the running total. Both use this one meter.
"""

from __future__ import annotations

import threading

from allmende.client.probes import HardwareSample

# Without a power sensor, energy is estimated from CPU time at this many watts per busy
# logical CPU (a typical desktop core under load, including its share of uncore power).
CPU_WATTS_PER_BUSY_THREAD = 7.5
MJ_PER_WH = 3_600_000.0

COUNTER = "GPU energy counter"
GPU_POWER = "GPU power"
CPU_TIME = "CPU time"


class EnergyMeter:
    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self.wh = 0.0
        self.sources: set[str] = set()
        self._previous: HardwareSample | None = None
        self._taken = 0.0  # wh at the last take()
        self._lock = threading.Lock()

    @property
    def measured(self) -> bool | None:
        """True when every counted interval came from the energy counter; None before any."""
        if not self.sources:
            return None
        return self.sources == {COUNTER}

    def add(self, sample: HardwareSample, computing: bool) -> None:
        with self._lock:
            previous, self._previous = self._previous, sample
            if previous is None or not computing:
                return
            seconds = max(0.0, sample.at - previous.at)
            gpu = None if self.device == "cpu" else sample.gpu(self.device)
            before = None if self.device == "cpu" else previous.gpu(self.device)
            now_mj = None if gpu is None else gpu.energy_mj
            then_mj = None if before is None else before.energy_mj
            # A counter that went backwards was reset (driver reload): use power this time.
            if now_mj is not None and then_mj is not None and now_mj >= then_mj:
                self.wh += (now_mj - then_mj) / MJ_PER_WH
                self.sources.add(COUNTER)
                return
            if gpu is not None and gpu.power_w is not None:
                self.wh += gpu.power_w * seconds / 3600
                self.sources.add(GPU_POWER)
            elif sample.cpu_ours_percent is not None:
                busy_threads = sample.cpu_ours_percent / 100 * sample.cpu_count
                self.wh += busy_threads * CPU_WATTS_PER_BUSY_THREAD * seconds / 3600
                self.sources.add(CPU_TIME)

    def take(self) -> float:
        """Wh counted since the last take."""
        with self._lock:
            spent, self._taken = self.wh - self._taken, self.wh
            return spent


class PerThousand:
    """Energy per 1,000 items, from the meter, as units finish: the energy counted since
    the last estimate spread over the items computed since (samples come every couple of
    seconds, so a short unit may see none of its own)."""

    def __init__(self, meter: EnergyMeter) -> None:
        self.meter = meter
        self._items = 0
        self.wh_per_1000 = 0.0  # 0: not known yet

    def unit_done(self, items: int) -> tuple[float, bool]:
        """(Wh per 1,000 items, estimated) after a unit of `items` finished."""
        self._items += items
        spent = self.meter.take()
        if spent > 0 and self._items > 0:
            self.wh_per_1000 = spent / self._items * 1000
            self._items = 0
        return self.wh_per_1000, not self.meter.measured
