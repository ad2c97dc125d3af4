"""Refused requests: what a flood of hostile ~15 MiB requests leaves in a coordinator's
memory, and what it costs an honest volunteer working meanwhile.

    python bench/refused.py [--requests 100] [--postgres]

A fresh `allmende coordinator serve` process (SQLite; with --postgres also one on a
throwaway PostgreSQL server, which runs grpc's threaded server) receives --requests hostile
calls one after the other: 15 MiB of empty SubmitResults entries, a 15 MiB result, a
15 MiB LeaseWork, 10 MiB of entries under the size cap, a 10 MiB batch without a signature,
10 MiB of bytes that are not protobuf, and a signed batch that is refused whole
(tests/integration/refused.py, shared with tests/integration/test_refused_memory.py). An
honest volunteer leases and submits all the while.

Printed per backend: the coordinator's resident memory (VmRSS) before and after, its growth
(goal < 64 MiB), and the honest volunteer's calls: how many, p50 and p99 latency. Exits
non-zero when the goal is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from corpus import ROOT

sys.path.insert(0, str(ROOT))  # tests.integration.refused: the shared hostile requests

from tests.integration.fleet import ServeProcess, init_coordinator
from tests.integration.refused import GROWTH_LIMIT, MIB, Report, refuse_many


def run(data: Path, count: int, db_url: str | None = None) -> Report:
    init_coordinator(data, db_url)
    process = ServeProcess(data, db_url).start()
    try:
        return refuse_many(process, count)
    finally:
        process.stop()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="hostile requests sent")
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    args = parser.parse_args()
    failures: list[str] = []
    print(
        f"{'backend':<11} {'refused':>7} {'seconds':>7} {'RSS before':>10} {'after':>7} "
        f"{'growth':>7}  {'honest calls':>12} {'p50 ms':>7} {'p99 ms':>7}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        backends: list[tuple[str, str | None]] = [("sqlite", None)]
        cluster = None
        if args.postgres:
            from tests.postgres import PostgresCluster, find_bindir

            bindir = find_bindir()
            if bindir is None:
                print("postgresql: skipped, no PostgreSQL binaries found")
            else:
                cluster = PostgresCluster(bindir).start()
                backends.append(("postgresql", cluster.new_database(migrated=False)))
        try:
            for name, db_url in backends:
                report = run(Path(tmp) / name, args.requests, db_url)
                honest = report.honest_seconds
                print(
                    f"{name:<11} {report.refused:>7} {report.seconds:>7.1f} "
                    f"{report.rss_before / MIB:>7.0f} MiB {report.rss_after / MIB:>7.0f} "
                    f"{report.growth / MIB:>7.1f}  {len(honest):>12} "
                    f"{statistics.median(honest) * 1000:>7.1f} "
                    f"{quantile(honest, 0.99) * 1000:>7.1f}"
                )
                verdict = "PASS" if report.growth < GROWTH_LIMIT else "FAIL"
                print(
                    f"{name}: RSS growth under refused requests {report.growth / MIB:.1f} MiB "
                    f"(goal < {GROWTH_LIMIT // MIB} MiB) {verdict}"
                )
                if report.growth >= GROWTH_LIMIT:
                    failures.append(f"{name}: RSS grew by {report.growth / MIB:.0f} MiB")
        finally:
            if cluster is not None:
                cluster.stop()
    if failures:
        print("FAIL: " + "; ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
