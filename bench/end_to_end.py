"""End-to-end throughput: items/s through a coordinator and one volunteer, divided by the
raw model's throughput on the same texts, model, device, batch size and threads.

    python bench/end_to_end.py [--n 4096] [--unit-size 256] [--device cpu] [--rounds 3]

The coordinator is `allmende coordinator serve` in its own process (SQLite, real gRPC on a
free port), as deployed; the volunteer is the real engine on this process's main thread, as
`allmende volunteer` runs it. The clock runs from the volunteer's start until the job is
complete (validated and written as Parquet). Redundancy is 1, since one volunteer cannot be
its own replica; the raw baseline embeds the same texts once, in one call. Both share the
machine's cores, as they would on a volunteer's own coordinator. Goal on CPU: >= 0.85.
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corpus import ROOT, stsb_texts

GOAL = 0.85


def _start_coordinator(data: Path) -> tuple[subprocess.Popen[str], str, str]:
    env_path = ":".join(str(ROOT / d) for d in ("client", "coordinator", "protos"))
    command = [sys.executable, "-c", f"import sys; sys.path[:0] = {env_path.split(':')!r}; "
               "from allmende.cli.main import main; sys.exit(main(sys.argv[1:]))"]
    init = subprocess.run([*command, "coordinator", "init", "--data", str(data)], check=True,
                          capture_output=True, text=True)
    fingerprint = init.stdout.strip().splitlines()[-1]
    server = subprocess.Popen(
        # --trust-local: the one volunteer here is the operator's own; on a fresh coordinator
        # without gold rows nobody else could vouch for its units.
        [*command, "coordinator", "serve", "--data", str(data), "--listen", "127.0.0.1:0",
         "--trust-local"],
        stdout=subprocess.PIPE, text=True,
    )
    assert server.stdout is not None
    match = re.search(r"listening on (\S+)", server.stdout.readline())
    if not match:
        server.kill()
        raise SystemExit("coordinator did not start")
    return server, match.group(1), fingerprint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--unit-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from allmende.api.client import ApiClient
    from allmende.client.engine import EngineConfig, VolunteerEngine
    from allmende.client.tasks.computer import TaskComputer
    from allmende.protocol.models import DEFAULT_MODEL, ModelRegistry
    from allmende.v1 import allmende_pb2 as pb

    texts = stsb_texts(args.n)
    computer = TaskComputer(ModelRegistry(), args.device, args.batch_size)
    embedder = computer.embedder(DEFAULT_MODEL)
    embedder.embed(texts[:256])  # warm up

    raw_rates, e2e_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "coordinator"
        server, address, fingerprint = _start_coordinator(data)
        token = (data / "admin.token").read_text().strip()
        try:
            for round_no in range(args.rounds):
                started = time.perf_counter()
                embedder.embed(texts)
                raw_rates.append(len(texts) / (time.perf_counter() - started))

                items = [pb.InputItem(id=str(i), text=t) for i, t in enumerate(texts)]
                spec = pb.JobSpec(kind="embed-text", model=DEFAULT_MODEL, redundancy=1,
                                  unit_size=args.unit_size)
                with ApiClient(address, token) as admin:
                    job_id = admin.create_job(
                        [pb.CreateJobRequest(spec=spec), pb.CreateJobRequest(items=items)]
                    ).job_id
                config = EngineConfig(
                    coordinator=address, fingerprint=fingerprint,
                    home=Path(tmp) / f"volunteer-{round_no}", device=args.device,
                    batch_size=args.batch_size, exit_when_idle=True,
                )
                engine = VolunteerEngine(config, computer=computer)
                started = time.perf_counter()
                code = engine.run()  # returns once every result is submitted
                if code != 0:
                    raise SystemExit(f"volunteer exited {code}")
                with ApiClient(address) as client:  # then validation and Parquet
                    while client.get_job(job_id).state != "complete":
                        time.sleep(0.005)
                elapsed = time.perf_counter() - started
                e2e_rates.append(len(texts) / elapsed)
        finally:
            server.terminate()
            server.wait(timeout=30)

    raw, e2e = max(raw_rates), max(e2e_rates)
    ratio = e2e / raw
    print(f"texts: {len(texts)} unique STS-B sentences, unit size {args.unit_size}, "
          f"batch size {args.batch_size}, device {args.device}, best of {args.rounds}")
    print(f"{'raw model (TextEmbedder.embed, one call)':<44} {raw:8.1f} items/s")
    print(f"{'coordinator process + one volunteer, gRPC':<44} {e2e:8.1f} items/s")
    verdict = "PASS" if ratio >= GOAL else "FAIL"
    print(f"ratio end-to-end / raw = {ratio:.3f}   (goal >= {GOAL} on CPU)  {verdict}")


if __name__ == "__main__":
    main()
