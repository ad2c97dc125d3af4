"""`allmende dataset verify --recompute --images`: a real clip-filter dataset (a coordinator
in-process with the tiny CLIP, two real volunteer engines, the dataset pulled) recomputed
from the job's own input files with the model folder given by --model-dir; forged rows
under a valid signature caught by id and column; supplied images that are not the rows'
own reported as such; rows without a supplied image counted as skipped."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from allmende.cli.main import main
from allmende.protocol.models import ModelRegistry, ModelSpec
from allmende.protocol.signing import SigningKey
from allmende.v1 import allmende_pb2 as pb
from tests.conftest import read_images
from tests.integration.research_data import make_dataset, republish, run_job

BROKEN = [("empty", b"", "a zero-byte file"), ("not-an-image", b"<html>404</html>", "a page")]


@dataclass(frozen=True)
class Made:
    folder: Path
    key: SigningKey
    rows: list[tuple[str, bytes, str]]  # (id, image, caption) as the job was given them
    shard: Path  # the job's input, a WebDataset shard as img2dataset writes one
    model_dir: Path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_shard(path: Path, rows: list[tuple[str, bytes, str]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, image, caption in rows:
            extension = "png" if image.startswith(b"\x89PNG") else "jpg"
            for name, data in ((f"{key}.{extension}", image), (f"{key}.txt", caption.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def write_parquet(path: Path, rows: list[tuple[str, bytes]]) -> None:
    pq.write_table(
        pa.table({"id": [r[0] for r in rows], "image": pa.array([r[1] for r in rows])}), path
    )


def produce(
    root: Path, kind: str, registry: ModelRegistry, computer: object, model: ModelSpec
) -> Made:
    """Run a whole `kind` job on the bundled photographs and two broken files with two real
    volunteers; return the pulled dataset and the job's input as a WebDataset shard."""
    rows = read_images() + BROKEN
    items = [
        pb.InputItem(id=i, text=caption if kind == "clip-filter" else "", image=image, line=n + 1)
        for n, (i, image, caption) in enumerate(rows)
    ]
    spec = pb.JobSpec(kind=kind, model=model.name, redundancy=2, unit_size=4)
    requests = [
        pb.CreateJobRequest(spec=spec, source_name="images"),
        pb.CreateJobRequest(items=items),
    ]
    folder, key = run_job(root, requests, computer, registry)
    shard = root / "inputs" / "00000.tar"
    shard.parent.mkdir()
    write_shard(shard, rows)
    return Made(folder, key, rows, shard, Path(model.source))


@pytest.fixture(scope="module")
def made(
    tmp_path_factory: pytest.TempPathFactory,
    clip_registry: ModelRegistry,
    clip_computer: object,
    tiny_clip: ModelSpec,
) -> Made:
    root = tmp_path_factory.mktemp("clip-recompute")
    return produce(root, "clip-filter", clip_registry, clip_computer, tiny_clip)


def verify(made: Made, folder: Path | None = None) -> list[str]:
    return [
        "dataset",
        "verify",
        str(folder or made.folder),
        "--fingerprint",
        made.key.fingerprint,
        "--device",
        "cpu",
    ]


@pytest.mark.slow
def test_an_honest_clip_filter_dataset_recomputes_clean_from_the_jobs_shard(
    capsys: pytest.CaptureFixture[str], made: Made
) -> None:
    code, out, err = run_cli(
        capsys,
        *verify(made),
        "--recompute",
        "1",
        "--json",
        "--images",
        str(made.shard),
        "--model-dir",
        str(made.model_dir),
    )
    assert code == 0, out + err
    report = json.loads(out)
    found = report["recompute"]
    assert report["ok"] is True
    assert found["kind"] == "clip-filter"
    # Every row, the broken images' too (their status, size and sha256 recomputed).
    assert found["rows_checked"] == found["rows_total"] == len(made.rows)
    assert (found["rows_skipped"], found["image_mismatches"], found["disagreements"]) == (0, [], [])
    assert found["lowest_agreement"] > 0.9999
    # The shard's folder works as well, and the text report says so.
    code, out, _ = run_cli(
        capsys,
        *verify(made),
        "--recompute-rows",
        "4",
        "--images",
        str(made.shard.parent),
        "--model-dir",
        str(made.model_dir),
    )
    assert code == 0
    assert f"recomputed 4 of {len(made.rows)} rows" in out
    assert "every recomputed row agrees" in out


