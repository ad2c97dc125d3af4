"""What the volunteer's machine is doing: CPU, memory, battery and GPUs, sampled on demand.

`HardwareProbe` is the one interface; `SystemProbe` reads psutil and, when the NVIDIA
Management Library is present, NVML; `FakeProbe` returns a scripted, deterministic sequence
for tests and snapshots. A sample always says what the platform did not report (``None``)
instead of guessing, and separates what this process (Allmende) uses from the whole machine.
No UI and no torch here: the engine's pause policies and the TUI both read these samples.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

log = logging.getLogger("allmende.probes")

GIB = 1024**3


@dataclass(frozen=True)
class GpuSample:
    """One GPU as NVML reports it; a field is None when the platform does not report it."""

    index: int
    name: str
    utilisation_percent: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    # Memory held by this process (Allmende) on this GPU.
    memory_ours_bytes: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    # The board's own energy counter since the driver loaded, in millijoules (NVML's
    # nvmlDeviceGetTotalEnergyConsumption, Volta and newer); None where it has none.
    energy_mj: int | None = None

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"


@dataclass(frozen=True)
class HardwareSample:
    """The machine at one moment. Percentages are of the whole machine (0-100)."""

    at: float  # the probe's monotonic clock, seconds
    cpu_count: int
    cpu_percent: float | None = None
    # This process's share of the whole machine's CPU time (0-100, not per core).
    cpu_ours_percent: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    memory_ours_bytes: int | None = None
    # None: no battery (or the platform does not say); True: running on battery.
    on_battery: bool | None = None
    battery_percent: float | None = None
    gpus: tuple[GpuSample, ...] = ()
    # The hottest CPU package (or core) sensor psutil reports; None: no sensor here.
    cpu_temperature_c: float | None = None

    @property
    def cpu_others_percent(self) -> float | None:
        """CPU use by everything that is not Allmende."""
        if self.cpu_percent is None:
            return None
        return max(0.0, self.cpu_percent - (self.cpu_ours_percent or 0.0))

    def gpu(self, device: str) -> GpuSample | None:
        """The GPU a device name ("cuda:1", "auto": the first) refers to, if any."""
        if not self.gpus:
            return None
        if device == "auto":
            return self.gpus[0]
        if device.startswith("cuda"):
            index = device.partition(":")[2] or "0"
            for gpu in self.gpus:
                if index.isdigit() and gpu.index == int(index):
                    return gpu
        return None


class HardwareProbe(Protocol):
    """Samples the machine. Called from one thread at a time."""

    def sample(self) -> HardwareSample: ...

    def devices(self) -> list[tuple[str, str]]:
        """(device, description) pairs the volunteer may choose from, "cpu" first."""
        ...


class SystemProbe:
    """psutil for CPU, memory and battery; NVML for NVIDIA GPUs when it can be loaded."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        import psutil

        self._psutil: Any = psutil
        self._clock = clock
        self._process: Any = psutil.Process(os.getpid())
        self._cpu_count = psutil.cpu_count() or 1
        # The first cpu_percent call only starts the measurement; prime both counters.
        psutil.cpu_percent(interval=None)
        self._process.cpu_percent(interval=None)
        self._nvml: Any = _load_nvml()
        self._lock = threading.Lock()

    def devices(self) -> list[tuple[str, str]]:
        choices = [("cpu", f"CPU ({self._cpu_count} threads)")]
        for gpu in self._gpus():
            choices.append((gpu.device, f"GPU {gpu.index}: {gpu.name}"))
        return choices

    def sample(self) -> HardwareSample:
        ps = self._psutil
        with self._lock:
            cpu = float(ps.cpu_percent(interval=None))
            ours_cpu = float(self._process.cpu_percent(interval=None)) / self._cpu_count
            memory = ps.virtual_memory()
            try:
                rss = int(self._process.memory_info().rss)
            except Exception:  # the platform may refuse; the sample says "unknown"
                rss = None
            on_battery, battery_percent = self._battery()
            return HardwareSample(
                at=self._clock(),
                cpu_count=self._cpu_count,
                cpu_percent=cpu,
                cpu_ours_percent=min(ours_cpu, 100.0),
                memory_used_bytes=int(memory.total - memory.available),
                memory_total_bytes=int(memory.total),
                memory_ours_bytes=rss,
                on_battery=on_battery,
                battery_percent=battery_percent,
                gpus=tuple(self._gpus()),
                cpu_temperature_c=cpu_temperature(self._psutil),
            )

    def _battery(self) -> tuple[bool | None, float | None]:
        sensors = getattr(self._psutil, "sensors_battery", None)
        if sensors is None:
            return None, None
        try:
            battery = sensors()
        except Exception:
            return None, None
        if battery is None:
            return None, None
        plugged = battery.power_plugged
        return (None if plugged is None else not plugged), float(battery.percent)

    def _gpus(self) -> list[GpuSample]:
        nvml = self._nvml
        if nvml is None:
            return []
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            log.debug("NVML device count failed: %s", exc)
            return []
        return [nvml_sample(nvml, index, os.getpid()) for index in range(count)]


