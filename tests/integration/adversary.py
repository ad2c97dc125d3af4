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

import hashlib
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from allmende.client.connection import CoordinatorClient, RemoteError
from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.store.records import JobSettings
from allmende.coordinator.transport.server import RunningCoordinator, serve
from allmende.protocol import codec
from allmende.protocol.signing import CTX_REGISTER, SigningKey
from allmende.protocol.tasks import claimed_tokens
from allmende.protocol.wire import (
    CODEC,
    ResultEnvelope,
    WorkUnit,
    decode_envelope,
    decode_unit,
    sign_envelope,
)
from allmende.v1 import allmende_pb2 as pb

MODEL = "all-MiniLM-L6-v2"
DIMS = 384

Model = Callable[[Sequence[str]], np.ndarray]  # texts -> float32 unit rows
Triple = tuple[bytes, bytes, bytes]  # envelope, signature, payload


# ----------------------------------------------------------------------------- models


def real_model(computer: object | None = None) -> Model:
    """The real all-MiniLM-L6-v2 on CPU (`computer`: a TaskComputer to share, e.g. the test
    session's), as every honest volunteer and the coordinator's gold computer run it."""
    if computer is None:
        from allmende.client.tasks.computer import TaskComputer
        from allmende.protocol.models import ModelRegistry

        computer = TaskComputer(ModelRegistry(), device="cpu", batch_size=64)
    embedder = computer.embedder(MODEL)  # type: ignore[attr-defined]

    def embed(texts: Sequence[str]) -> np.ndarray:
        return np.asarray(embedder.embed(list(texts)), dtype=np.float32)

    return embed


def hash_model(dims: int = DIMS) -> Model:
    """A deterministic stand-in for the model: one pseudo-random unit vector per text."""

    def embed(texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            row = np.random.default_rng(seed).standard_normal(dims)
            rows.append(row / np.linalg.norm(row))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), dims)

    return embed