@pytest.mark.slow
def test_forged_similarity_punsafe_and_status_are_caught_by_id_and_column(
    capsys: pytest.CaptureFixture[str], made: Made, tmp_path: Path
) -> None:
    forged = tmp_path / "forged"
    shutil.copytree(made.folder, forged)
    changed: set[tuple[str, str]] = set()

    def forge(columns: dict[str, list[object]]) -> None:
        ok = [n for n, s in enumerate(columns["status"]) if s == "ok"]
        broken = [n for n, s in enumerate(columns["status"]) if s == "undecodable"]
        a, b, c = ok[0], ok[1], broken[0]
        similarity = float(columns["similarity"][a])  # type: ignore[arg-type]
        columns["similarity"][a] = similarity + 0.1 if similarity < 0.5 else similarity - 0.1
        punsafe = float(columns["punsafe"][b])  # type: ignore[arg-type]
        columns["punsafe"][b] = punsafe + 0.3 if punsafe < 0.5 else punsafe - 0.3
        columns["status"][c] = "too-large"
        changed.update(
            {
                (str(columns["id"][a]), "similarity"),
                (str(columns["id"][b]), "punsafe"),
                (str(columns["id"][c]), "status"),
            }
        )

    republish(forged, made.key, forge)
    code, _, err = run_cli(capsys, *verify(made, forged))
    assert code == 0, err  # the signature and every checksum vouch for the forgery
    code, out, err = run_cli(
        capsys,
        *verify(made, forged),
        "--recompute",
        "1",
        "--json",
        "--images",
        str(made.shard),
        "--model-dir",
        str(made.model_dir),
    )
    assert code == 1
    found = json.loads(out)["recompute"]
    assert {(d["id"], d["column"]) for d in found["disagreements"]} == changed
    assert found["image_mismatches"] == [] and found["rows_checked"] == len(made.rows)
    code, out, err = run_cli(
        capsys,
        *verify(made, forged),
        "--recompute",
        "1",
        "--images",
        str(made.shard),
        "--model-dir",
        str(made.model_dir),
    )
    assert code == 1
    for item, column in changed:
        assert f"disagrees: row {item} column {column}" in out
    assert "3 row(s) that disagree" in err


@pytest.mark.slow
def test_other_images_are_reported_and_rows_without_images_are_skipped(
    capsys: pytest.CaptureFixture[str], made: Made, tmp_path: Path
) -> None:
    ids = [r[0] for r in made.rows]
    images = {r[0]: r[1] for r in made.rows}
    wrong, missing = ids[0], ids[1:3]
    other = images[ids[3]]
    supplied = [(i, other if i == wrong else images[i]) for i in ids if i not in missing]
    folder = tmp_path / "supplied"
    folder.mkdir()
    write_parquet(folder / "images.parquet", supplied)
    args = [*verify(made), "--recompute", "1", "--model-dir", str(made.model_dir)]
    code, out, err = run_cli(capsys, *args, "--images", str(folder), "--json")
    assert code == 1, err
    report = json.loads(out)
    found = report["recompute"]
    assert report["ok"] is False
    assert found["image_mismatches"] == [
        {
            "id": wrong,
            "supplied_sha256": hashlib.sha256(other).hexdigest(),
            "row_sha256": hashlib.sha256(images[wrong]).hexdigest(),
        }
    ]
    assert found["rows_skipped"] == len(missing)
    assert found["rows_checked"] == len(ids) - 1 - len(missing)
    assert found["disagreements"] == []  # not the model's fault: nothing disagrees
    code, out, err = run_cli(capsys, *args, "--images", str(folder / "images.parquet"))
    assert code == 1
    assert f"not the image this row was computed from: row {wrong}" in out
    assert f"skipped {len(missing)} sampled row(s) without a supplied image" in out
    assert "every recomputed row agrees" in out
    assert "1 supplied image(s) are not the images" in err
    # An image is found by its sha256 whatever id it comes with (a duplicate row, a file
    # renamed since): the same images under other ids recompute every row.
    renamed = tmp_path / "renamed.parquet"
    write_parquet(renamed, [(f"other-{n}", images[i]) for n, i in enumerate(ids)])
    code, out, err = run_cli(capsys, *args, "--images", str(renamed), "--json")
    found = json.loads(out)["recompute"]
    assert code == 0, err
    assert (found["rows_checked"], found["rows_skipped"]) == (len(ids), 0)
    # Without --images nothing can be recomputed: every sampled row is skipped.
    code, out, _ = run_cli(capsys, *args, "--json")
    found = json.loads(out)["recompute"]
    assert code == 0
    assert (found["rows_checked"], found["rows_skipped"]) == (0, len(ids))


