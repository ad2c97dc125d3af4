"""An adversary simulation: honest volunteers and cheaters of several kinds against a real
coordinator, over real gRPC, driven round-robin from one thread.

Shared by tests/integration/test_adversary.py (which asserts) and bench/adversary.py (which
prints figures). Nothing here imports pytest.

The coordinator is `serve()` in this process (SQLite, port 0) with a `TrustPolicy` and,
optionally, a gold computer (the model run by the coordinator for a new job's first gold
rows). Every volunteer has its own Ed25519 key, registers, and then, one step per round:
leases a unit, answers it as its behaviour says, and submits, until the job is complete.
One thread and a fixed order make a run repeatable up to the coordinator's own random
choices (row order, which gold rows, which units go out alone).

"Honest" means the model passed in: the real all-MiniLM-L6-v2 (`real_model`, shared by
every honest volunteer and by the coordinator's gold computer) or, for protocol-only runs, a
deterministic hash of each text (`hash_model`). The cheaters:

- random: random unit vectors of the right shape;
- noise 0.99: the honest rows, each turned away to cosine 0.99 and renormalised;
- other model: the model applied to each text's first three words, a cheaper and genuinely
  different function of the text (unit rows, close to honest ones, never random);
- replay: answers its first unit honestly, then answers every later lease with that old
  result: sent again as it was, re-addressed to the new lease (the old unit hash kept), and
  in a fresh envelope for the new lease;
- copier: takes another volunteer's submitted rows for the same unit (colluding: the driver
  hands them over) and submits them as its own, signed with its own key;
- forger: computes honestly but first tries to submit in an honest volunteer's name, then
  signs its envelope with a key other than its registered one;
- 10 % cheater: honest, except random rows on one unit in ten (by default its 8th, 18th,
  ...), so it has earned trust before it cheats.

Verification overhead is compute per accepted item: the rows volunteers computed for a job
(gold rows and refused or outvoted results included) plus the gold rows the coordinator
computed for it, divided by the job's unique items.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from allmende.client.connection import CoordinatorClient
from allmende.coordinator.app import RunningCoordinator, serve
from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol import codec
from allmende.protocol.wire import decode_unit
from allmende.v1 import allmende_pb2 as pb
from tests.integration.adversary_cast import (  # noqa: F401 - re-exported
    DIMS,
    MODEL,
    Answer,
    Colluder,
    Copier,
    CountingModel,
    Forger,
    Model,
    NoisyRows,
    OtherModel,
    RandomRows,
    Replayer,
    Sometimes,
    Volunteer,
    cast,
    collusion_cast,
    first_words,
    hash_model,
    random_rows,
    real_model,
    row_cosines,
    turned,
)

# ----------------------------------------------------------------------------- the driver


class Stalled(AssertionError):
    pass


@dataclass
class JobRun:
    job_id: str
    state: str
    unique_items: int
    units: int
    volunteer_rows: int  # rows volunteers computed for this job (gold rows included)
    coordinator_rows: int  # gold rows the coordinator computed for it
    rounds: int

    @property
    def overhead(self) -> float:
        """Compute spent per accepted item."""
        return (self.volunteer_rows + self.coordinator_rows) / self.unique_items


@dataclass
class Simulation:
    running: RunningCoordinator
    admin: CoordinatorClient
    model: Model
    volunteers: list[Volunteer]
    gold_model: CountingModel | None = None
    rows: Counter[str] = field(default_factory=Counter)  # job id -> rows computed
    submitted: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)
    latest: tuple[str, np.ndarray] | None = None
    computed: int = 0  # rows the volunteers' model computed, honest or not

    def __post_init__(self) -> None:
        for volunteer in self.volunteers:
            volunteer.connect(self.running.address)
        honest = [v for v in self.volunteers if v.honest]
        for volunteer in self.volunteers:
            if isinstance(volunteer, Forger) and honest:
                volunteer.victim = honest[0].volunteer_id

    def close(self) -> None:
        for volunteer in self.volunteers:
            volunteer.close()

    def compute(self, texts: Sequence[str]) -> np.ndarray:
        self.computed += len(texts)
        return self.model(texts)

    def create_job(self, texts: Sequence[str], **spec: object) -> str:
        spec.setdefault("kind", "embed-text")
        spec.setdefault("model", MODEL)
        items = [pb.InputItem(id=f"item-{i}", text=t, line=i + 1) for i, t in enumerate(texts)]
        before = self.gold_model.rows if self.gold_model else 0
        job_id = self.admin.create_job(
            [
                pb.CreateJobRequest(spec=pb.JobSpec(**spec), source_name="adversary"),  # type: ignore[arg-type]
                pb.CreateJobRequest(items=items),
            ]
        ).job_id
        after = self.gold_model.rows if self.gold_model else 0
        self.rows[f"coordinator:{job_id}"] = after - before
        return str(job_id)

    def operator_warm_up(self, texts: Sequence[str], **spec: object) -> JobRun:
        """A job the operator's own volunteers (the honest ones) compute while the
        coordinator trusts loopback (`serve --trust-local`), as a fresh coordinator without
        gold rows is bootstrapped; then the coordinator runs on with the policy it had. It
        leaves honest volunteers with a record and the model with gold rows for later jobs."""
        coordinator = self.running.coordinator
        policy, everyone = coordinator.policy, self.volunteers
        coordinator.policy = replace(policy, trust_local=True)
        self.volunteers = [v for v in everyone if v.honest]
        try:
            return self.run(self.create_job(texts, **spec))
        finally:
            coordinator.policy, self.volunteers = policy, everyone

    def _check_quarantine(self) -> None:
        store = self.running.coordinator.store
        for volunteer in self.volunteers:
            if volunteer.quarantined:
                continue
            record = store.get_volunteer(volunteer.volunteer_id)
            if record is not None and record.quarantined:
                volunteer.caught_after = volunteer.units
                volunteer.dishonest_when_caught = volunteer.dishonest
                volunteer.reason = record.quarantine_reason
                volunteer.held = None

    def run(
        self, job_id: str, max_rounds: int = 100_000, idle_s: float = 30.0, stall_ok: bool = False
    ) -> JobRun:
        """Turns in order until the job is complete (its dataset written). When no volunteer
        gets work for `idle_s` seconds: raise Stalled, or with `stall_ok` return the run with
        state 'stalled'."""
        rounds = 0
        idle_since = time.monotonic()
        while True:
            rounds += 1
            active = False
            for volunteer in self.volunteers:
                active |= volunteer.step(self)
                self._check_quarantine()
            job = self.admin.get_job(job_id)
            state = job.state
            if state in ("complete", "failed", "cancelled") or rounds >= max_rounds:
                break
            if active:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > idle_s:
                if not stall_ok:
                    raise Stalled(
                        f"job {job_id} is {job.state} with {job.units_accepted}/"
                        f"{job.units_total} units accepted and no volunteer got work for "
                        f"{idle_s} s"
                    )
                state = "stalled"
                break
            else:
                time.sleep(0.01)  # e.g. waiting for the assimilator to write the dataset
        return JobRun(
            job_id,
            state,
            job.unique_items,
            job.units_total,
            self.rows[job_id],
            self.rows[f"coordinator:{job_id}"],
            rounds,
        )


@contextmanager
def simulation(
    root: Path,
    model: Model,
    volunteers: list[Volunteer],
    policy: TrustPolicy,
    gold: bool = True,
) -> Iterator[Simulation]:
    """A fresh coordinator in `root` (with `model` as its gold computer when `gold`) and
    the volunteers registered with it."""
    home = CoordinatorHome(root)
    home.init()
    gold_model = CountingModel(model) if gold else None
    with (
        serve(
            root,
            "127.0.0.1:0",
            drain_s=0.2,
            policy=policy,
            gold_computer=gold_model.gold_computer if gold_model else None,
        ) as running,
        CoordinatorClient(running.address, admin_token=home.load_token()) as admin,
    ):
        sim = Simulation(running, admin, model, volunteers, gold_model)
        try:
            yield sim
        finally:
            sim.close()


# ----------------------------------------------------------------------------- audit


def audit(db: Path, job_id: str, honest_ids: set[str]) -> list[str]:
    """Accepted units of a job that rest only on a cheater (read-only, from the database):
    a unit passes when its canonical result comes from an honest volunteer, or when a valid
    result of an honest volunteer agrees with it row by row (cosine >= the job's tau)."""
    problems = []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tau, dims, dtype = conn.execute(
            "SELECT tau, dims, result_dtype FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        units = conn.execute(
            "SELECT u.unit_id, u.rows, r.volunteer_id, r.payload, r.state, v.quarantined"
            " FROM units u JOIN results r ON r.result_id = u.canonical_result_id"
            " JOIN volunteers v ON v.volunteer_id = r.volunteer_id"
            " WHERE u.job_id = ? AND u.state = 'accepted'",
            (job_id,),
        ).fetchall()
        for unit_id, rows, volunteer, payload, state, quarantined in units:
            if quarantined or state != "valid":
                problems.append(f"{unit_id}: canonical result {state}, from a quarantined one")
                continue
            if volunteer in honest_ids:
                continue
            canonical = codec.decode(payload, dtype, rows, dims)
            backing = conn.execute(
                "SELECT volunteer_id, payload FROM results WHERE unit_id = ? AND state = 'valid'",
                (unit_id,),
            ).fetchall()
            if not any(
                row_cosines(codec.decode(p, dtype, rows, dims), canonical).min() >= tau
                for v, p in backing
                if v in honest_ids
            ):
                problems.append(f"{unit_id}: rests only on {volunteer[:12]}'s result")
    return problems


def published_wrong(db: Path, job_id: str, model: Model, tau: float) -> int:
    """Rows of a job's accepted units whose published values are not the honest model's
    (cosine < tau): what its dataset holds, or would hold once written."""
    wrong = 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        dims, dtype = conn.execute(
            "SELECT dims, result_dtype FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        units = conn.execute(
            "SELECT u.blob, u.rows, COALESCE(u.canonical_payload, r.payload) FROM units u"
            " JOIN results r ON r.result_id = u.canonical_result_id"
            " WHERE u.job_id = ? AND u.state = 'accepted'",
            (job_id,),
        ).fetchall()
    for blob, rows, payload in units:
        texts = decode_unit(blob).texts
        published = codec.decode(payload, dtype, rows, dims)
        wrong += int((row_cosines(published, model(texts)) < tau).sum())
    return wrong


def poisoned_gold(db: Path, job_id: str, model: Model, tau: float) -> int:
    """Gold rows of a job whose answer is not the honest model's (cosine < tau)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT text, answer FROM gold WHERE job_id = ?", (job_id,)).fetchall()
    if not rows:
        return 0
    answers = np.stack([np.frombuffer(answer, dtype="<f4") for _, answer in rows])
    return int((row_cosines(answers, model([text for text, _ in rows])) < tau).sum())


def dataset_rows(folder: Path) -> tuple[list[str], np.ndarray]:
    """(texts, embeddings) of a written dataset."""
    import pyarrow.parquet as pq

    shards = sorted(str(p) for p in folder.glob("data/*.parquet"))
    data = pq.ParquetDataset(shards).read().to_pydict()
    return list(data["text"]), np.asarray(data["embedding"], dtype=np.float32)


def reputation(sim: Simulation, volunteer: Volunteer) -> dict[str, int]:
    """The volunteer's embed-text record: counters by name."""
    rep = sim.running.coordinator.store.get_reputation(volunteer.volunteer_id).get("embed-text")
    if rep is None:
        return {}
    return {
        name: getattr(rep, name)
        for name in ("consecutive_valid", "valid", "disagreements", "faults", "gold_missed")
    }
