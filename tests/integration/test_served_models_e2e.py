"""A served model end to end: the operator adds the real all-MiniLM-L6-v2 folder under a new
name, creates an embed-text job naming it, and real volunteer engines that do not have it
download it (resuming a partial file, replacing a tampered one), check it against the
signed manifest, compute, and the job completes with the embeddings the builtin model gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from allmende.client.connection import CoordinatorClient
from allmende.client.engine import EngineConfig, Event, VolunteerEngine
from allmende.client.engine import events as ev
from allmende.coordinator.app import RunningCoordinator
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol.model_manifest import scan_folder
from allmende.v1 import allmende_pb2 as pb
from tests.conditions import wait_until
from tests.conftest import job_requests
from tests.modelfolder import minilm_folder

NAME = "minilm-served"


def run_engine(coordinator: RunningCoordinator, home: Path) -> tuple[int, list[Event]]:
    """A real volunteer engine with its own registry (builtins only) and its own computer."""
    events: list[Event] = []
    config = EngineConfig(
        coordinator=coordinator.address,
        fingerprint=coordinator.coordinator.key.fingerprint,
        home=home,
        device="cpu",
        exit_when_idle=True,
        give_up_after_s=30,
    )
    code = VolunteerEngine(config, on_event=events.append).run()
    return code, events


def run_job(
    coordinator: RunningCoordinator, admin: CoordinatorClient, texts: list[str], home: Path
) -> tuple[list[Event], dict[str, list[object]]]:
    created = admin.create_job(job_requests(texts, model=NAME, redundancy=1, gold_fraction=0.0))
    code, events = run_engine(coordinator, home)
    assert code == 0, [e for e in events if isinstance(e, (ev.Stopped, ev.UnitRefused))]
    wait_until(lambda: admin.get_job(created.job_id).state == "complete", "the job to complete")
    folder = Path(coordinator.coordinator.datasets_dir) / created.job_id
    shards = sorted(str(p) for p in folder.glob("data/*.parquet"))
    return events, pq.ParquetDataset(shards).read().to_pydict()


def of(events: list[Event], kind: type[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, kind)]


@pytest.mark.slow
def test_a_volunteer_without_the_model_fetches_resumes_and_repairs_it(
    coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome,
    admin: CoordinatorClient,
    shared_computer: object,
    stsb_sentences: list[str],
    tmp_path: Path,
) -> None:
    source = minilm_folder(tmp_path / "minilm")
    found, _ = scan_folder(source)
    requests = [
        pb.AddModelRequest(
            header=pb.AddModelHeader(
                name=NAME,
                task_kinds=["embed-text"],
                dims=384,
                max_seq_length=256,
                files=[
                    pb.ModelFileInfo(path=rel, bytes=p.stat().st_size, sha256=_sha(p))
                    for rel, p in found
                ],
            )
        )
    ]
    for rel, p in found:
        data = p.read_bytes()
        requests += [
            pb.AddModelRequest(chunk=pb.ModelFileChunk(path=rel, data=data[i : i + (4 << 20)]))
            for i in range(0, len(data), 4 << 20)
        ]
    info = admin.add_model(requests)
    pin = info.pin
    assert NAME in admin.info().models

    # 1. a fresh volunteer, with half of the weights already on disk from an interrupted run
    home = tmp_path / "volunteer"
    cache = home / "models" / pin
    cache.mkdir(parents=True)
    weights = (source / "model.safetensors").read_bytes()
    half = len(weights) // 2
    (cache / "model.safetensors.part").write_bytes(weights[:half])
    texts = stsb_sentences[:40]
    events, data = run_job(coordinator, admin, texts, home)
    fetching = of(events, ev.ModelFetching)
    ready = of(events, ev.ModelReady)
    assert len(fetching) == 1 and len(ready) == 1
    assert fetching[0].model == NAME and fetching[0].pin == pin  # type: ignore[attr-defined]
    assert ready[0].downloaded_bytes == info.bytes - half  # type: ignore[attr-defined]
    progress = of(events, ev.ModelProgress)
    assert 1 <= len(progress) <= 12  # a tenth at a time, not a line per chunk or file
    assert progress[-1].done_bytes == info.bytes  # type: ignore[attr-defined]
    for rel, p in found:
        assert (cache / rel).read_bytes() == p.read_bytes(), rel
    assert not list(cache.rglob("*.part"))
    expected = shared_computer.embedder("all-MiniLM-L6-v2").embed(  # type: ignore[attr-defined]
        [texts[int(i)] for i in data["id"]]
    )
    got = np.asarray(data["embedding"], dtype=np.float32)
    cosines = np.sum(got * expected, axis=1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cosines.min() > 0.999

    # 2. the same volunteer again: the model is cached, nothing is fetched
    events, _ = run_job(coordinator, admin, stsb_sentences[40:60], home)
    assert not of(events, ev.ModelFetching) and not of(events, ev.ModelReady)

    # 3. a cached file changed on disk: found at the next start, fetched again, nothing else
    vocab = cache / "vocab.txt"
    vocab.write_text(vocab.read_text().replace("the", "THE", 1))
    events, _ = run_job(coordinator, admin, stsb_sentences[60:80], home)
    (ready,) = of(events, ev.ModelReady)
    assert ready.downloaded_bytes == (source / "vocab.txt").stat().st_size  # type: ignore[attr-defined]
    assert vocab.read_bytes() == (source / "vocab.txt").read_bytes()


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_coordinator_computing_gold_rows_uses_its_served_models(
    coordinator_home: CoordinatorHome, stsb_sentences: list[str], tmp_path: Path
) -> None:
    from allmende.coordinator.app import serve
    from allmende.coordinator.domain.gold_model import ModelGold
    from tests.integration.test_served_models import files_of, upload

    folder = minilm_folder(tmp_path / "minilm")
    with (
        serve(
            coordinator_home.root, "127.0.0.1:0", drain_s=0.2, gold_computer=ModelGold()
        ) as running,
        CoordinatorClient(running.address, admin_token=coordinator_home.load_token()) as admin,
    ):
        requests = list(upload(NAME, files_of(folder), chunk=4 << 20))
        requests[0].header.dims, requests[0].header.max_seq_length = 384, 256
        admin.add_model(requests)
        created = admin.create_job(job_requests(stsb_sentences[:64], model=NAME, gold_fraction=0.1))
        assert running.coordinator.store.gold_count(created.job_id) > 0
