"""The cast of the adversary simulation: the models "honest" can mean, and volunteers that
compute honestly or cheat in one of the ways tests/integration/adversary.py describes.
Split from the driver (adversary.py), which imports everything here."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from allmende.client.connection import CoordinatorClient, RemoteError
from allmende.coordinator.store.records import JobSettings
from allmende.protocol import codec
from allmende.protocol.kinds.base import claimed_tokens
from allmende.protocol.kinds.columns import Layout
from allmende.protocol.signing import CTX_REGISTER, SigningKey
from allmende.protocol.wire import (
    CODEC,
    ResultEnvelope,
    WorkUnit,
    decode_envelope,
    decode_unit,
    sign_envelope,
)
from allmende.v1 import allmende_pb2 as pb

if TYPE_CHECKING:
    from tests.integration.adversary import Simulation

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
            rows=rows,
            columns=(Layout("embedding", unit.result_dtype, unit.dims),),
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
