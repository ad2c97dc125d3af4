"""The pause rules: schedule windows, battery, GPU temperature and idleness, with hysteresis."""

from __future__ import annotations

from dataclasses import replace
from datetime import time

import pytest

from allmende.client.engine.policy import Limits, Policy, parse_schedule
from allmende.client.probes import GpuSample, HardwareSample
from allmende.protocol.errors import InvalidArgument

QUIET = HardwareSample(
    at=0,
    cpu_count=8,
    cpu_percent=5,
    cpu_ours_percent=2,
    gpus=(GpuSample(0, "Test GPU", temperature_c=60.0),),
)


def test_schedule_windows_including_over_midnight() -> None:
    [night] = parse_schedule("22:00-07:00")
    assert night.contains(time(23, 30)) and night.contains(time(6, 59))
    assert not night.contains(time(7, 0)) and not night.contains(time(12, 0))
    day, evening = parse_schedule("09:00-12:00, 18:30-24:00")
    assert day.contains(time(9, 0)) and not day.contains(time(12, 0))
    assert evening.contains(time(23, 59)) and not evening.contains(time(18, 0))
    assert parse_schedule("") == ()


@pytest.mark.parametrize("bad", ["9-17", "25:00-07:00", "09:00-09:60", "tomorrow"])
def test_a_bad_schedule_names_the_key_and_the_format(bad: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse_schedule(bad)
    assert error.value.field == "schedule"
    assert "22:00-07:00" in error.value.message or "00:00 to 24:00" in error.value.message


def test_outside_the_schedule_pauses_with_the_window_named() -> None:
    policy = Policy(Limits(schedule="22:00-07:00"))
    assert policy.check(QUIET, time(23, 0)) is None
    paused = "outside the schedule (22:00-07:00); resuming at 22:00"
    assert policy.check(QUIET, time(12, 0)) == paused
    assert policy.check(None, time(12, 0)) == paused
    # with several windows, the one that opens next
    two = Policy(Limits(schedule="03:00-04:00, 12:30-13:00"))
    assert two.check(QUIET, time(4, 10)) == (
        "outside the schedule (03:00-04:00, 12:30-13:00); resuming at 12:30"
    )
    assert two.check(QUIET, time(20, 0)) is not None
    assert "resuming at 03:00" in (two.check(QUIET, time(20, 0)) or "")


def test_cpu_temperature_pauses_above_the_limit_and_resumes_5_degrees_below() -> None:
    policy = Policy(Limits(max_cpu_temp_c=85))

    def at(celsius: float | None) -> str | None:
        return policy.check(replace(QUIET, cpu_temperature_c=celsius), time(12))

    assert at(84) is None
    assert at(91) == "CPU at 91 °C, above the 85 °C limit; resuming below 80 °C"
    assert at(82) is not None  # hysteresis
    assert at(79) is None
    assert at(None) is None  # no sensor: the rule cannot hold work back
    assert Policy(Limits()).check(replace(QUIET, cpu_temperature_c=99), time(12)) is None


def test_battery_pauses_only_when_asked_to() -> None:
    unplugged = replace(QUIET, on_battery=True, battery_percent=50)
    assert Policy(Limits()).check(unplugged, time(12)) is None
    assert Policy(Limits(pause_on_battery=True)).check(unplugged, time(12)) == "on battery"
    assert Policy(Limits(pause_on_battery=True)).check(QUIET, time(12)) is None


def test_gpu_temperature_pauses_above_the_limit_and_resumes_5_degrees_below() -> None:
    policy = Policy(Limits(device="cuda:0", max_gpu_temp_c=80))

    def at(celsius: float) -> str | None:
        sample = replace(QUIET, gpus=(GpuSample(0, "Test GPU", temperature_c=celsius),))
        return policy.check(sample, time(12))

    assert at(79) is None
    reason = at(83)
    assert reason is not None and "GPU 0 at 83 °C" in reason and "80 °C" in reason
    assert at(78) is not None  # still too warm: hysteresis
    assert at(74) is None
    assert (
        Policy(Limits(device="cpu", max_gpu_temp_c=80)).check(
            replace(QUIET, gpus=(GpuSample(0, "x", temperature_c=99.0),)), time(12)
        )
        is None
    )


def test_idle_only_pauses_while_other_programs_use_the_cpu() -> None:
    policy = Policy(Limits(idle_only=True, idle_cpu_percent=25))

    def others(percent: float) -> str | None:
        return policy.check(replace(QUIET, cpu_percent=percent + 50, cpu_ours_percent=50), time(12))

    assert others(10) is None  # our own 50% does not count
    assert others(40) == "machine in use (other programs at 40% CPU)"
    assert others(22) is not None  # hysteresis
    assert others(15) is None
