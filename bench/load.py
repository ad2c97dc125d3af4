"""Load benchmark: simulated volunteers against real coordinators over real gRPC.

    python bench/load.py [--volunteers 10,100,1000] [--backends sqlite,pg1,pg2]
                         [--seconds 10] [--warmup 3] [--compute-ms 0,10000] [--batch 1,8]
                         [--unit-size 8] [--redundancy 2] [--pg-url URL]

Coordinators are `allmende coordinator serve` processes, as deployed: one on SQLite (the
embedded default), then one and two on a PostgreSQL database (a throwaway cluster this
script starts with initdb/pg_ctl, unless --pg-url names one). Volunteers are coroutines in a
separate load process (grpc.aio); with two coordinators, half talk to each. Every row starts,
once the machine is quiet, from a new database (or data folder), new coordinator processes
(with --pg-url, the rows share that database) and a job large enough that its volunteers do
not run out of work within the row (a row that does is marked OUT OF WORK and left out of
the verdicts: it measured the job's end and its assimilation, not the backend).

A simulated volunteer does everything a real one does except the model: it leases a unit,
"computes" a fake but valid result (a deterministic unit vector per text, so replicas agree
within tau), encodes it as the real client does (fp16, byte-shuffle, zstd), signs the result
envelope and every request with its own Ed25519 key, submits, and leases again. The
coordinator checks it all as in production: request signatures and replay, the envelope
signature, payload hash, shape and NaN, quorum (cosine per row), then stores it.

Two regimes per number of volunteers:
- compute 0 ms: each volunteer asks again the moment it has an answer, so the figures are
  the coordinator's capacity. Latency is then mostly queueing: with N requests always in
  flight, Little's law makes it N / throughput, whatever the code does. These rows run once
  per --batch value: volunteers that lease and submit one unit per call (batch 1), and fast
  ones that, like the real client on a GPU, lease several units per LeaseWork call
  (max_units) and send their results in one SubmitResults call.
- compute 10000 ms (uniform 5-15 s per unit): volunteers that each return a result every
  ~10 s, so 1000 of them offer 100 results/s, the rate of one BOINC server; the latency
  is then that of a coordinator under a realistic load rather than a queue. (A real
  volunteer embeds ~340 short texts/s on a CPU: 10 s is one 256-text unit on a slow one.)

units/s: units that reached quorum (validated), from the coordinator's own job counters,
over the measured window. results/s: results answered. Latencies are timed by the
volunteers around each call (so they include the client's own queueing); a batch call
carries several units.
Goals on the 2-core reference machine: >= 500 units/s on SQLite, lease p99 <= 50 ms at
1000 volunteers, and more throughput with two PostgreSQL replicas than with one.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from corpus import ROOT

sys.path.insert(0, str(ROOT))  # tests.postgres: the throwaway PostgreSQL cluster

VOLUNTEER = "/allmende.v1.VolunteerService/"
DIMS_CACHE: dict[str, tuple[bytes, int]] = {}


# ---------------------------------------------------------------------------- load process


class Stats:
    def __init__(self) -> None:
        self.recording = False
        self.lease_s: list[float] = []
        self.lease_at: list[float] = []  # when each timed lease started (perf_counter)
        self.submit_s: list[float] = []
        self.results = 0
        self.outcomes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.idle = 0


def _vector(text: str, dims: int) -> Any:
    import numpy as np

    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dims)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


class FakeCompute:
    """Valid results without a model: one unit vector per text, cached per text, so
    computing costs the load process little and the coordinator, not the load generator,
    is what is measured. (Each lease gets its own composition of a unit, rows in its own
    order with gold rows mixed in, so results cannot be cached per unit: that would be
    copying another replica's answer, which the coordinator refuses.)"""

    def __init__(self, redundancy: int) -> None:
        self.redundancy = redundancy
        self.vectors: dict[str, Any] = {}

    def result(self, unit: Any) -> Any:
        import numpy as np

        from allmende.protocol import codec

        rows = []
        for text in unit.texts:
            vector = self.vectors.get(text)
            if vector is None:
                vector = self.vectors[text] = _vector(text, unit.dims)
            rows.append(vector)
        return codec.encode(np.stack(rows), unit.result_dtype)


def _sealed(key: Any, volunteer_id: str, lease: Any, compute: FakeCompute, compute_s: float) -> Any:
    """A result for one lease, as the real client seals it."""
    from allmende.protocol.kinds.columns import Layout
    from allmende.protocol.wire import CODEC, ResultEnvelope, decode_unit, sign_envelope
    from allmende.v1 import allmende_pb2 as pb

    unit = decode_unit(lease.unit.unit)
    encoded = compute.result(unit)
    envelope = ResultEnvelope(
        unit_id=unit.unit_id,
        lease_id=lease.lease_id,
        volunteer_id=volunteer_id,
        rows=encoded.rows,
        columns=(Layout("embedding", encoded.dtype, encoded.dims),),
        codec=CODEC,
        payload_sha256=hashlib.sha256(encoded.payload).digest(),
        unit_sha256=hashlib.sha256(lease.unit.unit).digest(),
        model_sha256=unit.model_sha256,
        device="fake",
        compute_ms=int(compute_s * 1000),
        created_ms=int(time.time() * 1000),
    )
    blob, signature = sign_envelope(key, envelope)
    return pb.SubmitResultRequest(envelope=blob, signature=signature, payload=encoded.payload)


async def _volunteer(
    index: int,
    stub: Any,
    key: Any,
    volunteer_id: str,
    compute: FakeCompute,
    compute_s: float,
    batch: int,
    stats: Stats,
    stop: asyncio.Event,
) -> None:
    """Lease `batch` units per call, compute them, send their results in one call (or, with
    a batch of 1, one LeaseWork and one SubmitResult per unit)."""
    import grpc

    from allmende.protocol.requests import sign_request
    from allmende.v1 import allmende_pb2 as pb

    rng = random.Random(index)
    await asyncio.sleep(rng.uniform(0, max(compute_s, 0.2)))  # spread the first requests
    while not stop.is_set():
        try:
            request = pb.LeaseWorkRequest(volunteer_id=volunteer_id, max_units=batch)
            metadata = sign_request(key, f"{VOLUNTEER}LeaseWork", request)
            started = time.perf_counter()
            response = await stub.LeaseWork(request, metadata=metadata, timeout=120)
            if stats.recording:
                stats.lease_s.append(time.perf_counter() - started)
                stats.lease_at.append(started)
            if not response.HasField("lease"):
                stats.idle += 1
                await asyncio.sleep(max(response.retry_after_ms, 100) / 1000)
                continue
            leases = [response.lease, *response.more_leases]
            results = [_sealed(key, volunteer_id, lease, compute, compute_s) for lease in leases]
            if compute_s:
                await asyncio.sleep(rng.uniform(0.5, 1.5) * compute_s * len(leases))
            started = time.perf_counter()
            if batch == 1:
                metadata = sign_request(key, f"{VOLUNTEER}SubmitResult", results[0])
                outcomes = [await stub.SubmitResult(results[0], metadata=metadata, timeout=120)]
            else:
                submit = pb.SubmitResultsRequest(volunteer_id=volunteer_id, results=results)
                metadata = sign_request(key, f"{VOLUNTEER}SubmitResults", submit)
                answer = await stub.SubmitResults(submit, metadata=metadata, timeout=120)
                outcomes = list(answer.results)
            if stats.recording:
                stats.submit_s.append(time.perf_counter() - started)
                stats.results += len(outcomes)
                stats.outcomes.update(o.code or o.status for o in outcomes)
        except grpc.aio.AioRpcError as exc:
            stats.errors[exc.code().name] += 1
            await asyncio.sleep(0.2)


async def _accepted(job_stub: Any) -> tuple[int, bool]:
    """Units validated so far, over every job, and whether every job is validated (the
    volunteers then ran out of work and the row measures nothing)."""
    from allmende.v1 import allmende_pb2 as pb

    response = await job_stub.ListJobs(pb.ListJobsRequest(), timeout=120)
    accepted = sum(job.units_accepted for job in response.jobs)
    return accepted, all(job.units_accepted >= job.units_total for job in response.jobs)


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    import grpc

    from allmende.protocol.limits import MAX_MESSAGE_BYTES
    from allmende.protocol.signing import CTX_REGISTER, SigningKey
    from allmende.v1 import allmende_pb2 as pb
    from allmende.v1 import allmende_pb2_grpc as rpc

    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    channels = [grpc.aio.insecure_channel(a, options=options) for a in args.addresses]
    stubs = [rpc.VolunteerServiceStub(c) for c in channels]
    job_stub = rpc.JobServiceStub(channels[0])
    keys = [SigningKey.generate() for _ in range(args.volunteers)]
    gate = asyncio.Semaphore(32)

    async def register(index: int) -> str:
        key = keys[index]
        async with gate:
            response = await stubs[index % len(stubs)].RegisterVolunteer(
                pb.RegisterVolunteerRequest(
                    public_key=key.public_key,
                    display_name=f"sim-{index}",
                    client_version="bench",
                    hardware="simulated",
                    signature=key.sign(CTX_REGISTER, key.public_key),
                ),
                timeout=120,
            )
        return str(response.volunteer_id)

    ids = await asyncio.gather(*(register(i) for i in range(args.volunteers)))
    stats = Stats()
    stop = asyncio.Event()
    compute = FakeCompute(args.redundancy)
    tasks = [
        asyncio.create_task(
            _volunteer(
                i,
                stubs[i % len(stubs)],
                keys[i],
                ids[i],
                compute,
                args.compute_ms / 1000,
                args.batch,
                stats,
                stop,
            )
        )
        for i in range(args.volunteers)
    ]
    # Paced volunteers reach a steady rate once each has made its first request.
    await asyncio.sleep(args.warmup + args.compute_ms / 1000)
    before, _ = await _accepted(job_stub)
    started = time.perf_counter()
    stats.recording = True
    await asyncio.sleep(args.seconds)
    stats.recording = False
    elapsed = time.perf_counter() - started
    after, drained = await _accepted(job_stub)
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close()

    def pct(values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    if os.environ.get("ALLMENDE_LOAD_TRACE"):  # every lease: start (s into the window), ms
        trace = [
            (at - started, s * 1000) for at, s in zip(stats.lease_at, stats.lease_s, strict=True)
        ]
        Path(os.environ["ALLMENDE_LOAD_TRACE"]).write_text(json.dumps(trace))
    return {
        "volunteers": args.volunteers,
        "seconds": elapsed,
        "units_per_s": (after - before) / elapsed,
        "results_per_s": stats.results / elapsed,
        "lease_p50_ms": pct(stats.lease_s, 0.50),
        "lease_p99_ms": pct(stats.lease_s, 0.99),
        "lease_mean_ms": statistics.fmean(stats.lease_s) * 1000 if stats.lease_s else 0.0,
        "submit_p50_ms": pct(stats.submit_s, 0.50),
        "submit_p99_ms": pct(stats.submit_s, 0.99),
        "outcomes": dict(stats.outcomes),
        "errors": dict(stats.errors),
        "idle_leases": stats.idle,
        "out_of_work": drained or stats.idle > 0,
    }


# ---------------------------------------------------------------------------- coordinators


ALLMENDE = [sys.executable, "-m", "allmende.cli"]


def _env() -> dict[str, str]:
    roots = [str(ROOT / d) for d in ("client", "coordinator", "protos")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*roots, os.environ.get("PYTHONPATH", "")])}


