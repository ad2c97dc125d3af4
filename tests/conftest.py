"""Shared fixtures: real coordinators in-process on port 0, real corpora, the real model."""

from __future__ import annotations

import csv
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from allmende.client.connection import CoordinatorClient
from allmende.client.engine import EngineConfig, Event, VolunteerEngine
from allmende.coordinator.app import RunningCoordinator, serve
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol.models import ModelRegistry, ModelSpec
from allmende.v1 import allmende_pb2 as pb

# The throwaway PostgreSQL cluster fixtures (postgres_cluster, postgres_url).
pytest_plugins = ["tests.postgres"]

# The suite's volunteers all run on this machine, as the operator's own do: their results
# count as proven (`serve --trust-local`), so that tests of other features need no gold
# rows or warm-up before a unit can be accepted. Set before any coordinator starts, so that
# CLI subprocesses inherit it too. Tests of the proven-quorum rule itself pass
# `TrustPolicy(trust_local=False)` (tests/integration/test_adversary.py, test_proven.py).
os.environ.setdefault("ALLMENDE_TRUST_LOCAL", "1")

ROOT = Path(__file__).resolve().parents[1]
# The STS-B train and dev splits travel with the repository (tests/data/stsb/, licence beside).
STSB = ROOT / "tests" / "data" / "stsb"


def read_stsb(split: str = "dev") -> list[tuple[str, str, float]]:
    """(sentence 1, sentence 2, gold score) rows of an STS-B split."""
    rows = []
    with (STSB / f"sts-{split}.csv").open(encoding="utf-8") as handle:
        for fields in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            rows.append((fields[5], fields[6], float(fields[4])))
    return rows


# Photographs from scikit-image with hand-written captions, bundled with the demo
# (coordinator/allmende/demo/data/images/README.md).
IMAGES = ROOT / "coordinator" / "allmende" / "demo" / "data" / "images"


def read_images() -> list[tuple[str, bytes, str]]:
    """(id, image file bytes, caption) for each bundled test image, in captions.tsv order."""
    with (IMAGES / "captions.tsv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [(r["id"], (IMAGES / r["file"]).read_bytes(), r["caption"]) for r in rows]


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    """A small CLIP with random weights (fixed seed) in Hugging Face layout
    (allmende.demo.tiny_clip, which the demo serves too)."""
    from allmende.demo.tiny_clip import build

    return build(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def clip_registry(tiny_clip: ModelSpec) -> ModelRegistry:
    """The built-in models and the tiny CLIP, registered locally."""
    return ModelRegistry(extra=(tiny_clip,))


@pytest.fixture(scope="session")
def clip_computer(clip_registry: ModelRegistry) -> object:
    """One loaded tiny CLIP (and Open-NSFW) for every engine of the session (CPU)."""
    from allmende.client.tasks.computer import TaskComputer

    return TaskComputer(clip_registry, device="cpu", batch_size=16)


@pytest.fixture(scope="session")
def stsb_sentences() -> list[str]:
    """Real English sentences from the STS-B dev split, in file order (repeats included)."""
    return [s for pair in read_stsb("dev") for s in pair[:2]]


@pytest.fixture
def coordinator_home(tmp_path: Path) -> CoordinatorHome:
    home = CoordinatorHome(tmp_path / "coordinator")
    home.init()
    return home


@pytest.fixture
def coordinator(coordinator_home: CoordinatorHome) -> Iterator[RunningCoordinator]:
    # A short drain: tests often end with leases still out.
    with serve(coordinator_home.root, "127.0.0.1:0", drain_s=0.2) as running:
        yield running


@pytest.fixture
def admin(
    coordinator: RunningCoordinator, coordinator_home: CoordinatorHome
) -> Iterator[CoordinatorClient]:
    with CoordinatorClient(coordinator.address, admin_token=coordinator_home.load_token()) as c:
        yield c


@pytest.fixture
def clip_coordinator(
    coordinator_home: CoordinatorHome, clip_registry: ModelRegistry
) -> Iterator[RunningCoordinator]:
    """A coordinator whose registry also has the tiny CLIP (registered locally)."""
    with serve(coordinator_home.root, "127.0.0.1:0", drain_s=0.2, registry=clip_registry) as c:
        yield c


@pytest.fixture
def clip_admin(
    clip_coordinator: RunningCoordinator, coordinator_home: CoordinatorHome
) -> Iterator[CoordinatorClient]:
    with CoordinatorClient(
        clip_coordinator.address, admin_token=coordinator_home.load_token()
    ) as client:
        yield client


def job_requests(
    texts: list[str],
    ids: list[str] | None = None,
    **spec: object,
) -> list[pb.CreateJobRequest]:
    """The CreateJob stream for texts (ids default to their positions)."""
    ids = ids if ids is not None else [str(i) for i in range(len(texts))]
    spec.setdefault("kind", "embed-text")
    spec.setdefault("model", "all-MiniLM-L6-v2")
    pairs = enumerate(zip(ids, texts, strict=True))
    items = [pb.InputItem(id=i, text=t, line=n + 1) for n, (i, t) in pairs]
    return [
        pb.CreateJobRequest(spec=pb.JobSpec(**spec), source_name="test"),
        pb.CreateJobRequest(items=items),
    ]


@pytest.fixture(scope="session")
def shared_computer() -> object:
    """One loaded real model for every engine in the test session (CPU)."""
    from allmende.client.tasks.computer import TaskComputer
    from allmende.protocol.models import ModelRegistry

    return TaskComputer(ModelRegistry(), device="cpu", batch_size=64)


EngineRun = Callable[..., tuple[int, list[Event]]]


@pytest.fixture
def run_volunteers(
    tmp_path: Path,
    shared_computer: object,
) -> Callable[[RunningCoordinator, int], list[tuple[int, list[Event]]]]:
    """Run N real volunteer engines (distinct keys) until idle; return (exit code, events)."""

    def run(
        coordinator: RunningCoordinator,
        count: int = 2,
        fingerprint: str | None = None,
        computer: object = None,
        registry: ModelRegistry | None = None,
        **overrides: object,
    ) -> list[tuple[int, list[Event]]]:
        """`computer` and `registry`: for models the built-in registry lacks (tiny CLIP)."""
        outcomes: list[tuple[int, list[Event]]] = [(-1, []) for _ in range(count)]

        def one(index: int) -> None:
            events: list[Event] = []
            config = EngineConfig(
                coordinator=coordinator.address,
                fingerprint=fingerprint or coordinator.coordinator.key.fingerprint,
                home=tmp_path / f"volunteer-{index}",
                device="cpu",
                exit_when_idle=True,
                give_up_after_s=30,
                **overrides,  # type: ignore[arg-type]
            )
            engine = VolunteerEngine(
                config,
                on_event=events.append,
                computer=computer or shared_computer,  # type: ignore[arg-type]
                registry=registry,
            )
            outcomes[index] = (engine.run(), events)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        return outcomes

    return run
