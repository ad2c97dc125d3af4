"""Several devices in one engine (--device cuda:0,cuda:1 or all), against a real coordinator
in-process: each device leases and computes on its own lane, can be paused and finished on
its own, and pauses for its own temperature only; all lanes share one identity, one submit
thread and spool. Two "GPUs" here are two fake computers under CUDA names: the lanes, the
controls and the coordinator are the ones production runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from allmende.client.connection import CoordinatorClient
from allmende.client.engine import events as ev
from allmende.client.engine.devices import check_devices, parse_devices
from allmende.client.engine.spool import Spool
from allmende.client.probes import FakeProbe, GpuSample, HardwareSample
from allmende.client.settings import load_settings
from allmende.coordinator.app import RunningCoordinator
from allmende.protocol.errors import InvalidArgument
from tests.engine.helpers import Running, SlowComputer, start
from tests.engine.test_controls import QUIET, create, make_config

TWO = "cuda:0,cuda:1"


def two_computers(delay_s: float = 0.02) -> dict[str, SlowComputer]:
    computers = {}
    for name in ("cuda:0", "cuda:1"):
        computer = SlowComputer(delay_s=delay_s)
        computer.device = name
        computers[name] = computer
    return computers


def start_two(
    coordinator: RunningCoordinator,
    tmp_path: Path,
    delay_s: float = 0.02,
    probe: FakeProbe | None = None,
    **config: object,
) -> tuple[Running, dict[str, SlowComputer]]:
    """An engine on two fake devices (cuda:0, cuda:1) against the real coordinator."""
    computers = two_computers(delay_s)
    run = start(
        make_config(coordinator, tmp_path / "v", device=TWO, **config),
        None,
        computers=computers,
        probe=probe or FakeProbe([QUIET]),
    )
    return run, computers


def gpus(first_c: float, second_c: float) -> HardwareSample:
    return HardwareSample(
        at=0,
        cpu_count=4,
        cpu_percent=5,
        cpu_ours_percent=1,
        gpus=(
            GpuSample(0, "Fake A", temperature_c=first_c),
            GpuSample(1, "Fake B", temperature_c=second_c),
        ),
    )


def test_device_lists_parse_and_bad_ones_name_the_field() -> None:
    assert parse_devices("cpu") == ["cpu"]
    assert parse_devices("auto") == ["auto"]
    assert parse_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    two_gpus = FakeProbe(
        device_choices=(("cpu", "CPU"), ("cuda:0", "GPU 0: A"), ("cuda:1", "GPU 1: B"))
    )
    assert parse_devices("all", two_gpus) == ["cuda:0", "cuda:1"]
    assert parse_devices("all", FakeProbe()) == ["cpu"]  # no GPU: the CPU still computes
    for bad in ("cuda:0,cuda:0", "cuda,cuda:0", "auto,cpu", "cuda:0,,cuda:1", "gpu"):
        assert check_devices(bad) is not None, bad
        with pytest.raises(InvalidArgument) as caught:
            parse_devices(bad)
        assert "device" in caught.value.message


def test_the_device_flag_takes_a_list_and_refuses_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "volunteer.toml"
    assert load_settings(path, {}, {"device": TWO}).settings.device == TWO
    assert load_settings(path, {"ALLMENDE_DEVICE": "all"}).settings.device == "all"
    with pytest.raises(InvalidArgument) as caught:
        load_settings(path, {}, {"device": "cuda:1,cuda:1"})
    assert "--device" in caught.value.message and "each device once" in caught.value.message


def test_two_devices_compute_on_their_own_lanes_with_one_identity(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    create(admin, units=8, per_unit=8)
    run, computers = start_two(coordinator, tmp_path, exit_when_idle=True)
    stopped = run.finish()
    assert stopped.exit_code == 0 and stopped.units == 8, stopped
    assert run.engine.devices == ["cuda:0", "cuda:1"]
    assert computers["cuda:0"].units and computers["cuda:1"].units  # both lanes computed
    computed = run.of(ev.UnitComputed)
    by_device = {e.device for e in computed}  # type: ignore[attr-defined]
    assert by_device == {"cuda:0", "cuda:1"}
    assert len(computers["cuda:0"].units) + len(computers["cuda:1"].units) == 8
    submitted = run.of(ev.ResultSubmitted)
    assert len(submitted) == 8 and all(e.status == "accepted" for e in submitted)  # type: ignore[attr-defined]
    # One identity: a single registration, and every result went through the one spool.
    assert len(run.of(ev.Connected)) == 1
    assert Spool(tmp_path / "v" / "spool", coordinator.coordinator.key.fingerprint).count() == 0
    ended = {e.device: e.reason for e in run.of(ev.DeviceStopped)}  # type: ignore[attr-defined]
    assert ended == {"cuda:0": "no work left", "cuda:1": "no work left"}
    # Headless lines name the device.
    assert "device=cuda:1" in next(e for e in computed if e.device == "cuda:1").as_line()  # type: ignore[attr-defined]


def test_one_device_pauses_and_resumes_while_the_other_computes(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    create(admin, units=40, per_unit=16)
    run, computers = start_two(coordinator, tmp_path, delay_s=0.03)
    run.wait_for(ev.UnitProgress, where=lambda e: e.device == "cuda:0")  # type: ignore[attr-defined]
    run.engine.pause("cuda:0")
    paused = run.wait_for(ev.Paused)
    assert (paused.device, paused.reason) == ("cuda:0", "paused by you")  # type: ignore[attr-defined]
    assert run.engine.device_state("cuda:0") == "paused: paused by you"
    assert run.engine.device_state("cuda:1") == "running"
    before = len(computers["cuda:1"].units)
    held = len(computers["cuda:0"].units)
    run.wait_for(
        ev.UnitComputed,
        where=lambda e: e.device == "cuda:1" and before < len(computers["cuda:1"].units) - 1,
    )  # type: ignore[attr-defined]
    assert len(computers["cuda:0"].units) == held  # the paused lane started nothing new
    assert not [e for e in run.of(ev.Paused) if e.device == "cuda:1"]  # type: ignore[attr-defined]
    run.engine.resume("cuda:0")
    resumed = run.wait_for(ev.Resumed)
    assert resumed.device == "cuda:0"  # type: ignore[attr-defined]
    # The lane goes on: its held unit (or a new one) is computed after the resume.
    run.wait_for(
        ev.UnitComputed,
        where=lambda e: e.device == "cuda:0" and run.events.index(e) > run.events.index(resumed),  # type: ignore[attr-defined]
    )
    with pytest.raises(InvalidArgument):
        run.engine.pause("cuda:7")  # not a running device: a clear error, nothing paused
    assert run.engine.device_state("cuda:1") == "running"
    run.engine.stop()
    assert run.finish().exit_code == 0


def test_finishing_one_device_leaves_the_other_computing(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    create(admin, units=40, per_unit=8)
    run, computers = start_two(coordinator, tmp_path, delay_s=0.03)
    run.wait_for(ev.UnitProgress, where=lambda e: e.device == "cuda:1")  # type: ignore[attr-defined]
    run.engine.stop("cuda:1")
    stopping = run.wait_for(ev.Stopping)
    assert stopping.device == "cuda:1"  # type: ignore[attr-defined]
    done = run.wait_for(ev.DeviceStopped)
    assert (done.device, done.reason) == ("cuda:1", "finished")  # type: ignore[attr-defined]
    assert run.engine.device_state("cuda:1") == "stopped: finished"
    # Its unit was finished and sent, not handed back.
    released = [e for e in run.of(ev.UnitReleased) if e.device == "cuda:1" and e.done]  # type: ignore[attr-defined]
    assert not released
    after = len(computers["cuda:0"].units)
    run.wait_for(
        ev.UnitComputed,
        where=lambda e: e.device == "cuda:0" and len(computers["cuda:0"].units) > after + 1,
    )  # type: ignore[attr-defined]
    assert run.thread.is_alive()
    run.engine.stop()
    stopped = run.finish()
    assert stopped.exit_code == 0 and stopped.reason == "stopped"


def test_a_hot_gpu_pauses_its_own_lane_only(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    create(admin, units=30, per_unit=8)
    probe = FakeProbe([gpus(first_c=60, second_c=60)])
    run, computers = start_two(coordinator, tmp_path, probe=probe, max_gpu_temp_c=80)
    run.wait_for(ev.UnitComputed, where=lambda e: e.device == "cuda:1")  # type: ignore[attr-defined]
    probe.push(gpus(first_c=60, second_c=90))
    paused = run.wait_for(ev.Paused)
    assert paused.device == "cuda:1" and "GPU 1 at 90 °C" in paused.reason  # type: ignore[attr-defined]
    held = len(computers["cuda:1"].units)
    after = len(computers["cuda:0"].units)
    run.wait_for(
        ev.UnitComputed,
        where=lambda e: e.device == "cuda:0" and len(computers["cuda:0"].units) > after + 1,
    )  # type: ignore[attr-defined]
    assert len(computers["cuda:1"].units) == held
    assert not [e for e in run.of(ev.Paused) if e.device == "cuda:0"]  # type: ignore[attr-defined]
    probe.push(gpus(first_c=60, second_c=70))  # below 80 - 5: it resumes
    assert run.wait_for(ev.Resumed).device == "cuda:1"  # type: ignore[attr-defined]
    run.engine.stop()
    assert run.finish().exit_code == 0


def test_one_device_reads_as_before() -> None:
    line = ev.UnitComputed("u1", 8, 0.5, 16.0).as_line()
    assert "device" not in line and "device" not in ev.Paused("paused by you").as_dict()


def test_all_with_one_gpu_is_one_device_judged_by_its_own_temperature(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    create(admin, units=4, per_unit=8)
    hot = HardwareSample(at=0, cpu_count=4, gpus=(GpuSample(0, "Fake A", temperature_c=95),))
    probe = FakeProbe([hot], device_choices=(("cpu", "CPU"), ("cuda:0", "GPU 0: Fake A")))
    run = start(
        make_config(coordinator, tmp_path / "v", device="all", max_gpu_temp_c=80),
        SlowComputer(),
        probe=probe,
    )
    paused = run.wait_for(ev.Paused)
    assert run.engine.devices == ["cuda:0"]
    assert "GPU 0 at 95 °C" in paused.reason  # type: ignore[attr-defined]
    assert paused.device == "" and "device" not in paused.as_line()  # type: ignore[attr-defined]
    run.engine.quit()
    assert run.finish().exit_code == 0
