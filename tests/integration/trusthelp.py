"""Building blocks of the trust tests: a real coordinator (in-process, port 0, SQLite) with a
chosen TrustPolicy and gold computer, raw volunteers that compute honest vectors or cheat in
exactly one way, and read-only looks into the coordinator's database."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from sqlalchemy import select

from allmende.coordinator.app import RunningCoordinator, serve
from allmende.coordinator.domain.coordinator import Coordinator
from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.store import schema as t
from allmende.coordinator.store.records import JobSettings, LeaseRecord
from allmende.coordinator.store.sql import SqlStore
from allmende.protocol.kinds.base import claimed_tokens
from allmende.protocol.wire import WorkUnit, decode_unit
from allmende.v1 import allmende_pb2 as pb
from tests.integration.rawclient import RawAdmin, RawVolunteer, job_stream, text_rows


def honest_gold(settings: JobSettings, texts: list[str]) -> np.ndarray:
    """The coordinator's gold computer: the same vectors honest volunteers compute."""
    return text_rows(texts, settings.dims)


def random_rows(rows: int, dims: int, seed: int) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((rows, dims)).astype(np.float32)
    return np.asarray(matrix / np.linalg.norm(matrix, axis=1, keepdims=True), dtype=np.float32)


@dataclass
class Volunteer:
    """A raw volunteer over gRPC that computes honest vectors unless told otherwise."""

    raw: RawVolunteer
    net: Net

    @property
    def id(self) -> str:
        return self.raw.volunteer_id

    def lease_response(self) -> pb.LeaseWorkResponse:
        return self.raw.lease_response()

    def lease(self) -> pb.Lease | None:
        response = self.raw.lease_response()
        return response.lease if response.HasField("lease") else None

    def honest(self, lease: pb.Lease) -> np.ndarray:
        unit = unit_of(lease)
        return text_rows(unit.texts, unit.dims)

    def result(
        self, lease: pb.Lease, matrix: np.ndarray | None = None, **overrides: Any
    ) -> tuple[bytes, bytes, bytes]:
        """(envelope, signature, payload), claiming the honest token count by default."""
        overrides.setdefault("claimed_tokens", claimed_tokens(unit_of(lease).texts))
        return self.raw.result(lease, self.honest(lease) if matrix is None else matrix, **overrides)

    def submit(
        self, lease: pb.Lease, matrix: np.ndarray | None = None, **overrides: Any
    ) -> pb.SubmitResultResponse:
        return self.raw.submit(*self.result(lease, matrix, **overrides))

    def miss_gold(self, lease: pb.Lease, seed: int = 99) -> np.ndarray:
        """Honest rows, except every hidden gold row (known from the database) is random."""
        matrix = self.honest(lease)
        positions = self.net.gold_positions(lease.lease_id)
        assert positions, "the lease carries no gold rows"
        matrix[positions] = random_rows(len(positions), matrix.shape[1], seed)
        return matrix


def unit_of(lease: pb.Lease) -> WorkUnit:
    return decode_unit(lease.unit.unit)