def start_coordinators(data: Path, db_url: str | None, count: int) -> list[subprocess.Popen[str]]:
    command = [*ALLMENDE, "coordinator", "init", "--data", str(data)]
    if db_url:
        command += ["--db", db_url]
    subprocess.run(command, check=True, capture_output=True, text=True, env=_env())
    servers = []
    for _ in range(count):
        command = [
            *ALLMENDE,
            "coordinator",
            "serve",
            "--data",
            str(data),
            "--listen",
            "127.0.0.1:0",
            "--drain-seconds",
            "0",
            # The simulated volunteers run here and nobody has a record or gold rows yet:
            # they are the operator's own (without it no unit would be accepted).
            "--trust-local",
        ]
        if db_url:
            command += ["--db", db_url]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=_env())
        servers.append(server)
    return servers


def addresses(servers: list[subprocess.Popen[str]]) -> list[str]:
    found = []
    for server in servers:
        assert server.stdout is not None
        match = re.search(r"listening on (\S+)", server.stdout.readline())
        if not match:
            raise SystemExit("a coordinator did not start")
        found.append(match.group(1))
    return found


def stop_coordinators(servers: list[subprocess.Popen[str]]) -> None:
    for server in servers:
        server.send_signal(signal.SIGTERM)
    for server in servers:
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def create_job(
    address: str, token: str, units: int, unit_size: int, redundancy: int, tag: str
) -> str:
    from allmende.api.client import ApiClient
    from allmende.v1 import allmende_pb2 as pb

    texts = [f"load {tag} sentence {i}" for i in range(units * unit_size)]
    spec = pb.JobSpec(
        kind="embed-text",
        model="all-MiniLM-L6-v2",
        redundancy=redundancy,
        unit_size=unit_size,
        lease_seconds=120,
        name=f"load {tag}",
    )

    def stream() -> Any:
        yield pb.CreateJobRequest(spec=spec, source_name="bench/load.py")
        for start in range(0, len(texts), 20_000):
            yield pb.CreateJobRequest(
                items=[
                    pb.InputItem(id=str(start + n), text=t)
                    for n, t in enumerate(texts[start : start + 20_000])
                ]
            )

    with ApiClient(address, admin_token=token) as admin:
        return str(admin.create_job(stream()).job_id)