# psutil sensor groups that measure the CPU itself, best first (Linux names: Intel, AMD,
# ARM boards, ACPI); anything else (disks, Wi-Fi, batteries) is not the CPU.
CPU_SENSORS = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "cpu-thermal", "acpitz")


def cpu_temperature(psutil: Any) -> float | None:
    """The hottest reading of the first CPU sensor group psutil knows, or None where the
    platform has none (containers, VMs, macOS and Windows, whose psutil has no sensors)."""
    read = getattr(psutil, "sensors_temperatures", None)
    if read is None:
        return None
    try:
        groups = read() or {}
    except Exception:  # a broken sysfs entry: no reading rather than no sample
        return None
    return pick_cpu_temperature(groups)


def pick_cpu_temperature(groups: dict[str, Any]) -> float | None:
    for name in CPU_SENSORS:
        readings = [float(t.current) for t in groups.get(name, ()) if t.current is not None]
        readings = [c for c in readings if 0 < c < 150]  # unplugged sensors read 0 or junk
        if readings:
            return max(readings)
    return None


def _load_nvml() -> Any:
    """The pynvml module (package nvidia-ml-py) after nvmlInit, or None without a driver."""
    try:
        nvml: Any = importlib.import_module("pynvml")
        nvml.nvmlInit()
    except Exception as exc:  # not installed, no driver, no GPU: no GPU rows, no error
        log.debug("NVML not available: %s", exc)
        return None
    return nvml


def _maybe(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception:  # NVML raises NVMLError_NotSupported for what a board does not report
        return None


def nvml_sample(nvml: Any, index: int, pid: int) -> GpuSample:
    """Read one GPU through an initialised NVML module; unsupported readings become None."""
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = _maybe(lambda: nvml.nvmlDeviceGetName(handle)) or f"GPU {index}"
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    util = _maybe(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    memory = _maybe(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    temperature = _maybe(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
    milliwatts = _maybe(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    energy = _maybe(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
    processes = _maybe(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle))
    ours = None
    if processes is not None:
        ours = sum(int(p.usedGpuMemory or 0) for p in processes if int(p.pid) == pid)
    return GpuSample(
        index=index,
        name=str(name),
        utilisation_percent=None if util is None else float(util.gpu),
        memory_used_bytes=None if memory is None else int(memory.used),
        memory_total_bytes=None if memory is None else int(memory.total),
        memory_ours_bytes=ours,
        temperature_c=None if temperature is None else float(temperature),
        power_w=None if milliwatts is None else float(milliwatts) / 1000.0,
        energy_mj=None if energy is None else int(energy),
    )


@dataclass
class FakeProbe:
    """A deterministic probe: returns `samples` in turn (the last one repeats).

    `at` advances by `step_s` per sample, so energy and rates computed from samples are
    reproducible. Tests change `samples` (or call `push`) to script a machine getting hot,
    busy or unplugged.
    """

    samples: list[HardwareSample] = field(default_factory=list)
    step_s: float = 2.0
    device_choices: Sequence[tuple[str, str]] = (("cpu", "CPU (8 threads)"),)
    calls: int = 0

    def push(self, sample: HardwareSample) -> None:
        self.samples.append(sample)

    def devices(self) -> list[tuple[str, str]]:
        return list(self.device_choices)

    def sample(self) -> HardwareSample:
        base = (
            self.samples[min(self.calls, len(self.samples) - 1)]
            if self.samples
            else HardwareSample(at=0.0, cpu_count=8)
        )
        sample = replace(base, at=self.calls * self.step_s)
        self.calls += 1
        return sample