@dataclass
class Net:
    """One running coordinator with an admin and any number of volunteers."""

    running: RunningCoordinator
    admin: RawAdmin
    closers: list[RawVolunteer] = field(default_factory=list)

    @property
    def c(self) -> Coordinator:
        return self.running.coordinator

    @property
    def store(self) -> SqlStore:
        return self.c.store  # type: ignore[return-value]

    def volunteer(self) -> Volunteer:
        raw = RawVolunteer(self.running.address)
        raw.register()
        self.closers.append(raw)
        return Volunteer(raw, self)

    def create(self, texts: list[str], **spec: Any) -> str:
        """A job over `texts` (ids id-0, id-1, ...); returns its id."""
        return str(self.admin.create_job(job_stream(texts, **spec)).job_id)

    def units(self, job_id: str) -> list[str]:
        u = t.units
        with self.store.engine.connect() as conn:
            return list(
                conn.execute(select(u.c.unit_id).where(u.c.job_id == job_id).order_by(u.c.seq))
                .scalars()
                .all()
            )

    def unit(self, unit_id: str) -> Any:
        with self.store.engine.connect() as conn:
            return conn.execute(select(t.units).where(t.units.c.unit_id == unit_id)).one()

    def lease_record(self, lease_id: str) -> LeaseRecord:
        record = self.store.get_lease(lease_id)
        assert record is not None
        return record

    def planned_texts(self, unit_id: str) -> tuple[str, ...]:
        return decode_unit(self.unit(unit_id).blob).texts

    def gold_positions(self, lease_id: str) -> list[int]:
        """Where the hidden gold rows sit in the unit as composed for this lease."""
        record = self.lease_record(lease_id)
        rows = self.unit(record.unit_id).rows
        order = np.frombuffer(record.composition, dtype="<u2")
        gold = rows + len(record.gold_ids)
        return [i for i, source in enumerate(order.tolist()) if rows <= source < gold]

    def decoy_positions(self, lease_id: str) -> list[int]:
        """Where the decoys (texts the volunteer saw in other leases) sit in its unit."""
        record = self.lease_record(lease_id)
        gold = self.unit(record.unit_id).rows + len(record.gold_ids)
        order = np.frombuffer(record.composition, dtype="<u2")
        return [i for i, source in enumerate(order.tolist()) if source >= gold]

    def results(self, unit_id: str) -> list[Any]:
        r = t.results
        with self.store.engine.connect() as conn:
            return list(
                conn.execute(
                    select(r).where(r.c.unit_id == unit_id).order_by(r.c.received_ms)
                ).all()
            )

    def canonical_volunteer(self, unit_id: str) -> str | None:
        u, r = t.units, t.results
        with self.store.engine.connect() as conn:
            return conn.execute(
                select(r.c.volunteer_id)
                .select_from(u.join(r, r.c.result_id == u.c.canonical_result_id))
                .where(u.c.unit_id == unit_id)
            ).scalar()

    def job_state(self, job_id: str) -> str:
        job = self.store.get_job(job_id)
        assert job is not None
        return job.state

    def wait_state(self, job_id: str, *states: str, timeout_s: float = 20) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.job_state(job_id)
            if state in states or time.monotonic() > deadline:
                return state
            time.sleep(0.02)

    def dataset(self, job_id: str) -> dict[str, list[Any]]:
        folder = Path(self.c.datasets_dir) / job_id
        shards = sorted(str(p) for p in folder.glob("data/*.parquet"))
        data: dict[str, list[Any]] = pq.ParquetDataset(shards).read().to_pydict()
        return data


def sentences(n: int, tag: str = "sentence") -> list[str]:
    """`n` distinct texts for a trust test's job."""
    return [f"a {tag} numbered {i} for the trust tests" for i in range(n)]


@contextmanager
def launch(
    home: CoordinatorHome,
    policy: TrustPolicy | None = None,
    gold: bool = False,
    listen: str = "127.0.0.1:0",
    db_url: str | None = None,
) -> Iterator[Net]:
    """Serve `home` with this policy; `gold`: the coordinator computes gold rows for new
    jobs (honest vectors), so every unit carries some from the start.

    Without a policy: the default one, except that any two agreeing volunteers yield gold
    rows (gold_streak=0), so tests of the gold path need no warm-up (the default streak
    rule has a test of its own). `db_url`: a shared database instead of the home's SQLite
    file."""
    policy = policy or TrustPolicy(gold_streak=0)
    with ExitStack() as stack:
        running = stack.enter_context(
            serve(
                home.root,
                listen,
                drain_s=0.2,
                policy=policy,
                gold_computer=honest_gold if gold else None,
                db_url=db_url,
            )
        )
        admin = RawAdmin(running.address, home.load_token())
        stack.callback(admin.close)
        net = Net(running, admin)
        yield net
        for raw in net.closers:
            raw.close()


def run_honest(net: Net, volunteers: list[Volunteer], rounds: int = 1000) -> int:
    """Each volunteer in turn leases and answers honestly until none gets a lease;
    returns the number of results sent."""
    sent = 0
    for _ in range(rounds):
        leased = False
        for v in volunteers:
            lease = v.lease()
            if lease is not None:
                leased = True
                v.submit(lease)
                sent += 1
        if not leased:
            return sent
    raise AssertionError("volunteers never ran out of work")


def lockstep(net: Net, x: Volunteer, y: Volunteer, units: int | None = None) -> list[str]:
    """X leases each unit first and Y replicates it, unless X's lease went out alone
    (adaptive replication). Runs for `units` units, or until X gets no lease; returns the
    units X decided alone."""
    solo = []
    done = 0
    while units is None or done < units:
        lease = x.lease()
        if lease is None:
            break
        done += 1
        unit_id = unit_of(lease).unit_id
        row = net.unit(unit_id)
        if row.quorum == 1:
            assert row.target == 1
            assert x.submit(lease).status == "accepted"
            solo.append(unit_id)
            continue
        other = y.lease()
        assert other is not None and unit_of(other).unit_id == unit_id
        assert x.submit(lease).status == "pending"
        assert y.submit(other).status == "accepted"
    return solo


def unit_sha256(lease: pb.Lease) -> bytes:
    return hashlib.sha256(lease.unit.unit).digest()