@pytest.mark.slow
def test_the_model_folder_must_be_the_one_the_dataset_pins(
    capsys: pytest.CaptureFixture[str], made: Made, tmp_path: Path
) -> None:
    args = [*verify(made), "--recompute", "1", "--images", str(made.shard)]
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert "--model-dir: expected the folder of model" in err
    assert "which this install does not know" in err
    other = tmp_path / "other-model"
    shutil.copytree(made.model_dir, other)
    with (other / "model.safetensors").open("ab") as fh:
        fh.write(b"\0")
    code, _, err = run_cli(capsys, *args, "--model-dir", str(other))
    assert code == 2
    assert f"{other} holds other files" in err and "--model-dir" in err
    code, _, err = run_cli(capsys, *args, "--model-dir", str(tmp_path / "nowhere"))
    assert code == 2 and "--model-dir: expected a model folder" in err


@pytest.mark.slow
def test_bad_image_input_exits_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], made: Made, tmp_path: Path, shared_computer: object
) -> None:
    args = [*verify(made), "--recompute", "1", "--model-dir", str(made.model_dir)]
    code, _, err = run_cli(capsys, *args, "--images", str(tmp_path / "missing.tar"))
    assert code == 2 and "--images: expected an existing .tar, .parquet or folder" in err
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file" * 100)
    code, _, err = run_cli(capsys, *args, "--images", str(garbage))
    assert code == 2 and "--images: expected a readable tar file (garbage.tar" in err
    no_image = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"id": ["a"]}), no_image)
    code, _, err = run_cli(capsys, *args, "--images", str(no_image))
    assert code == 2 and "--images: expected a .parquet with columns id and image" in err
    code, _, err = run_cli(capsys, *verify(made), "--images", str(made.shard))
    assert code == 2 and "--images: used with --recompute" in err
    texts, text_key = make_dataset(
        tmp_path / "text", shared_computer, ["one", "two"], ["a", "b"], unit_size=2
    )
    code, _, err = run_cli(
        capsys,
        "dataset",
        "verify",
        str(texts),
        "--fingerprint",
        text_key.fingerprint,
        "--recompute",
        "1",
        "--images",
        str(made.shard),
    )
    assert code == 2
    assert "--images: expected a dataset whose rows take images; embed-text rows take text" in err


@pytest.mark.slow
def test_an_embed_image_dataset_recomputes_and_a_swapped_embedding_is_caught(
    capsys: pytest.CaptureFixture[str],
    tmp_path_factory: pytest.TempPathFactory,
    clip_registry: ModelRegistry,
    clip_computer: object,
    tiny_clip: ModelSpec,
) -> None:
    made = produce(
        tmp_path_factory.mktemp("embed-image"),
        "embed-image",
        clip_registry,
        clip_computer,
        tiny_clip,
    )
    args = [
        "--recompute",
        "1",
        "--json",
        "--images",
        str(made.shard),
        "--model-dir",
        str(made.model_dir),
    ]
    code, out, err = run_cli(capsys, *verify(made), *args)
    assert code == 0, out + err
    found = json.loads(out)["recompute"]
    assert found["kind"] == "embed-image" and found["disagreements"] == []
    assert found["rows_checked"] == found["rows_total"] == len(made.rows)
    forged = tmp_path_factory.mktemp("embed-image-forged") / "dataset"
    shutil.copytree(made.folder, forged)
    victim = ""

    def swap(columns: dict[str, list[object]]) -> None:
        nonlocal victim
        ok = [n for n, s in enumerate(columns["status"]) if s == "ok"]
        victim = str(columns["id"][ok[0]])
        columns["image_embedding"][ok[0]] = columns["image_embedding"][ok[1]]

    republish(forged, made.key, swap)
    code, out, err = run_cli(capsys, *verify(made, forged), *args)
    assert code == 1
    found = json.loads(out)["recompute"]
    assert [(d["id"], d["column"]) for d in found["disagreements"]] == [(victim, "image_embedding")]
