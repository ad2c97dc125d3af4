"""URL rows through a real coordinator (gRPC on port 0, SQLite): job create from a Parquet
file of URLs and from a WebDataset shard whose KEY.json names each image's source, bad URLs
refused with nothing stored, units of URL jobs leased only to volunteers that fetch, the
result checks on fetched and byte rows, and the `unstable` settlement: replicas that fetched
different bytes make the row unstable (nobody's fault), agreeing replicas publish it with
its URL.

Results are hand-made and signed by raw volunteers (tests/integration/rawclient.py): what a
fetching volunteer computes is the volunteer side's to test; here the coordinator is judged
on what it is sent."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from allmende.api.channel import RemoteError
from allmende.api.dataset import pull
from allmende.api.export import export_clip_retrieval
from allmende.cli.recompute_out import as_json
from allmende.client.connection import CoordinatorClient
from allmende.coordinator.app import RunningCoordinator, serve
from allmende.coordinator.domain.gold_model import ModelGold
from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol.kinds import get_kind
from allmende.protocol.kinds.base import ResultShape
from allmende.protocol.kinds.image_inputs import OK, STATUS_LABELS, UNSTABLE
from allmende.protocol.manifest import CARD_PATH, verify_folder
from allmende.protocol.models import ModelRegistry, ModelSpec
from allmende.protocol.wire import WorkUnit, decode_unit
from allmende.research.folder import read_manifest
from allmende.research.recompute import recompute
from allmende.v1 import allmende_pb2 as pb
from tests.conftest import read_images
from tests.integration.rawclient import RawVolunteer
from tests.integration.test_clip_filter import cli, wait_for


@pytest.fixture
def url_coordinator(
    coordinator_home: CoordinatorHome, clip_registry: ModelRegistry
) -> Iterator[RunningCoordinator]:
    # Any agreeing quorum is accepted (no proven volunteers needed), units are always
    # replicated, and refused results in one test do not quarantine its volunteer.
    policy = TrustPolicy(proven_streak=0, adaptive=False, fault_limit=100)
    with serve(
        coordinator_home.root, "127.0.0.1:0", drain_s=0.2, registry=clip_registry, policy=policy
    ) as c:
        yield c


@pytest.fixture
def admin(
    url_coordinator: RunningCoordinator, coordinator_home: CoordinatorHome
) -> Iterator[CoordinatorClient]:
    with CoordinatorClient(
        url_coordinator.address, admin_token=coordinator_home.load_token()
    ) as client:
        yield client


@pytest.fixture
def volunteers(url_coordinator: RunningCoordinator) -> Iterator[list[RawVolunteer]]:
    made = [RawVolunteer(url_coordinator.address) for _ in range(3)]
    for v in made:
        v.register()
    yield made
    for v in made:
        v.close()


def url(name: str) -> str:
    return f"https://images.example.org/{name}.jpg"


def create(admin: CoordinatorClient, items: list[pb.InputItem], model: str, **spec: object) -> str:
    requests = [
        pb.CreateJobRequest(
            spec=pb.JobSpec(kind="clip-filter", model=model, **spec),
            source_name="urls",  # type: ignore[arg-type]
        ),
        pb.CreateJobRequest(items=items),
    ]
    return str(admin.create_job(requests).job_id)


def lease(v: RawVolunteer, fetch_urls: bool) -> pb.LeaseWorkResponse:
    request = pb.LeaseWorkRequest(volunteer_id=v.volunteer_id, fetch_urls=fetch_urls)
    return v.stub.LeaseWork(request, timeout=20, metadata=v.signed("LeaseWork", request))


def crafted(unit: WorkUnit, shape: ResultShape, fetched: dict[str, bytes]) -> np.ndarray:
    """An honest-looking result: per row one unit vector (seeded by its caption) as both
    embeddings, so the similarity is 1; each byte row's true sha256; for a URL row the
    digest of what `fetched` says this volunteer got there."""
    parts = {c.name: p for c, _, p in shape.columns}
    dims = parts["image_embedding"].stop - parts["image_embedding"].start
    matrix = np.zeros((unit.rows, shape.width), dtype=np.float32)
    for i in range(unit.rows):
        seed = int.from_bytes(hashlib.sha256(unit.texts[i].encode()).digest()[:8], "little")
        vector = np.random.default_rng(seed).standard_normal(dims)
        vector /= np.linalg.norm(vector)
        got = fetched.get(unit.url(i), b"the same bytes") if unit.url(i) else unit.images[i]
        matrix[i, parts["image_embedding"]] = vector
        matrix[i, parts["text_embedding"]] = vector
        matrix[i, parts["similarity"]] = 1.0
        matrix[i, parts["width"]] = 64
        matrix[i, parts["height"]] = 48
        matrix[i, parts["image_sha256"]] = np.frombuffer(hashlib.sha256(got).digest(), np.uint8)
        matrix[i, parts["punsafe"]] = 0.1
        matrix[i, parts["status"]] = OK
    return matrix


def send(
    v: RawVolunteer, leased: pb.Lease, shape: ResultShape, matrix: np.ndarray
) -> pb.SubmitResultResponse:
    blob, signature, payload = v.result(
        leased, matrix=matrix, payload=shape.encode(matrix), columns=shape.layouts
    )
    return v.submit(blob, signature, payload)


def test_jobs_of_url_rows_are_created_from_parquet_and_shards_and_bad_urls_refused(
    url_coordinator: RunningCoordinator,
    admin: CoordinatorClient,
    coordinator_home: CoordinatorHome,
    tiny_clip: ModelSpec,
    tmp_path: Path,
) -> None:
    base = [
        "job",
        "create",
        "--coordinator",
        url_coordinator.address,
        "--admin-token-file",
        str(coordinator_home.token_path),
        "--model",
        tiny_clip.name,
        "--kind",
        "clip-filter",
    ]
    urls = tmp_path / "urls.parquet"
    names = [url("a"), url("b"), url("a")]  # the third is the first again: computed once
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "x"], "url": names}), urls)
    done = cli(*base, "--input", str(urls))
    assert done.returncode == 0, done.stderr
    job = admin.get_job(done.stdout.strip())
    assert job.items == 3 and job.unique_items == 2

    rows = read_images()[:2]
    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w") as tar:
        for n, (_, image, caption) in enumerate(rows):
            meta = json.dumps({"url": url(f"src{n}"), "key": f"{n:09d}"}).encode()
            for name, data in (
                (f"{n:09d}.jpg", image),
                (f"{n:09d}.txt", caption.encode()),
                (f"{n:09d}.json", meta),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    done = cli(*base, "--input", str(shard))
    assert done.returncode == 0, done.stderr
    assert admin.get_job(done.stdout.strip()).items == 2

    # The coordinator checks every URL itself (a client other than the CLI may send any):
    # a bad one names the field and the line, and nothing is stored.
    before = len(admin.list_jobs())
    bad = [
        (pb.InputItem(id="a", text="t", line=1, url="gopher://e.org/x"), "url", "http or https"),
        (pb.InputItem(id="a", text="t", line=1, url="https://e.org/a b"), "url", "whitespace"),
        (pb.InputItem(id="a", text="t", line=1, url="https://"), "url", "a host"),
        (
            pb.InputItem(id="a", text="t", line=1, image=b"x", source_url="ftp://e.org/x"),
            "source_url",
            "http or https",
        ),
        (pb.InputItem(id="a", text="t", line=1, image=b"x", url=url("x")), "image", "not both"),
    ]
    good = pb.InputItem(id="ok", text="t", line=2, url=url("ok"))
    for item, field, needle in bad:
        with pytest.raises(RemoteError) as info:
            create(admin, [item, good], tiny_clip.name)
        message = str(info.value)
        assert "INVALID_ARGUMENT" in message and f"{field}: expected" in message, message
        assert needle in message and "(line 1)" in message, message
    assert len(admin.list_jobs()) == before


def test_url_jobs_are_leased_only_to_volunteers_that_fetch(
    admin: CoordinatorClient, volunteers: list[RawVolunteer], tiny_clip: ModelSpec
) -> None:
    plain, fetcher, _ = volunteers
    create(admin, [pb.InputItem(id="a", text="t", line=1, url=url("a"))], tiny_clip.name)
    answer = lease(plain, fetch_urls=False)
    assert not answer.HasField("lease") and not answer.work_remaining
    assert "--fetch-urls" in answer.notice
    answer = lease(fetcher, fetch_urls=True)
    assert answer.HasField("lease")
    assert decode_unit(answer.lease.unit.unit).urls == (url("a"),)
    # A job of image bytes goes to both: the volunteer that does not fetch gets it.
    rows = read_images()[:1]
    items = [pb.InputItem(id=i, text=c, image=b, line=1) for i, b, c in rows]
    byte_job = create(admin, items, tiny_clip.name)
    answer = lease(plain, fetch_urls=False)
    assert answer.HasField("lease") and decode_unit(answer.lease.unit.unit).job_id == byte_job
    assert decode_unit(answer.lease.unit.unit).urls == ()


def test_results_are_checked_on_fetched_and_byte_rows(
    admin: CoordinatorClient, volunteers: list[RawVolunteer], tiny_clip: ModelSpec
) -> None:
    image = read_images()[0][1]
    items = [
        pb.InputItem(id="fetched", text="one", line=1, url=url("a")),
        pb.InputItem(id="bytes", text="two", line=2, image=image),
    ]
    create(admin, items, tiny_clip.name, gold_fraction=0.0)
    v = volunteers[0]
    leased = lease(v, fetch_urls=True).lease
    unit = decode_unit(leased.unit.unit)
    shape = get_kind("clip-filter").shape(tiny_clip, "float16")
    status = {c.name: p for c, _, p in shape.columns}["status"]
    sha = {c.name: p for c, _, p in shape.columns}["image_sha256"]
    fetched_row = unit.urls.index(url("a"))
    byte_row = 1 - fetched_row
    honest = crafted(unit, shape, {})

    claimed = honest.copy()
    claimed[fetched_row, status] = UNSTABLE
    with pytest.raises(grpc.RpcError) as info:
        send(v, leased, shape, claimed)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'unstable' is set by the coordinator" in (info.value.details() or "")

    on_bytes = honest.copy()
    on_bytes[byte_row, status] = STATUS_LABELS.index("unreachable")
    with pytest.raises(grpc.RpcError) as info:
        send(v, leased, shape, on_bytes)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"row {byte_row} was sent with its bytes" in (info.value.details() or "")

    wrong = honest.copy()
    wrong[byte_row, sha] = np.frombuffer(hashlib.sha256(b"other").digest(), np.uint8)
    with pytest.raises(grpc.RpcError) as info:
        send(v, leased, shape, wrong)
    assert "image_sha256" in (info.value.details() or "")
    assert f"row {byte_row}" in (info.value.details() or "")

    # A fetched row's digest is whatever the volunteer fetched; a failed fetch is a status.
    failed = honest.copy()
    failed[fetched_row] = 0.0
    failed[fetched_row, {c.name: p for c, _, p in shape.columns}["text_embedding"]] = honest[
        fetched_row, {c.name: p for c, _, p in shape.columns}["text_embedding"]
    ]
    failed[fetched_row, status] = STATUS_LABELS.index("unreachable")
    assert send(v, leased, shape, failed).status == "pending"


def test_replicas_that_fetched_different_bytes_publish_the_row_unstable(
    url_coordinator: RunningCoordinator,
    admin: CoordinatorClient,
    volunteers: list[RawVolunteer],
    tiny_clip: ModelSpec,
    tmp_path: Path,
) -> None:
    image = read_images()[0][1]
    items = [
        pb.InputItem(id="changed", text="a cat", line=1, url=url("changed")),
        pb.InputItem(id="steady", text="a dog", line=2, url=url("steady")),
        pb.InputItem(id="given", text="a bird", line=3, image=image, source_url=url("src")),
        pb.InputItem(id="plain", text="a fish", line=4, image=image + b"\0"),
    ]
    job_id = create(admin, items, tiny_clip.name, gold_fraction=0.0, redundancy=2)
    shape = get_kind("clip-filter").shape(tiny_clip, "float16")
    first, second = volunteers[:2]
    answers = []
    for v, got in ((first, b"version one"), (second, b"version two")):
        leased = lease(v, fetch_urls=True).lease
        unit = decode_unit(leased.unit.unit)
        answers.append(send(v, leased, shape, crafted(unit, shape, {url("changed"): got})))
    assert [a.status for a in answers] == ["pending", "accepted"], answers
    job = wait_for(admin, job_id)
    assert job.state == "complete", job.reason
    store = url_coordinator.coordinator.store
    for v in (first, second):  # nobody's fault: both results valid, no disagreement
        rep = store.get_reputation(v.volunteer_id)["clip-filter"]
        assert (rep.valid, rep.faults, rep.disagreements) == (1, 0, 0)

    fp = url_coordinator.coordinator.key.fingerprint
    out = tmp_path / "dataset"
    pull(admin, job_id, fp, out)
    assert verify_folder(out, fp).rows == 4
    assert "url" in read_manifest(out)["columns"]
    card = (out / CARD_PATH).read_text()
    assert "- `url`: string; where the row's image came from" in card
    table = pq.ParquetDataset(sorted(str(p) for p in out.glob("data/*.parquet"))).read()
    assert table.column_names[:3] == ["id", "text", "url"]
    data = {r["id"]: r for r in table.to_pylist()}
    changed = data["changed"]
    assert changed["status"] == "unstable" and changed["keep"] is False
    assert changed["url"] == url("changed") and changed["image_sha256"] == "00" * 32
    assert not any(changed["image_embedding"]) and changed["similarity"] == 0.0
    assert any(changed["text_embedding"])  # the caption's embedding does not depend on it
    steady = data["steady"]
    assert steady["status"] == "ok" and steady["keep"] is True
    assert steady["url"] == url("steady")
    assert steady["image_sha256"] == hashlib.sha256(b"the same bytes").hexdigest()
    assert data["given"]["url"] == url("src") and data["given"]["status"] == "ok"
    assert data["plain"]["url"] is None
    # clip-retrieval's metadata names the caption `caption` and keeps the `url`.
    exported = tmp_path / "clip-retrieval"
    assert export_clip_retrieval(out, exported) == 4
    meta = pq.read_table(exported / "metadata" / "metadata_0.parquet").to_pylist()
    by_id = {r["id"]: r for r in meta}
    assert by_id["steady"]["caption"] == "a dog" and "text" not in by_id["steady"]
    assert by_id["steady"]["url"] == url("steady") and by_id["plain"]["url"] is None


def test_a_lone_result_decides_url_rows_and_recompute_skips_them(
    clip_registry: ModelRegistry,
    url_coordinator: RunningCoordinator,
    admin: CoordinatorClient,
    volunteers: list[RawVolunteer],
    tiny_clip: ModelSpec,
    tmp_path: Path,
) -> None:
    """With one result per unit nothing can differ: the URL rows are published as that
    volunteer fetched them. `dataset verify --recompute` cannot recompute a URL row without
    fetching it again (maybe other bytes): it skips them and says how many."""
    items = [
        pb.InputItem(id=name, text=f"caption {name}", line=n + 1, url=url(name))
        for n, name in enumerate(["one", "two"])
    ]
    job_id = create(admin, items, tiny_clip.name, gold_fraction=0.0, redundancy=1)
    shape = get_kind("clip-filter").shape(tiny_clip, "float16")
    v = volunteers[0]
    leased = lease(v, fetch_urls=True).lease
    unit = decode_unit(leased.unit.unit)
    assert send(v, leased, shape, crafted(unit, shape, {url("one"): b"mine"})).status == "accepted"
    assert wait_for(admin, job_id).state == "complete"
    fp = url_coordinator.coordinator.key.fingerprint
    out = tmp_path / "dataset"
    pull(admin, job_id, fp, out)
    table = pq.ParquetDataset(sorted(str(p) for p in out.glob("data/*.parquet"))).read()
    data = {r["id"]: r for r in table.to_pylist()}
    assert data["one"]["status"] == "ok"
    assert data["one"]["image_sha256"] == hashlib.sha256(b"mine").hexdigest()
    assert data["one"]["verified_by"] == "solo"
    report = recompute(out, fraction=1.0, registry=clip_registry)
    assert (report.rows_checked, report.rows_skipped, report.ok) == (0, 2, True)
    assert as_json(report)["rows_skipped"] == 2
    # Given the bytes by id, a URL row is recomputed like an uploaded one: "one" holds the
    # bytes its row names, which are no image, so the lone result's "ok" is caught; "two"
    # gets other bytes than the volunteer fetched, which is said and not recomputed.
    supplied = tmp_path / "fetched.parquet"
    pq.write_table(pa.table({"id": ["one", "two"], "image": [b"mine", b"not those"]}), supplied)
    report = recompute(out, fraction=1.0, registry=clip_registry, images=[supplied])
    assert (report.rows_checked, report.rows_skipped, report.ok) == (1, 0, False)
    assert [m.id for m in report.image_mismatches] == ["two"]
    assert {d.column for d in report.disagreements if d.id == "one"} >= {"status", "width"}


def test_gold_rows_computed_at_job_create_are_never_url_rows(
    coordinator_home: CoordinatorHome, clip_registry: ModelRegistry, tiny_clip: ModelSpec
) -> None:
    """`serve --gold-compute` computes gold rows from the job's own rows: only from rows
    given by their bytes, which a gold row carries (a URL row's bytes are nobody's yet)."""
    rows = read_images()[:2]
    items = [
        pb.InputItem(id=f"u{n}", text=f"fetched {n}", line=n + 1, url=url(f"u{n}"))
        for n in range(3)
    ] + [pb.InputItem(id=i, text=c, image=b, line=10 + n) for n, (i, b, c) in enumerate(rows)]
    with serve(
        coordinator_home.root,
        "127.0.0.1:0",
        drain_s=0.2,
        registry=clip_registry,
        gold_computer=ModelGold(clip_registry),
    ) as running:
        with CoordinatorClient(
            running.address, admin_token=coordinator_home.load_token()
        ) as client:
            job_id = create(client, items, tiny_clip.name, gold_fraction=0.5)
        gold = running.coordinator.store.gold_rows([job_id], 100)
    assert gold and {(g.text, g.image) for g in gold} <= {(c, b) for _, b, c in rows}