class CountingModel:
    """A model that counts the rows it computed (the coordinator's share of the work)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.rows = 0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.rows += len(texts)
        return self.model(texts)

    def gold_computer(self, settings: JobSettings, texts: list[str]) -> np.ndarray:
        return self(texts)


def random_rows(rng: np.random.Generator, rows: int, dims: int) -> np.ndarray:
    matrix = rng.standard_normal((rows, dims))
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def turned(rows: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """Each row turned away from itself to exactly `cosine`, still unit length."""
    noise = rng.standard_normal(rows.shape)
    noise -= np.einsum("ij,ij->i", noise, rows)[:, None] * rows  # orthogonal to each row
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    sine = np.sqrt(1.0 - cosine * cosine)
    out = cosine * rows + sine * noise
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.asarray(
        np.einsum("ij,ij->i", a64, b64)
        / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    )


# ----------------------------------------------------------------------------- volunteers


@dataclass
class Answer:
    triples: list[Triple]  # submitted in order, each whatever the last one's fate
    matrix: np.ndarray  # the rows it stands for (what a copier may take)
    dishonest: bool


class Volunteer:
    """An honest volunteer: computes the composed unit with the model and submits it as the
    real engine does (claimed tokens included). Subclasses cheat by overriding `answer`."""

    kind = "honest"
    honest = True

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.key = SigningKey.generate()
        self.rng = np.random.default_rng(seed)
        self.client: CoordinatorClient | None = None
        self.volunteer_id = ""
        self.held: tuple[pb.Lease, WorkUnit] | None = None
        self.waited = 0  # steps spent holding a lease without answering it
        self.units = 0  # units leased
        self.dishonest = 0  # units answered dishonestly
        self.first_dishonest = 0  # the number of the first unit answered dishonestly
        self.caught_after = 0  # units leased when quarantine was seen (0: not quarantined)
        self.dishonest_when_caught = 0
        self.reason = ""
        self.outcomes: Counter[str] = Counter()  # submit outcomes: statuses or error codes

    # -- plumbing

    def connect(self, address: str) -> None:
        self.client = CoordinatorClient(address, signer=self.key)
        self.volunteer_id = self.client.register(
            pb.RegisterVolunteerRequest(
                public_key=self.key.public_key,
                display_name=self.name,
                client_version="adversary/0",
                hardware="simulated",
                signature=self.key.sign(CTX_REGISTER, self.key.public_key),
            )
        )

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    @property
    def quarantined(self) -> bool:
        return self.caught_after > 0

    def envelope(
        self, lease: pb.Lease, unit: WorkUnit, payload: bytes, rows: int
    ) -> ResultEnvelope:
        return ResultEnvelope(
            unit_id=unit.unit_id,
            lease_id=lease.lease_id,
            volunteer_id=self.volunteer_id,
            dtype=unit.result_dtype,
            rows=rows,
            dims=unit.dims,
            codec=CODEC,
            payload_sha256=hashlib.sha256(payload).digest(),
            unit_sha256=hashlib.sha256(lease.unit.unit).digest(),
            model_sha256=unit.model_sha256,
            device="cpu",
            compute_ms=1,
            created_ms=int(time.time() * 1000),
            claimed_tokens=claimed_tokens(unit.texts),
        )

    def result(
        self, lease: pb.Lease, unit: WorkUnit, matrix: np.ndarray, key: SigningKey | None = None
    ) -> Triple:
        """A result for this lease, as the real engine builds it (signed with `key`, by
        default the volunteer's own)."""
        payload = codec.encode(matrix, unit.result_dtype).payload
        blob, signature = sign_envelope(
            key or self.key, self.envelope(lease, unit, payload, matrix.shape[0])
        )
        return blob, signature, payload

    # -- behaviour

    def answer(self, lease: pb.Lease, unit: WorkUnit, sim: Simulation) -> Answer | None:
        """What to submit for this lease; None keeps holding it for a later step."""
        matrix = sim.compute(unit.texts)
        return Answer([self.result(lease, unit, matrix)], matrix, dishonest=False)

    def step(self, sim: Simulation) -> bool:
        """One turn: lease (unless holding one), answer, submit. True if it did anything."""
        assert self.client is not None
        if self.quarantined:
            return False
        if self.held is None:
            try:
                response = self.client.lease(self.volunteer_id)
            except RemoteError as exc:
                self.outcomes[f"lease {exc.code}"] += 1
                return False
            if not response.HasField("lease"):
                return False
            lease = response.lease
            self.held = (lease, decode_unit(lease.unit.unit))
            self.units += 1
            self.waited = 0
        lease, unit = self.held
        answer = self.answer(lease, unit, sim)
        if answer is None:
            self.waited += 1
            return False
        self.held = None
        if answer.dishonest:
            self.dishonest += 1
            self.first_dishonest = self.first_dishonest or self.units
        sim.rows[unit.job_id] += len(unit.texts)
        landed = False
        for triple in answer.triples:
            try:
                response = self.client.submit(*triple)
            except RemoteError as exc:
                self.outcomes[exc.code] += 1
                if "quarantined" in exc.details:
                    break
                continue
            self.outcomes[response.status] += 1
            landed = response.status != "rejected"
            break  # the lease is closed now, whatever the status
        if landed:
            sim.submitted.setdefault(unit.unit_id, []).append((self.name, answer.matrix))
            sim.latest = (self.name, answer.matrix)
        return True


class RandomRows(Volunteer):
    kind = "random vectors"
    honest = False

    def answer(self, lease: pb.Lease, unit: WorkUnit, sim: Simulation) -> Answer | None:
        matrix = random_rows(self.rng, len(unit.texts), unit.dims)
        return Answer([self.result(lease, unit, matrix)], matrix, dishonest=True)


class NoisyRows(Volunteer):
    kind = "honest + noise (cos 0.99)"
    honest = False
    cosine = 0.99

    def answer(self, lease: pb.Lease, unit: WorkUnit, sim: Simulation) -> Answer | None:
        matrix = turned(sim.compute(unit.texts), self.cosine, self.rng)
        return Answer([self.result(lease, unit, matrix)], matrix, dishonest=True)


def first_words(text: str, words: int = 3) -> str:
    return " ".join(text.split()[:words])


class OtherModel(Volunteer):
    kind = "other model (3 words)"
    honest = False

    def answer(self, lease: pb.Lease, unit: WorkUnit, sim: Simulation) -> Answer | None:
        matrix = sim.compute([first_words(t) for t in unit.texts])
        return Answer([self.result(lease, unit, matrix)], matrix, dishonest=True)


class Replayer(Volunteer):
    kind = "replay old result"
    honest = False

    def __init__(self, name: str, seed: int) -> None:
        super().__init__(name, seed)
        self.old: tuple[Triple, np.ndarray] | None = None

    def answer(self, lease: pb.Lease, unit: WorkUnit, sim: Simulation) -> Answer | None:
        if self.old is None:  # one honest result, to replay from then on
            matrix = sim.compute(unit.texts)
            triple = self.result(lease, unit, matrix)
            self.old = (triple, matrix)
            return Answer([triple], matrix, dishonest=False)
        (blob, _, payload), matrix = self.old
        # The old signed result re-addressed to this lease (its unit hash is the old one's).
        readdressed, signature = sign_envelope(
            self.key,
            replace(decode_envelope(blob), lease_id=lease.lease_id, unit_id=unit.unit_id),
        )
        return Answer(
            [
                self.old[0],  # sent again verbatim: its lease is closed
                (readdressed, signature, payload),
                self.result(lease, unit, matrix),  # the old rows in a correct envelope
            ],
            matrix,
            dishonest=True,
        )


class Copier(Volunteer):
    kind = "copier"
    honest = False
    patience = 2  # steps to wait for another volunteer's result for the same unit

    def answer(self, lease: pb.Lease, unit: WorkUnit, sim: Simulation) -> Answer | None:
        others = [m for name, m in sim.submitted.get(unit.unit_id, []) if name != self.name]
        if others:
            matrix = others[-1]
        elif self.waited < self.patience:
            return None
        elif sim.latest is not None and sim.latest[0] != self.name:
            matrix = sim.latest[1]  # nobody answered this unit: copy whatever came last
        else:
            matrix = random_rows(self.rng, len(unit.texts), unit.dims)
        return Answer([self.result(lease, unit, matrix)], matrix, dishonest=True)


class Forger(Volunteer):
    kind = "forged signature"
    honest = False

    def __init__(self, name: str, seed: int) -> None:
        super().__init__(name, seed)
        self.other_key = SigningKey.generate()
        self.victim = ""  # an honest volunteer's id, set by the simulation

    def answer(self, lease: pb.Lease, unit: WorkUnit, sim: Simulation) -> Answer | None:
        matrix = sim.compute(unit.texts)
        triples = []
        if self.victim:  # in an honest volunteer's name (the request is signed by the forger)
            own, _, payload = self.result(lease, unit, matrix)
            blob, signature = sign_envelope(
                self.key, replace(decode_envelope(own), volunteer_id=self.victim)
            )
            triples.append((blob, signature, payload))
        triples.append(self.result(lease, unit, matrix, key=self.other_key))
        return Answer(triples, matrix, dishonest=True)


class Sometimes(Volunteer):
    """Honest, except random rows on one unit in ten: its `first`-th, then every tenth."""

    kind = "10 % cheater"
    honest = False
    every = 10

    def __init__(self, name: str, seed: int, first: int = 8) -> None:
        super().__init__(name, seed)
        self.first = first

    def answer(self, lease: pb.Lease, unit: WorkUnit, sim: Simulation) -> Answer | None:
        if self.units < self.first or (self.units - self.first) % self.every:
            return super().answer(lease, unit, sim)
        matrix = random_rows(self.rng, len(unit.texts), unit.dims)
        return Answer([self.result(lease, unit, matrix)], matrix, dishonest=True)


class Colluder(Volunteer):
    """One of a pair that shares what it leases. When both hold the same unit, each diffs the
    two compositions: texts only it was given would be gold rows (were gold rows chosen per
    lease; they are chosen per unit, so there are none), so it answers those honestly and
    lies on every other row, the same lie as its partner (a hash of the text). Otherwise it
    waits a little, then answers honestly."""

    kind = "colluding pair"
    honest = False
    patience = 2

    def __init__(self, name: str, seed: int, ring: dict[str, dict[str, WorkUnit]]) -> None:
        super().__init__(name, seed)
        self.ring = ring  # unit id -> colluder name -> the unit as leased to it

    def answer(self, lease: pb.Lease, unit: WorkUnit, sim: Simulation) -> Answer | None:
        held = self.ring.setdefault(unit.unit_id, {})
        held[self.name] = unit
        partner = next((u for name, u in held.items() if name != self.name), None)
        if partner is None:
            if self.waited < self.patience:
                return None
            del held[self.name]  # answered honestly: the partner must not lie on this unit
            return super().answer(lease, unit, sim)
        theirs = Counter(partner.texts)
        mine = Counter(unit.texts)
        gold = {text for text, count in mine.items() if count > theirs[text]}
        lie = hash_model(unit.dims)  # of the text salted: unlike any honest model's answer
        matrix = np.stack(
            [sim.compute([t])[0] if t in gold else lie([f"lie: {t}"])[0] for t in unit.texts]
        )
        return Answer([self.result(lease, unit, matrix)], matrix, dishonest=True)


def collusion_cast(honest: int) -> list[Volunteer]:
    """Honest volunteers and a colluding pair that takes its turns back to back."""
    ring: dict[str, dict[str, WorkUnit]] = {}
    good: list[Volunteer] = [Volunteer(f"honest-{i + 1}", seed=i) for i in range(honest)]
    pair: list[Volunteer] = [Colluder(f"colluder-{i + 1}", 200 + i, ring) for i in range(2)]
    return [*good, *pair]


CHEATERS: tuple[type[Volunteer], ...] = (
    RandomRows,
    NoisyRows,
    OtherModel,
    Replayer,
    Copier,
    Forger,
    Sometimes,
)


def cast(
    honest: int, cheaters: Sequence[type[Volunteer]] = CHEATERS, trusted_after: int = 5
) -> list[Volunteer]:
    """Honest volunteers and one of each cheater, interleaved in a fixed turn order. The
    10 % cheater first cheats on its unit `trusted_after` + 3, once it has earned trust
    (pass the policy's adaptive_after)."""
    good: list[Volunteer] = [Volunteer(f"honest-{i + 1}", seed=i) for i in range(honest)]
    bad = [
        kind(f"cheater-{i + 1}", seed=100 + i, first=trusted_after + 3)  # type: ignore[call-arg]
        if kind is Sometimes
        else kind(f"cheater-{i + 1}", seed=100 + i)
        for i, kind in enumerate(cheaters)
    ]
    order: list[Volunteer] = []
    for i in range(max(len(good), len(bad))):
        order += good[i : i + 1] + bad[i : i + 1]
    return order


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

    shards = sorted(str(p) for p in folder.glob("*.parquet"))
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