def run_worker(
    addrs: list[str], volunteers: int, compute_ms: int, batch: int, args: argparse.Namespace
) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--addresses",
        ",".join(addrs),
        "--volunteers",
        str(volunteers),
        "--compute-ms",
        str(compute_ms),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--redundancy",
        str(args.redundancy),
        "--batch",
        str(batch),
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=args.seconds + args.warmup + 600,
    )
    if done.returncode != 0:
        raise SystemExit(f"load process failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# ---------------------------------------------------------------------------- driver


BACKENDS = {
    "sqlite": ("SQLite, 1 coordinator", None, 1),
    "pg1": ("PostgreSQL, 1 coordinator", "pg", 1),
    "pg2": ("PostgreSQL, 2 coordinators", "pg", 2),
}


def _busy_share(seconds: float) -> float:
    """The share of the machine's CPU time spent busy over `seconds` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def settle(limit_s: float = 60.0) -> None:
    """Wait (up to `limit_s`) for a quiet machine, so that a row does not compete with the
    tail of the one before: PostgreSQL's writer, checkpointer and autovacuum, a dropped
    database's files, the last coordinator still exiting."""
    if not Path("/proc/stat").exists():
        return
    deadline = time.monotonic() + limit_s
    while _busy_share(1.0) > 0.10 and time.monotonic() < deadline:
        pass


def run_row(
    args: argparse.Namespace,
    kind: str,
    replicas: int,
    cluster: Any,
    shape: tuple[int, int, int],
    name: str,
) -> dict[str, Any]:
    """One row: a new database (PostgreSQL) or data folder, its coordinators, a job."""
    compute_ms, batch, count = shape
    with tempfile.TemporaryDirectory(prefix="allmende-load-") as tmp:
        db_url = args.pg_url if kind == "pg" and args.pg_url else None
        if kind == "pg" and db_url is None:
            db_url = cluster.new_database(migrated=False)
        data = Path(tmp) / "coordinator"
        servers = start_coordinators(data, db_url, replicas)
        try:
            addrs = addresses(servers)
            token = (data / "admin.token").read_text().strip()
            job = f"{name}-{compute_ms}-{batch}-{count}"
            create_job(addrs[0], token, args.units, args.unit_size, args.redundancy, job)
            return run_worker(addrs, count, compute_ms, batch, args)
        finally:
            stop_coordinators(servers)
            if cluster is not None and db_url and not args.pg_url:
                cluster.drop_database(db_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volunteers", default="10,100,1000")
    parser.add_argument("--backends", default="sqlite,pg1,pg2")
    parser.add_argument(
        "--compute-ms", default="0,10000", help="mean compute time per unit; a run per value"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--unit-size", type=int, default=8)
    parser.add_argument("--redundancy", type=int, default=2)
    parser.add_argument(
        "--batch",
        default="1,8",
        help="units per LeaseWork/SubmitResults call for the capacity rows (compute 0 ms); "
        "paced volunteers take one unit at a time; a run per value",
    )
    parser.add_argument(
        "--units",
        type=int,
        default=20000,
        help="units of the job made per row: enough that no row runs out of work",
    )
    parser.add_argument("--pg-url", help="use this PostgreSQL database (else a throwaway one)")
    parser.add_argument("--json", help="also write the rows to this file")
    # the load process
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--addresses", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        args.addresses = args.addresses.split(",")
        args.volunteers = int(args.volunteers)
        args.compute_ms = int(args.compute_ms)
        args.batch = int(args.batch)
        print(json.dumps(asyncio.run(run_load(args))))
        return

    counts = [int(v) for v in args.volunteers.split(",")]
    computes = [int(c) for c in args.compute_ms.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    if any(not 1 <= b <= 32 for b in batches):
        raise SystemExit("--batch: expected units per call from 1 to 32, e.g. 1,8")
    rows: list[dict[str, Any]] = []
    cluster = None
    print(
        f"Allmende load benchmark: {os.cpu_count()} CPU cores; unit size {args.unit_size}, "
        f"redundancy {args.redundancy}; {args.warmup:g} s warm-up, {args.seconds:g} s measured "
        f"per row; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    header = (
        f"{'backend':<27} {'volunteers':>10} {'compute':>8} {'batch':>5} {'units/s':>8} "
        f"{'results/s':>9} {'lease p50':>9} {'lease p99':>9} {'submit p99':>10} {'load':>5}  errors"
    )
    print(header, flush=True)
    try:
        for name in args.backends.split(","):
            label, kind, replicas = BACKENDS[name]
            if kind == "pg" and not args.pg_url and cluster is None:
                from tests.postgres import PostgresCluster, find_bindir

                bindir = find_bindir()
                if bindir is None:
                    print(f"{label}: skipped, no PostgreSQL binaries found")
                    continue
                # Durability as SQLite's WAL with synchronous=NORMAL: commits are not
                # flushed one by one, the database stays consistent.
                cluster = PostgresCluster(bindir).start(
                    fsync="on",
                    full_page_writes="on",
                    shared_buffers="256MB",
                    synchronous_commit="off",
                    max_connections="300",
                )
            runs = [
                (compute_ms, batch, count)
                for compute_ms in computes
                for batch in (batches if compute_ms == 0 else [1])
                for count in counts
            ]
            for compute_ms, batch, count in runs:
                # Each row on a fresh database and fresh coordinators: a row after another
                # would otherwise inherit its unfinished job, the leases its volunteers held
                # when they stopped, and the database's cleanup of them.
                settle()
                row = run_row(args, kind, replicas, cluster, (compute_ms, batch, count), name)
                row.update(backend=label, compute_ms=compute_ms, batch=batch)
                rows.append(row)
                errors = ", ".join(f"{k} {v}" for k, v in row["errors"].items())
                if row["out_of_work"]:
                    errors = ", ".join(filter(None, ["OUT OF WORK, raise --units", errors]))
                print(
                    f"{label:<27} {count:>10} {compute_ms:>6}ms {batch:>5} "
                    f"{row['units_per_s']:>8.1f} {row['results_per_s']:>9.1f} "
                    f"{_ms(row['lease_p50_ms']):>9} {_ms(row['lease_p99_ms']):>9} "
                    f"{_ms(row['submit_p99_ms']):>10} {os.getloadavg()[0]:>5.1f}  "
                    f"{errors or '-'}",
                    flush=True,
                )
    finally:
        if cluster is not None:
            cluster.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print("lease -: no lease call both started and ended within the window (1,000 volunteers")
    print("asking for 8 units each queue for longer than it lasts)")
    print("load: the 1-minute load average after the row; it counts processes waiting on the")
    print("disk too, so PostgreSQL rows read high; CPU time is what the rows compete for")
    _verdicts(rows)


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.1f}ms"  # NaN: nothing was timed


def _verdicts(rows: list[dict[str, Any]]) -> None:
    def best(backend: str) -> float:
        """A row whose volunteers ran out of work measured the job's end, not the backend."""
        return max(
            (r["units_per_s"] for r in rows if r["backend"] == backend and not r["out_of_work"]),
            default=0.0,
        )

    sqlite = best(BACKENDS["sqlite"][0])
    if sqlite:
        print(
            f"goal >= 500 units/s on SQLite: best {sqlite:.0f}  "
            f"{'PASS' if sqlite >= 500 else 'FAIL'}"
        )
    for r in rows:
        if r["volunteers"] == 1000 and r["compute_ms"] > 0:
            ok = r["lease_p99_ms"] <= 50
            print(
                f"goal lease p99 <= 50 ms at 1000 volunteers ({r['backend']}, compute "
                f"{r['compute_ms']} ms): {r['lease_p99_ms']:.1f} ms  {'PASS' if ok else 'FAIL'}"
            )
    one, two = best(BACKENDS["pg1"][0]), best(BACKENDS["pg2"][0])
    if one and two:
        print(
            f"goal two PostgreSQL replicas > one: {two:.0f} vs {one:.0f} units/s  "
            f"{'PASS' if two > one else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
