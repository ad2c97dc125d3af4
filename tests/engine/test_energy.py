"""Energy: the GPU's own counter where it has one, power times time (marked estimated)
elsewhere, reported per 1,000 items with each result and totalled per job in the signed
manifest. Fake sensor readings at the probe boundary; a real coordinator on port 0."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from allmende.client.connection import CoordinatorClient
from allmende.client.engine.energy import EnergyMeter, PerThousand
from allmende.client.probes import FakeProbe, GpuSample, HardwareSample
from allmende.coordinator.app import RunningCoordinator
from allmende.coordinator.domain.assimilate import job_energy
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds.columns import Layout
from allmende.protocol.wire import ResultEnvelope, decode_envelope, encode_envelope
from tests.conftest import job_requests
from tests.engine.helpers import SlowComputer, start
from tests.engine.test_controls import make_config
from tests.integration.test_end_to_end import wait_for


def gpu(at: float, energy_mj: int | None, power_w: float | None = 250.0) -> HardwareSample:
    board = GpuSample(0, "G", power_w=power_w, energy_mj=energy_mj)
    return HardwareSample(at=at, cpu_count=8, cpu_ours_percent=12.5, gpus=(board,))


def test_the_gpu_energy_counter_is_measured_and_power_times_time_is_estimated() -> None:
    counter = EnergyMeter("cuda:0")
    counter.add(gpu(0, 1_000_000), computing=True)
    counter.add(gpu(2, 1_000_000 + 3_600_000), computing=True)  # 3,600 J: 1 Wh
    counter.add(gpu(4, 9_000_000), computing=False)  # idle: not ours
    assert counter.wh == pytest.approx(1.0) and counter.measured is True

    power = EnergyMeter("cuda:0")
    power.add(gpu(0, None), computing=True)
    power.add(gpu(36, None), computing=True)  # 250 W for 36 s: 2.5 Wh
    assert power.wh == pytest.approx(2.5) and power.measured is False
    assert power.sources == {"GPU power"}

    cpu = EnergyMeter("cpu")
    cpu.add(gpu(0, 5), computing=True)
    cpu.add(gpu(3600, 10), computing=True)  # one busy thread at 7.5 W for an hour
    assert cpu.wh == pytest.approx(7.5) and cpu.sources == {"CPU time"}
    assert EnergyMeter().measured is None  # nothing counted yet

    per = PerThousand(power)
    assert per.unit_done(500) == (pytest.approx(5.0), True)  # 2.5 Wh over 500 items
    assert per.unit_done(100) == (pytest.approx(5.0), True)  # no new samples: last figure


def envelope(**energy: object) -> ResultEnvelope:
    return ResultEnvelope(
        unit_id="u",
        lease_id="l",
        volunteer_id="v",
        rows=500,
        columns=(Layout("embedding", "float16", 4),),
        codec="shuffle+zstd",
        payload_sha256=hashlib.sha256(b"").digest(),
        unit_sha256=b"",
        model_sha256="",
        device="cuda:0",
        compute_ms=1,
        created_ms=1,
        **energy,  # type: ignore[arg-type]
    )


def test_the_envelope_carries_energy_and_refuses_nonsense() -> None:
    sent = envelope(energy_wh_per_1000=4.0, energy_estimated=True)
    assert decode_envelope(encode_envelope(sent)) == sent
    for bad in (-1.0, float("nan"), float("inf"), 1e9):
        with pytest.raises(InvalidArgument, match="energy_wh_per_1000"):
            decode_envelope(encode_envelope(envelope(energy_wh_per_1000=bad)))
    total = job_energy(
        [
            encode_envelope(sent),
            encode_envelope(envelope(energy_wh_per_1000=2.0)),
            encode_envelope(envelope()),  # an older volunteer: no figure
        ],
        rows=500,
    )
    assert total == {
        "wh": 3.0,
        "wh_per_1000_rows": 6.0,
        "results": 3,
        "results_reporting": 2,
        "estimated": True,
    }


def test_results_report_energy_and_the_manifest_totals_it(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    texts = [f"sentence {i} about energy" for i in range(40)]
    job = admin.create_job(job_requests(texts, redundancy=1, unit_size=20, gold_fraction=0.0))
    busy = HardwareSample(at=0, cpu_count=4, cpu_percent=60, cpu_ours_percent=50)
    run = start(
        make_config(coordinator, tmp_path / "v", exit_when_idle=True, sample_interval_s=0.01),
        SlowComputer(delay_s=0.05),
        probe=FakeProbe([busy, replace(busy)]),
    )
    assert run.finish().units == 2
    status = wait_for(admin, job.job_id)
    assert status.state == "complete"
    manifest = json.loads(admin.manifest(job.job_id).manifest)
    energy = manifest["energy"]
    assert energy["results"] == 2 and energy["results_reporting"] >= 1
    assert energy["estimated"] is True  # CPU time: an estimate, and said to be
    assert energy["wh"] > 0 and energy["wh_per_1000_rows"] > 0
