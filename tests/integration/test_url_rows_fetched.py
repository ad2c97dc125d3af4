"""URL rows end to end with nothing faked: a coordinator in-process, a real HTTP server on
loopback, and real volunteer engines that fetch (only those that opted in with
`--fetch-urls`), compute with the tiny CLIP, and agree or not on what they fetched.

What a job owner sees in the dataset: fetched rows computed exactly as the same images
given as bytes, failed fetches with the reason in `status` (agreed by the quorum like any
column; a site's X-Robots-Tag opt-out honoured), a URL whose content changed between two
volunteers' fetches marked `unstable` with nobody faulted, and the `url` column."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from allmende.api.dataset import pull
from allmende.cli.main import main
from allmende.client.connection import CoordinatorClient
from allmende.client.engine.events import Idle
from allmende.client.fetch.addresses import ALLOW_ALL
from allmende.client.fetch.pool import UrlFetcher
from allmende.client.tasks.computer import TaskComputer
from allmende.coordinator.app import RunningCoordinator
from allmende.protocol.manifest import verify_folder
from allmende.protocol.models import ModelRegistry, ModelSpec
from allmende.v1 import allmende_pb2 as pb
from tests.conftest import read_images
from tests.integration.test_clip_filter import wait_for
from tests.urlserver import UrlServer, url_server


@pytest.fixture
def server() -> Iterator[UrlServer]:
    with url_server() as running:
        yield running


@pytest.mark.slow
def test_volunteers_that_opted_in_fetch_url_rows_and_a_changing_page_is_unstable(
    clip_coordinator: RunningCoordinator,
    clip_admin: CoordinatorClient,
    clip_computer: TaskComputer,
    clip_registry: ModelRegistry,
    tiny_clip: ModelSpec,
    run_volunteers,
    server: UrlServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    photos = read_images()
    fetched = [(f"{name}-url", server.url(f"/img/{n}"), caption)
               for n, (name, _, caption) in enumerate(photos[:3])]
    failing = [
        ("redirected", server.url("/hops/2"), photos[0][2]),
        ("missing", server.url("/status/404"), "a page that is gone"),
        ("an-error-page", server.url("/html"), "an HTML page, not an image"),
        ("changing", server.url("/changing"), "a page whose image changes"),
        ("opted-out", server.url("/robots?tag=noai"), "an image its site opted out"),
    ]
    items = [pb.InputItem(id=i, text=caption, url=url, line=n + 1)
             for n, (i, url, caption) in enumerate(fetched + failing)]
    # The same photographs as bytes, in the same job: a fetched row must equal its twin.
    items += [pb.InputItem(id=f"{name}-bytes", text=caption, image=image, line=100 + n)
              for n, (name, image, caption) in enumerate(photos[:3])]
    created = clip_admin.create_job([
        pb.CreateJobRequest(
            spec=pb.JobSpec(kind="clip-filter", model=tiny_clip.name, redundancy=2,
                            unit_size=16, rule={"min_similarity": "-1"}, gold_fraction=0),
            source_name="urls"),
        pb.CreateJobRequest(items=items),
    ])

    # The operator sees that the job waits for volunteers that fetch.
    assert clip_admin.get_job(created.job_id).fetch_rows == len(fetched) + len(failing)
    capsys.readouterr()
    assert main(["job", "status", created.job_id, "--coordinator", clip_coordinator.address]) == 0
    assert (
        f"urls      {len(fetched) + len(failing)} rows are fetched from URLs by the volunteers: "
        "only volunteers that opted in (--fetch-urls) take this job"
    ) in capsys.readouterr().out

    # A volunteer that did not opt in is given nothing, is told why, and fetches nothing.
    [(code, events)] = run_volunteers(
        clip_coordinator, 1, computer=clip_computer, registry=clip_registry)
    assert code == 0
    notices = [e.notice for e in events if isinstance(e, Idle) and e.notice]
    assert notices and "--fetch-urls" in notices[-1]
    assert server.requests == []
    assert clip_admin.get_job(created.job_id).results_received == 0

    fetching = TaskComputer(clip_registry, device="cpu", batch_size=16,
                            fetcher=UrlFetcher(ALLOW_ALL))
    outcomes = run_volunteers(clip_coordinator, 2, computer=fetching, registry=clip_registry,
                              fetch_urls=True, allow_private_addresses=True)
    assert [code for code, _ in outcomes] == [0, 0]
    job = wait_for(clip_admin, created.job_id)
    assert job.state == "complete", job.reason
    # A changed page is nobody's fault: no result was rejected.
    assert job.results_rejected == 0 and job.volunteers == 2
    assert server.requests.count("/changing") == 2  # each replica fetched once

    fp = clip_coordinator.coordinator.key.fingerprint
    out = tmp_path / "dataset"
    pull(clip_admin, created.job_id, fp, out)
    verify_folder(out, fp)
    table = pq.ParquetDataset(sorted(str(p) for p in out.glob("data/*.parquet"))).read()
    assert table.column_names[:3] == ["id", "text", "url"]
    rows = {r["id"]: r for r in table.to_pylist()}

    for (name, image, _), (_, url, _) in zip(photos[:3], fetched, strict=True):
        by_url, by_bytes = rows[f"{name}-url"], rows[f"{name}-bytes"]
        assert by_url["url"] == url and by_bytes["url"] is None
        assert by_url["status"] == "ok" and by_url["keep"]
        assert by_url["image_sha256"] == hashlib.sha256(image).hexdigest()
        for column in ("width", "height", "image_sha256"):
            assert by_url[column] == by_bytes[column], (name, column)
        # Computed in other batches than their twins: equal up to float rounding.
        for column in ("image_embedding", "text_embedding"):
            a, b = (np.asarray(r[column], dtype=np.float64) for r in (by_url, by_bytes))
            assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99999, (name, column)
        for column in ("similarity", "punsafe"):
            assert abs(by_url[column] - by_bytes[column]) < 1e-5, (name, column)
    assert rows["redirected"]["status"] == "ok"
    assert rows["redirected"]["image_sha256"] == rows[f"{photos[0][0]}-url"]["image_sha256"]
    assert rows["missing"]["status"] == "unreachable"
    assert rows["an-error-page"]["status"] == "wrong-type"
    assert rows["changing"]["status"] == "unstable"
    assert rows["opted-out"]["status"] == "opted-out"
    for name in ("missing", "an-error-page", "changing", "opted-out"):
        row = rows[name]
        assert not row["keep"] and row["similarity"] == 0.0, name
        assert not any(row["image_embedding"]) and row["image_sha256"] == "00" * 32, name
        assert (row["width"], row["height"]) == (0, 0), name
        assert any(row["text_embedding"]), name  # the caption was still embedded
    # Both volunteers stand as before: nobody was faulted for the changing page.
    volunteers = clip_admin.list_volunteers()
    assert sum(v.results_valid for v in volunteers) == 2
    assert all(v.results_invalid == 0 for v in volunteers)
