"""A pulled dataset as a researcher meets it: opened by path in pyarrow, pandas, HF datasets,
DuckDB and polars; its card and Parquet metadata; honest provenance per row; what it cost;
pulls that reuse and resume; cancelled jobs; takedowns and the chain of versions.

A real coordinator in-process on port 0 and raw volunteers speaking the real protocol (cheap
hash vectors: these tests are about the dataset, not the model). Shards of 4 rows, so that a
takedown changes one shard of several.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from allmende.api.dataset import PullStats, pull
from allmende.cli.main import main
from allmende.client.connection import CoordinatorClient
from allmende.coordinator.app import serve
from allmende.coordinator.domain import assimilate
from allmende.coordinator.domain.coordinator import Coordinator
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol.errors import IntegrityError
from allmende.protocol.manifest import (
    CARD_PATH,
    MANIFEST_PATH,
    sha256_file,
    verify_folder,
    version_dir,
)
from allmende.protocol.models import ModelRegistry
from allmende.v1 import allmende_pb2 as pb
from tests.conftest import job_requests
from tests.integration.volunteers import HashComputer, RawVolunteer

TEXTS = [f"a sentence about the commons, number {i}" for i in range(12)]
MODEL_SHA = ModelRegistry().get("all-MiniLM-L6-v2").weights_sha256


@dataclass
class Served:
    address: str
    fingerprint: str
    token: Path
    admin: CoordinatorClient
    quorum_job: str  # redundancy 2, tau changed after its first unit
    solo_job: str  # redundancy 1
    datasets: Path
    coordinator: Coordinator


def finish(admin: CoordinatorClient, job_id: str, volunteers: list[RawVolunteer],
           after_first: Any = None) -> None:
    """Lease and submit honest results round the volunteers until the job completes."""
    accepted = 0
    for _ in range(200):
        if admin.get_job(job_id).state == "complete":
            return
        for volunteer in volunteers:
            held = volunteer.lease()
            if held is None:
                continue
            lease, unit = held
            response = volunteer.submit(lease, unit, HashComputer().compute(unit))
            if response.status == "accepted":
                accepted += 1
                if accepted == 1 and after_first is not None:
                    after_first()
        deadline = time.monotonic() + 5
        while admin.get_job(job_id).state == "assimilating" and time.monotonic() < deadline:
            time.sleep(0.02)
    raise AssertionError(admin.get_job(job_id))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("served")
    home = CoordinatorHome(root / "coordinator")
    home.init()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(assimilate, "ROWS_PER_SHARD", 4)
        with serve(home.root, "127.0.0.1:0", drain_s=0.2) as running, CoordinatorClient(
            running.address, admin_token=home.load_token()
        ) as admin:
            volunteers = [RawVolunteer(admin) for _ in range(3)]
            for volunteer in volunteers:
                volunteer.register()
            quorum = admin.create_job(job_requests(
                TEXTS, redundancy=2, unit_size=4, gold_fraction=0.0, license="cc-by-4.0",
                name="commons sentences",
            )).job_id
            finish(admin, quorum, volunteers, after_first=lambda: admin.update_job(
                pb.UpdateJobRequest(job_id=quorum, tau=0.998)))
            solo = admin.create_job(job_requests(
                TEXTS[:4], [f"s{i}" for i in range(4)], redundancy=1, unit_size=4,
                gold_fraction=0.0,
            )).job_id
            finish(admin, solo, volunteers)
            yield Served(running.address, running.coordinator.key.fingerprint,
                         home.token_path, admin, quorum, solo,
                         Path(running.coordinator.datasets_dir), running.coordinator)


@pytest.fixture(scope="module")
def folder(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pulled") / "commons"
    pull(served.admin, served.quorum_job, served.fingerprint, out)
    return out


def manifest_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST_PATH).read_bytes())


# ---------------------------------------------------------------- layout and tools


def test_the_folder_has_data_and_allmende_files_only(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == ["_allmende", "data"]
    assert len(list((folder / "data").glob("part-*.parquet"))) == 3
    assert sorted(p.name for p in (folder / "_allmende").iterdir()) == [
        "README.md", "manifest.json", "manifest.sig"]


def test_pyarrow_and_pandas_open_the_folder_by_its_path(folder: Path) -> None:
    import pandas as pd
    import pyarrow.dataset as ds

    dataset = ds.dataset(folder)
    assert dataset.count_rows() == len(TEXTS)
    assert dataset.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert len(pd.read_parquet(folder)) == len(TEXTS)


def test_hf_datasets_opens_the_folder_by_its_path(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    train = loaded["train"]
    assert train.num_rows == len(TEXTS)
    assert train.features["embedding"].length == 384
    assert sorted(train["id"]) == sorted(str(i) for i in range(len(TEXTS)))


def test_duckdb_and_polars_open_the_folder_by_a_path_glob(folder: Path) -> None:
    import duckdb
    import polars as pl

    glob = f"{folder}/**/*.parquet"
    db = duckdb.connect()
    assert db.execute(f"SELECT count(*) FROM '{glob}'").fetchone() == (len(TEXTS),)
    # DuckDB reads Parquet lists as variable lists (it keeps no array size in Parquet); the
    # card says to cast, and the cast works on every row.
    low = db.execute(
        f"SELECT min(array_cosine_similarity(embedding::FLOAT[384], embedding::FLOAT[384])) "
        f"FROM '{glob}'"
    ).fetchone()
    assert low is not None and low[0] == pytest.approx(1.0, abs=1e-5)
    assert pl.scan_parquet(glob).select(pl.len()).collect().item() == len(TEXTS)


def test_parquet_metadata_carry_the_recipe_and_the_manifest_reference(
    folder: Path, served: Served
) -> None:
    shard = next((folder / "data").glob("*.parquet"))
    note = json.loads(pq.ParquetFile(shard).schema_arrow.metadata[b"allmende"])
    assert note["manifest"] == MANIFEST_PATH and note["card"] == CARD_PATH
    assert note["job_id"] == served.quorum_job
    assert note["coordinator_fingerprint"] == served.fingerprint
    recipe = note["recipe"]
    assert recipe["pooling"] == "mean" and recipe["max_seq_length"] == 256
    assert recipe["normalisation"] == "embedding: unit L2 norm"
    assert recipe["weights_sha256"] == MODEL_SHA
    assert recipe == manifest_of(folder)["recipe"]


def test_the_card_says_what_the_dataset_is(folder: Path) -> None:
    text = (folder / CARD_PATH).read_text()
    _, header, prose = text.split("---\n", 2)
    meta = yaml.safe_load(header)
    assert meta["license"] == "cc-by-4.0"
    assert meta["task_categories"] == ["feature-extraction"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["language"] == ["en"]
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}
    ]
    for section in ("## How it was made", "## The job's rules", "## Verification",
                    "## Statistics", "## What it cost", "## Known limits", "## How to verify",
                    "## How to cite"):
        assert section in prose
    assert "pooling: mean" in prose and "max_seq_length: 256" in prose
    assert manifest_of(folder)["card"]["sha256"] == sha256_file(folder / CARD_PATH)


# ---------------------------------------------------------------- provenance and cost


def test_quorum_rows_state_replicas_agreement_and_the_tau_of_their_decision(
    folder: Path,
) -> None:
    rows = pq.read_table(folder / "data").to_pylist()
    assert {r["verified_by"] for r in rows} == {"quorum"}
    assert all(r["replicas"] >= 2 and r["agreement"] >= 0.998 for r in rows)
    assert {r["model_sha256"] for r in rows} == {MODEL_SHA}
    assert {r["gold_passed"] for r in rows} == {0}
    # The first unit was decided under 0.999, the later ones after `job set --tau 0.998`.
    taus = sorted({round(r["tau"], 4) for r in rows})
    assert taus == [0.998, 0.999]
    manifest = manifest_of(folder)
    history = manifest["tau_history"]
    assert [h["tau"] for h in history] == [0.999, 0.998]
    assert history[0]["ms"] < history[1]["ms"]
    assert manifest["verification"] == {"quorum": len(TEXTS)}
    assert manifest["license"] == "cc-by-4.0"


def test_solo_rows_have_no_made_up_agreement(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "solo"
    pull(served.admin, served.solo_job, served.fingerprint, out)
    rows = pq.read_table(out / "data").to_pylist()
    assert {r["verified_by"] for r in rows} == {"solo"}
    assert {r["replicas"] for r in rows} == {1}
    assert {r["agreement"] for r in rows} == {None}
    manifest = manifest_of(out)
    assert manifest["min_agreement"] is None
    assert manifest["license"] == "unknown"
    assert "license: unknown" in (out / CARD_PATH).read_text()


def test_manifest_and_card_state_what_the_dataset_cost(folder: Path, served: Served) -> None:
    manifest = manifest_of(folder)
    cost = manifest["cost"]
    job = served.admin.get_job(served.quorum_job)
    assert cost["results"] == job.results_received
    assert cost["items_computed"] >= 2 * len(TEXTS)
    assert cost["rows_accepted"] == len(TEXTS)
    assert cost["redundancy_overhead"] == pytest.approx(cost["items_computed"] / len(TEXTS),
                                                        abs=1e-4)
    # The raw volunteers report 1 ms per result and no energy.
    assert cost["volunteer_seconds"] == pytest.approx(job.results_received / 1000)
    assert manifest["energy"]["results_reporting"] == 0
    card = (folder / CARD_PATH).read_text()
    assert f"redundancy overhead (computed ÷ accepted): {cost['redundancy_overhead']}" in card
    assert "energy: not measured by any volunteer" in card


# ---------------------------------------------------------------- pulls


def test_a_second_pull_downloads_nothing(folder: Path, served: Served, tmp_path: Path) -> None:
    copy = tmp_path / "again"
    shutil.copytree(folder, copy)
    stats = PullStats()
    pull(served.admin, served.quorum_job, served.fingerprint, copy, stats=stats)
    assert stats.downloaded_bytes == 0
    assert stats.reused == 4  # three shards and the card


def test_an_interrupted_pull_continues_where_it_stopped(
    folder: Path, served: Served, tmp_path: Path
) -> None:
    copy = tmp_path / "interrupted"
    shutil.copytree(folder, copy)
    shard = sorted((copy / "data").glob("*.parquet"))[1]
    whole = shard.read_bytes()
    shard.unlink()
    (shard.parent / f".{shard.name}.part").write_bytes(whole[: len(whole) // 2])
    stats = PullStats()
    report = pull(served.admin, served.quorum_job, served.fingerprint, copy, stats=stats)
    assert (stats.resumed, stats.fetched) == (1, 1)
    assert stats.downloaded_bytes == len(whole) - len(whole) // 2
    assert shard.read_bytes() == whole and report.rows == len(TEXTS)
    assert not list((copy / "data").glob(".*.part"))


def test_a_partial_file_that_is_not_the_shard_fails_and_is_dropped(
    folder: Path, served: Served, tmp_path: Path
) -> None:
    copy = tmp_path / "garbled"
    shutil.copytree(folder, copy)
    shard = sorted((copy / "data").glob("*.parquet"))[0]
    size = shard.stat().st_size
    shard.unlink()
    part = shard.parent / f".{shard.name}.part"
    part.write_bytes(b"\x00" * (size // 2))
    with pytest.raises(IntegrityError, match=f"{shard.name}: downloaded sha256"):
        pull(served.admin, served.quorum_job, served.fingerprint, copy)
    assert not part.exists() and not shard.exists()
    pull(served.admin, served.quorum_job, served.fingerprint, copy)  # starts afresh
    assert shard.stat().st_size == size


def test_cli_pull_in_parallel_prints_plain_progress_lines_off_a_terminal(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    code = main(["dataset", "pull", served.quorum_job, "--coordinator", served.address,
                 "--fingerprint", served.fingerprint, "--out", str(out), "--jobs", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err.count("sha256 ok") == 4
    assert "version 1" in captured.out
    assert verify_folder(out, served.fingerprint).rows == len(TEXTS)


def test_pulling_a_cancelled_job_says_so_with_its_reason(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = served.admin.create_job(job_requests(["never computed"], redundancy=1)).job_id
    served.admin.cancel_job(job_id)
    code = main(["dataset", "pull", job_id, "--coordinator", served.address,
                 "--fingerprint", served.fingerprint, "--out", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"job {job_id} was cancelled" in err and "will not have one" in err
    assert "not ready" not in err


# ---------------------------------------------------------------- versions and takedowns


def write_ids(path: Path, ids: list[str]) -> Path:
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


def snapshot(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): sha256_file(p) for p in path.rglob("*") if p.is_file()}


def test_removing_rows_the_job_never_had_changes_nothing(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(served.datasets / served.solo_job)
    ids = write_ids(tmp_path / "ids.txt", ["s1", "no-such-row"])
    code = main(["dataset", "remove", served.solo_job, "--ids", str(ids), "--reason", "x",
                 "--admin-token-file", str(served.token), "--coordinator", served.address])
    err = capsys.readouterr().err
    assert code == 2
    assert "ids" in err and "'no-such-row'" in err and "1 id(s) are not rows" in err
    code = main(["dataset", "remove", served.solo_job, "--ids", str(ids), "--reason", " ",
                 "--admin-token-file", str(served.token), "--coordinator", served.address])
    assert code == 2 and "--reason" in capsys.readouterr().err
    code = main(["dataset", "remove", served.solo_job, "--ids", str(tmp_path / "missing"),
                 "--reason", "x", "--admin-token-file", str(served.token),
                 "--coordinator", served.address])
    assert code == 2 and "--ids" in capsys.readouterr().err
    running = served.admin.create_job(job_requests(["still running"], redundancy=1)).job_id
    code = main(["dataset", "remove", running, "--ids", str(ids), "--reason", "x",
                 "--admin-token-file", str(served.token), "--coordinator", served.address])
    err = capsys.readouterr().err
    assert code == 1 and f"job {running} is running; it has no dataset" in err
    served.admin.cancel_job(running)
    assert snapshot(served.datasets / served.solo_job) == before
    assert not [p for p in served.datasets.iterdir() if p.name.startswith(".")]


def test_a_takedown_publishes_a_version_that_pulls_only_the_changed_shard(
    served: Served, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "versions"
    shutil.copytree(folder, copy)
    first = manifest_of(copy)
    first_bytes = (copy / MANIFEST_PATH).read_bytes()
    shards = sorted(p.name for p in (copy / "data").glob("*.parquet"))
    in_first = pq.read_table(copy / "data" / shards[0], columns=["id"]).column("id").to_pylist()
    ids = write_ids(tmp_path / "ids.txt", in_first[:2])
    code = main(["dataset", "remove", served.quorum_job, "--ids", str(ids), "--reason",
                 "asked by the texts' author", "--admin-token-file", str(served.token),
                 "--coordinator", served.address, "--json"])
    out = capsys.readouterr().out
    assert code == 0
    done = json.loads(out)
    assert (done["version"], done["rows_removed"], done["rows"]) == (2, 2, len(TEXTS) - 2)

    stats = PullStats()
    report = pull(served.admin, served.quorum_job, served.fingerprint, copy, stats=stats)
    assert report.version == 2 and report.rows == len(TEXTS) - 2
    assert stats.reused == 2 and stats.fetched == 2  # the two other shards; shard 0 + card
    now = sorted(p.name for p in (copy / "data").glob("*.parquet"))
    assert now[1:] == shards[1:] and now[0] != shards[0] and now[0].startswith("part-00000-")
    second = manifest_of(copy)
    assert second["version"]["previous"] == {
        "number": 1,
        "manifest_sha256": hashlib.sha256(first_bytes).hexdigest(),
        "merkle_root": first["merkle_root"],
    }
    assert second["version"]["removed"][0]["ids"] == sorted(in_first[:2])
    assert second["version"]["removed"][0]["reason"] == "asked by the texts' author"
    assert (version_dir(copy, 1) / "manifest.json").read_bytes() == first_bytes
    assert second["cost"] == first["cost"]  # what it cost to make stays stated
    assert "2 row(s) removed: asked by the texts' author" in (copy / CARD_PATH).read_text()
    remaining = pq.read_table(copy / "data", columns=["id"]).column("id").to_pylist()
    assert not set(in_first[:2]) & set(remaining)

    code = main(["dataset", "versions", served.quorum_job, "--coordinator", served.address,
                 "--fingerprint", served.fingerprint, "--json"])
    listed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [v["version"] for v in listed] == [2, 1]
    assert listed[0]["removed"] == [{"rows": 2, "reason": "asked by the texts' author"}]

    # Removing the same rows again: they are no longer rows of the dataset.
    code = main(["dataset", "remove", served.quorum_job, "--ids", str(ids), "--reason", "again",
                 "--admin-token-file", str(served.token), "--coordinator", served.address])
    assert code == 2 and "removed before" in capsys.readouterr().err

    # The chain of versions is checked: a gap, then a forged link.
    gap = tmp_path / "gap"
    shutil.copytree(copy, gap)
    shutil.rmtree(version_dir(gap, 1))
    code = main(["dataset", "verify", str(gap), "--fingerprint", served.fingerprint])
    assert code == 1 and "versions/1/manifest.json is missing" in capsys.readouterr().err
    forged = tmp_path / "forged"
    shutil.copytree(copy, forged)
    older = version_dir(forged, 1) / "manifest.json"
    older.write_bytes(older.read_bytes().replace(b'"rows": 12', b'"rows": 13'))
    code = main(["dataset", "verify", str(forged), "--fingerprint", served.fingerprint])
    assert code == 1 and "forged link" in capsys.readouterr().err


def test_a_takedown_outlives_writing_the_dataset_again(served: Served) -> None:
    """A job re-verified after a quarantine is assimilated again: the new version continues
    the chain and still leaves out every row withdrawn before."""
    c = served.coordinator
    job = c.store.get_job(served.quorum_job)
    assert job is not None
    folder = served.datasets / served.quorum_job
    before = json.loads((folder / MANIFEST_PATH).read_bytes())
    withdrawn = before["version"]["removed"][0]["ids"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(assimilate, "ROWS_PER_SHARD", 4)
        assimilate.assimilate(c.store, c.key, job, served.datasets, c.clock(), c.key_chain)
    report = verify_folder(folder, served.fingerprint)
    assert report.version == 3 and report.rows == len(TEXTS) - len(withdrawn)
    ids = pq.read_table(folder / "data", columns=["id"]).column("id").to_pylist()
    assert not set(withdrawn) & set(ids)
    after = json.loads((folder / MANIFEST_PATH).read_bytes())
    assert after["version"]["removed"] == before["version"]["removed"]
    assert after["version"]["previous"]["number"] == 2
