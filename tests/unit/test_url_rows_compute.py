"""A clip-filter unit whose rows are URLs, computed with the tiny CLIP and the real
Open-NSFW (client/allmende/client/tasks/computer.py): a fetched row gives the same columns
as the same image sent as bytes, a row whose fetch failed gives its status and zeros; and
the checks on such a unit before it is computed (engine/verify.py)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from allmende.client.engine.verify import UrlsNotWanted, check_unit
from allmende.client.fetch.addresses import parse_networks
from allmende.client.fetch.pool import UrlFetcher
from allmende.protocol.errors import FailedPrecondition, IntegrityError
from allmende.protocol.kinds.clip_filter import CLIP_FILTER
from allmende.protocol.models import ModelRegistry, ModelSpec
from allmende.protocol.signing import SigningKey
from allmende.protocol.wire import WorkUnit, sign_unit
from allmende.v1 import allmende_pb2 as pb
from tests.urlserver import UrlServer, url_server

LOOPBACK = parse_networks(["127.0.0.1/32"])
# The URL rows that fail, and what each must report.
FAILING = {
    "/status/404": "unreachable",
    "/html": "wrong-type",
    "/huge-length": "too-large",
    "PRIVATE": "private-address",  # 127.0.0.2, outside the allowance
}


@pytest.fixture
def server() -> Iterator[UrlServer]:
    with url_server() as running:
        yield running


def unit_of(spec: ModelSpec, texts: list[str], images: list[bytes], urls: list[str]) -> WorkUnit:
    return WorkUnit(
        unit_id="u1",
        job_id="j1",
        kind="clip-filter",
        model=spec.name,
        model_sha256=spec.weights_sha256,
        texts=tuple(texts),
        dims=CLIP_FILTER.vector_dims(spec),
        result_dtype="float16",
        created_ms=1,
        images=tuple(images),
        urls=tuple(urls),
    )


@pytest.mark.slow
def test_fetched_rows_compute_as_the_same_bytes_and_failures_are_statuses(
    server: UrlServer, tiny_clip: ModelSpec, clip_registry: ModelRegistry
) -> None:
    from allmende.client.tasks.computer import TaskComputer

    images = server.images
    captions = [f"a photograph number {i}" for i in range(len(images))]
    port = server.base.rsplit(":", 1)[1]
    failing = [
        f"http://127.0.0.2:{port}/img/0" if p == "PRIVATE" else server.url(p) for p in FAILING
    ]
    # Every other image row is a URL; the failing rows come last, in a batch of their own.
    urls = [server.url(f"/img/{i}") if i % 2 == 0 else "" for i in range(len(images))]
    urls += failing
    sent = [b"" if url else data for url, data in zip(urls, images, strict=False)]
    sent += [b""] * len(failing)
    texts = captions + [f"caption {i}" for i in range(len(failing))]
    fetcher = UrlFetcher(LOOPBACK, workers=4)
    computer = TaskComputer(clip_registry, device="cpu", batch_size=4, fetcher=fetcher)
    try:
        fetched = computer.compute(unit_of(tiny_clip, texts, sent, urls))
        given = computer.compute(
            unit_of(tiny_clip, texts, images + [b""] * len(failing), [""] * len(texts))
        )
    finally:
        fetcher.close()
    shape = CLIP_FILTER.shape(tiny_clip, "float16")
    got, want = shape.split(fetched), shape.split(given)
    rows = len(images)
    for name in ("width", "height", "image_sha256", "status"):
        assert np.array_equal(got[name][:rows], want[name][:rows]), name
    for name in ("image_embedding", "text_embedding", "similarity", "punsafe"):
        assert np.allclose(got[name][:rows], want[name][:rows], atol=1e-5), name
    assert set(CLIP_FILTER.results[-1].show(got["status"][:rows], tiny_clip)) == {"ok"}
    # The failed fetches: their status, size 0, an all-zero sha256 and zero model outputs;
    # their captions are embedded as for any row.
    failed = slice(rows, None)
    statuses = CLIP_FILTER.results[-1].show(got["status"][failed], tiny_clip)
    assert statuses == list(FAILING.values())
    for name in ("width", "height", "image_sha256", "image_embedding", "similarity", "punsafe"):
        assert not got[name][failed].any(), name
    assert np.allclose(got["text_embedding"][failed], want["text_embedding"][failed], atol=1e-5)
    assert np.allclose(np.linalg.norm(got["text_embedding"][failed], axis=1), 1.0, atol=1e-3)


def test_a_computer_without_a_fetcher_refuses_url_rows(
    tiny_clip: ModelSpec, clip_registry: ModelRegistry
) -> None:
    from allmende.client.tasks.computer import TaskComputer

    computer = TaskComputer(clip_registry, device="cpu", batch_size=4)
    unit = unit_of(tiny_clip, ["a"], [b""], ["http://198.51.100.7/x.jpg"])
    with pytest.raises(FailedPrecondition, match="--fetch-urls"):
        computer.compute(unit)


def lease_of(key: SigningKey, unit: WorkUnit) -> pb.Lease:
    blob, signature = sign_unit(key, unit)
    return pb.Lease(lease_id="", unit=pb.SignedWorkUnit(unit=blob, signature=signature))


def test_a_unit_with_url_rows_is_refused_unless_the_volunteer_opted_in(
    tiny_clip: ModelSpec, clip_registry: ModelRegistry
) -> None:
    key = SigningKey.generate()
    unit = unit_of(tiny_clip, ["a", "b"], [b"", b"\xff\xd8"], ["http://example.org/a.jpg", ""])
    lease = lease_of(key, unit)
    with pytest.raises(UrlsNotWanted, match="did not opt in"):
        check_unit(lease, key.public_key, clip_registry)
    assert check_unit(lease, key.public_key, clip_registry, fetch_urls=True).urls == unit.urls
    both = unit_of(tiny_clip, ["a"], [b"\xff\xd8"], ["http://example.org/a.jpg"])
    with pytest.raises(IntegrityError, match="both an image and a URL"):
        check_unit(lease_of(key, both), key.public_key, clip_registry, fetch_urls=True)
    short = unit_of(tiny_clip, ["a", "b"], [b"", b""], ["http://example.org/a.jpg"])
    with pytest.raises(IntegrityError, match="carries 1 URLs"):
        check_unit(lease_of(key, short), key.public_key, clip_registry, fetch_urls=True)
