"""Coordinators as real `allmende coordinator serve` processes, and simulated volunteers that
speak the real protocol to them and ride out coordinator crashes.

Used by the crash and replica tests: processes can be SIGKILLed and restarted on the same
data folder and database, and volunteers fail over between replicas.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow.parquet as pq

from allmende.api.dataset import pull
from allmende.client.connection import CoordinatorClient, RemoteError
from allmende.protocol.signing import SigningKey
from tests.integration.volunteers import HashComputer, RawVolunteer

ALLMENDE = [sys.executable, "-m", "allmende.cli"]


class Reachable(Protocol):
    """A coordinator, in this process or another: its address, empty while it is down."""

    address: str


def init_coordinator(data: Path, db_url: str | None = None) -> str:
    """`allmende coordinator init`; returns the fingerprint."""
    command = [*ALLMENDE, "coordinator", "init", "--data", str(data)]
    if db_url:
        command += ["--db", db_url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@dataclass
class ServeProcess:
    """One `allmende coordinator serve` process that can be killed and started again."""

    data: Path
    db_url: str | None = None
    address: str = ""
    process: subprocess.Popen[str] | None = None
    starts: int = 0
    flags: tuple[str, ...] = ()  # more `serve` flags
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.data.parent / f"serve-{id(self)}.log"

    def start(self) -> ServeProcess:
        command = [
            *ALLMENDE,
            "coordinator",
            "serve",
            "--data",
            str(self.data),
            "--listen",
            "127.0.0.1:0",
            "--drain-seconds",
            "0",
        ]
        if self.db_url:
            command += ["--db", self.db_url]
        command += self.flags
        with self.log.open("a") as err:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if not match:
            self.process.kill()
            raise AssertionError(f"serve did not start: {line!r}\n{self.log.read_text()[-3000:]}")
        self.address = match.group(1)
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, transactions cut wherever they are."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.address = ""

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


class Fleet:
    """Simulated volunteers: each registers, then leases, computes (HashComputer, after a
    short pause that stands for compute time) and submits until stopped. A volunteer sticks
    to one coordinator, moves to another replica when its own does not answer, and sends a
    result again when a crash cut off the first attempt, as the real engine's spool does."""

    def __init__(
        self,
        replicas: Sequence[Reachable],
        count: int,
        seed: int,
        compute_s: tuple[float, float] = (0.005, 0.04),
    ) -> None:
        self.replicas = replicas
        self.compute_s = compute_s
        self.stop_event = threading.Event()
        self.submitted = Counter[str]()
        self.refused = Counter[str]()
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(n, random.Random(seed * 1000 + n)),
                name=f"volunteer-{n}",
                daemon=True,
            )
            for n in range(count)
        ]

    def __enter__(self) -> Fleet:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _address(self, preferred: int) -> str:
        for offset in range(len(self.replicas)):
            replica = self.replicas[(preferred + offset) % len(self.replicas)]
            if replica.address:
                return replica.address
        return ""

    def _run(self, index: int, rng: random.Random) -> None:
        key = SigningKey.generate()
        computer = HashComputer()
        preferred = index % len(self.replicas)
        unsent: tuple[Any, Any, np.ndarray] | None = None  # a result the last crash cut off
        while not self.stop_event.is_set():
            address = self._address(preferred)
            if not address:
                time.sleep(0.05)
                continue
            try:
                with CoordinatorClient(address, timeout_s=5, signer=key) as client:
                    volunteer = register(client, key)
                    while not self.stop_event.is_set():
                        if unsent is None:
                            got = volunteer.lease()
                            if got is None:
                                time.sleep(0.05)
                                continue
                            lease, unit = got
                            time.sleep(rng.uniform(*self.compute_s))  # "computing"
                            unsent = (lease, unit, computer.compute(unit))
                        outcome = volunteer.submit(*unsent)
                        unsent = None
                        with self._lock:
                            self.submitted[outcome.status] += 1
            except RemoteError as exc:
                if exc.transient:  # the coordinator is down: try again, maybe elsewhere
                    preferred = (preferred + 1) % len(self.replicas)
                    time.sleep(0.02)
                else:  # e.g. a result resent after its first attempt landed before a crash
                    unsent = None
                    with self._lock:
                        self.refused[exc.code] += 1
            except Exception as exc:  # pragma: no cover - reported by the test
                with self._lock:
                    self.errors.append(exc)
                return


def register(client: CoordinatorClient, key: SigningKey) -> RawVolunteer:
    """A RawVolunteer for `key` that calls through `client` (which must sign with `key`)."""
    volunteer = RawVolunteer(client, key)
    volunteer.register()
    if volunteer.client is not client:  # register() may open a signing client of its own
        volunteer.client.close()
        volunteer.client = client
    return volunteer


def wait_for_state(
    replicas: Sequence[Reachable], job_id: str, states: tuple[str, ...], timeout_s: float
) -> str:
    """Poll any live replica until the job reaches one of `states`; returns the state seen."""
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        for replica in replicas:
            if not replica.address:
                continue
            try:
                with CoordinatorClient(replica.address, timeout_s=5) as client:
                    state = client.get_job(job_id).state
            except RemoteError:
                continue
            if state in states:
                return state
        time.sleep(0.02)
    return state


def read_rows(folder: Path) -> dict[str, tuple[str, np.ndarray]]:
    """id -> (text, embedding) of a pulled dataset; asserts every id appears once."""
    shards = sorted(str(p) for p in folder.glob("data/*.parquet"))
    data = pq.ParquetDataset(shards).read().to_pydict()
    ids = data["id"]
    assert len(ids) == len(set(ids)), "a row was written twice"
    return {
        i: (text, np.asarray(vector, dtype=np.float32))
        for i, text, vector in zip(ids, data["text"], data["embedding"], strict=True)
    }


def pull_rows(
    address: str, job_id: str, fingerprint: str, out: Path
) -> dict[str, tuple[str, np.ndarray]]:
    with CoordinatorClient(address) as client:
        report = pull(client, job_id, fingerprint, out)
    rows = read_rows(out)
    assert report.rows == len(rows)
    return rows
