"""The end-to-end half of bench/clip_filter.py: a coordinator in a child process (as it
runs in deployment, where it never shares a Python interpreter, and so its GIL, with a
volunteer) and the real volunteer engine in this one.

The child is started with `spawn` and serves `serve(..., registry=...)` (a locally
registered model cannot be named to `coordinator serve` yet); it reports its own CPU time
for the job, which is the coordinator's share of the machine.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EndToEnd:
    rate: float  # images/s, first lease to the job complete
    volunteer_cpu: float  # this process's CPU seconds per image meanwhile
    coordinator_cpu: float  # the coordinator process's CPU seconds per image meanwhile
    unit_bytes: int  # the units as sent to the volunteer
    result_bytes: int  # the results as received and stored


def _serve(root: str, spec: Any, conn: Connection) -> None:
    from allmende.coordinator.app import serve
    from allmende.protocol.models import ModelRegistry

    registry = ModelRegistry(extra=(spec,))
    with serve(Path(root), "127.0.0.1:0", drain_s=0.2, registry=registry) as running:
        conn.send((running.address, running.coordinator.key.fingerprint))
        conn.recv()  # the job was created: count from here
        cpu = time.process_time()
        job_id = conn.recv()  # the job is complete
        cpu = time.process_time() - cpu
        units = list(running.coordinator.store.dataset_units(job_id))
        blobs = sum(len(u.blob) for u in units)
        conn.send((cpu, blobs, sum(len(u.payload) for u in units)))


def end_to_end(
    tmp: Path,
    spec: Any,
    computer: Any,
    rows: list[tuple[str, bytes, str]],
    unit_size: int,
    batch_size: int,
) -> EndToEnd:
    from allmende.api.client import ApiClient
    from allmende.client.engine import EngineConfig, VolunteerEngine
    from allmende.coordinator.home import CoordinatorHome
    from allmende.protocol.models import ModelRegistry
    from allmende.v1 import allmende_pb2 as pb

    home = CoordinatorHome(tmp / "coordinator")
    home.init()
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(str(home.root), spec, theirs), daemon=True
    )
    child.start()
    try:
        address, fingerprint = ours.recv()
        items = [
            pb.InputItem(id=i, text=caption, image=image, line=n + 1)
            for n, (i, image, caption) in enumerate(rows)
        ]
        job = pb.JobSpec(
            kind="clip-filter",
            model=spec.name,
            redundancy=1,
            unit_size=unit_size,
            gold_fraction=0.0,
        )
        with ApiClient(address, home.load_token()) as admin:
            job_id = admin.create_job(
                [pb.CreateJobRequest(spec=job), pb.CreateJobRequest(items=items)]
            ).job_id
        config = EngineConfig(
            coordinator=address,
            fingerprint=fingerprint,
            home=tmp / "volunteer",
            device="cpu",
            batch_size=batch_size,
            exit_when_idle=True,
        )
        registry = ModelRegistry(extra=(spec,))
        engine = VolunteerEngine(config, computer=computer, registry=registry)
        computer.seconds = 0.0
        ours.send("start")
        started, cpu = time.perf_counter(), time.process_time()
        if engine.run() != 0:
            raise SystemExit("volunteer failed")
        with ApiClient(address) as client:
            while client.get_job(job_id).state != "complete":
                time.sleep(0.005)
        rate = len(rows) / (time.perf_counter() - started)
        cpu = (time.process_time() - cpu) / len(rows)
        ours.send(job_id)
        coordinator_cpu, unit_bytes, result_bytes = ours.recv()
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.terminate()
    return EndToEnd(rate, cpu, coordinator_cpu / len(rows), unit_bytes, result_bytes)
