"""End-to-end throughput: items/s through a coordinator and one volunteer, divided by the
raw model's throughput on the same texts, model, device, batch size and threads.

    python bench/end_to_end.py [--n 4096] [--unit-size 256] [--device cpu]

The coordinator runs in-process on port 0 over real gRPC and SQLite; the volunteer is the
real engine. The clock runs from the volunteer's start until the job is complete (validated
and assimilated into Parquet). Redundancy is 1, since one volunteer cannot be its own
replica; the raw baseline embeds the same texts once. Goal on CPU: ratio >= 0.85.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from pathlib import Path

from corpus import stsb_texts

GOAL = 0.85


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--unit-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from allmende.client.connection import CoordinatorClient
    from allmende.client.engine import EngineConfig, VolunteerEngine
    from allmende.client.tasks.computer import TaskComputer
    from allmende.coordinator.home import CoordinatorHome
    from allmende.coordinator.transport.server import serve
    from allmende.protocol.models import DEFAULT_MODEL, ModelRegistry
    from allmende.v1 import allmende_pb2 as pb

    texts = stsb_texts(args.n)
    computer = TaskComputer(ModelRegistry(), args.device, args.batch_size)
    embedder = computer.embedder(DEFAULT_MODEL)
    embedder.embed(texts[:256])  # warm up

    raw_rates, e2e_rates = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        embedder.embed(texts)
        raw_rates.append(len(texts) / (time.perf_counter() - started))

        with tempfile.TemporaryDirectory() as tmp:
            home = CoordinatorHome(Path(tmp) / "coordinator")
            home.init()
            with serve(home.root, "127.0.0.1:0") as running:
                items = [pb.InputItem(id=str(i), text=t) for i, t in enumerate(texts)]
                spec = pb.JobSpec(kind="embed-text", model=DEFAULT_MODEL, redundancy=1,
                                  unit_size=args.unit_size)
                with CoordinatorClient(running.address, home.load_token()) as admin:
                    job_id = admin.create_job(
                        [pb.CreateJobRequest(spec=spec), pb.CreateJobRequest(items=items)]
                    ).job_id
                    config = EngineConfig(
                        coordinator=running.address,
                        fingerprint=running.coordinator.key.fingerprint,
                        home=Path(tmp) / "volunteer", device=args.device,
                        batch_size=args.batch_size, exit_when_idle=True,
                    )
                    engine = VolunteerEngine(config, computer=computer)
                    started = time.perf_counter()
                    worker = threading.Thread(target=engine.run)
                    worker.start()
                    while admin.get_job(job_id).state != "complete":
                        time.sleep(0.01)
                    elapsed = time.perf_counter() - started
                    worker.join()
        e2e_rates.append(len(texts) / elapsed)

    raw, e2e = max(raw_rates), max(e2e_rates)
    ratio = e2e / raw
    print(f"texts: {len(texts)} unique STS-B sentences, unit size {args.unit_size}, "
          f"batch size {args.batch_size}, device {args.device}, best of {args.rounds}")
    print(f"{'raw model (TextEmbedder.embed)':<40} {raw:8.1f} items/s")
    print(f"{'coordinator + one volunteer, gRPC':<40} {e2e:8.1f} items/s")
    verdict = "PASS" if ratio >= GOAL else "FAIL"
    print(f"ratio end-to-end / raw = {ratio:.3f}   (goal >= {GOAL} on CPU)  {verdict}")


if __name__ == "__main__":
    main()
