"""Hardware probes: the fake is deterministic; NVML readings a board lacks become None."""

from __future__ import annotations

import types
from typing import Any

from allmende.client.probes import (
    FakeProbe,
    GpuSample,
    HardwareSample,
    SystemProbe,
    nvml_sample,
    pick_cpu_temperature,
)


def test_the_fake_probe_replays_its_samples_on_a_fixed_clock() -> None:
    probe = FakeProbe(
        [
            HardwareSample(at=0, cpu_count=4, cpu_percent=10),
            HardwareSample(at=0, cpu_count=4, cpu_percent=90),
        ],
        step_s=2.0,
    )
    samples = [probe.sample() for _ in range(3)]
    assert [s.at for s in samples] == [0.0, 2.0, 4.0]
    assert [s.cpu_percent for s in samples] == [10, 90, 90]


class NotSupported(Exception):
    pass


def fake_nvml(**overrides: Any) -> Any:
    def unsupported(*_: object) -> object:
        raise NotSupported

    module = types.SimpleNamespace(
        NVML_TEMPERATURE_GPU=0,
        nvmlDeviceGetHandleByIndex=lambda i: f"handle{i}",
        nvmlDeviceGetName=lambda h: b"NVIDIA Test 24GB",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=55),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=8 << 30, total=24 << 30),
        nvmlDeviceGetTemperature=lambda h, kind: 64,
        nvmlDeviceGetPowerUsage=unsupported,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [
            types.SimpleNamespace(pid=42, usedGpuMemory=3 << 30),
            types.SimpleNamespace(pid=7, usedGpuMemory=1 << 30),
        ],
    )
    for name, value in overrides.items():
        setattr(module, name, value)
    return module


def test_nvml_readings_and_what_this_process_holds() -> None:
    gpu = nvml_sample(fake_nvml(), 0, pid=42)
    assert gpu == GpuSample(
        index=0,
        name="NVIDIA Test 24GB",
        utilisation_percent=55.0,
        memory_used_bytes=8 << 30,
        memory_total_bytes=24 << 30,
        memory_ours_bytes=3 << 30,
        temperature_c=64.0,
        power_w=None,
    )
    assert gpu.device == "cuda:0"
    powered = nvml_sample(fake_nvml(nvmlDeviceGetPowerUsage=lambda h: 212_500), 0, pid=1)
    assert powered.power_w == 212.5 and powered.memory_ours_bytes == 0


def test_a_sample_tells_ours_from_the_rest_and_finds_the_gpu_in_use() -> None:
    sample = HardwareSample(
        at=0,
        cpu_count=8,
        cpu_percent=70,
        cpu_ours_percent=50,
        gpus=(GpuSample(0, "a"), GpuSample(1, "b")),
    )
    assert sample.cpu_others_percent == 20
    assert sample.gpu("auto").name == "a"  # type: ignore[union-attr]
    assert sample.gpu("cuda:1").name == "b"  # type: ignore[union-attr]
    assert sample.gpu("cpu") is None and sample.gpu("cuda:5") is None


def test_the_system_probe_reads_this_machine() -> None:
    probe = SystemProbe()
    sample = probe.sample()
    assert sample.cpu_count >= 1
    assert sample.memory_total_bytes and sample.memory_ours_bytes
    assert 0 <= (sample.cpu_percent or 0) <= 100
    assert probe.devices()[0][0] == "cpu"
    # real sensors where this machine has them; "none" (None) cleanly where it has not
    assert sample.cpu_temperature_c is None or 0 < sample.cpu_temperature_c < 150
    for gpu in sample.gpus:
        assert gpu.temperature_c is None or gpu.temperature_c > 0


def test_cpu_temperature_comes_from_the_cpu_sensor_group() -> None:
    def t(current: float | None) -> Any:
        return types.SimpleNamespace(label="", current=current, high=None, critical=None)

    groups = {
        "nvme": [t(71.0)],  # a disk, not the CPU
        "acpitz": [t(40.0)],
        "coretemp": [t(55.0), t(63.0), t(0.0)],  # package and cores; 0: not connected
    }
    assert pick_cpu_temperature(groups) == 63.0
    assert pick_cpu_temperature({"acpitz": [t(41.5)]}) == 41.5
    assert pick_cpu_temperature({"nvme": [t(71.0)]}) is None
    assert pick_cpu_temperature({}) is None


def test_the_gpu_energy_counter_is_read_where_the_board_has_one() -> None:
    assert nvml_sample(fake_nvml(), 0, pid=1).energy_mj is None
    counted = nvml_sample(fake_nvml(nvmlDeviceGetTotalEnergyConsumption=lambda h: 9_000_000), 0, 1)
    assert counted.energy_mj == 9_000_000
