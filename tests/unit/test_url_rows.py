"""URL rows on the coordinator's side, below the network: planning a job whose rows are
URLs, composing its units for a lease, the statuses a result may report on fetched and
byte rows, and the `unstable` settlement of rows whose replicas fetched different bytes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from allmende.coordinator.domain.compose import compose, composed_fetched, composed_images
from allmende.coordinator.domain.jobs import (
    MAX_UNIT_BYTES,
    InputRecord,
    JobRequest,
    plan_job,
    resolve_settings,
)
from allmende.coordinator.domain.judge import _harvest
from allmende.coordinator.store.records import GoldRow, LeaseCandidate, LeaseRecord, UnitRecord
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds.clip_filter import CLIP_FILTER
from allmende.protocol.kinds.embed_image import EMBED_IMAGE
from allmende.protocol.kinds.image_inputs import OK, STATUS_LABELS, UNREACHABLE, UNSTABLE
from allmende.protocol.limits import MAX_URL_CHARS
from allmende.protocol.models import ModelRegistry
from allmende.protocol.wire import decode_unit, open_unit
from tests.unit.test_image_kinds import CLIP, KEY, result

REGISTRY = ModelRegistry(extra=(CLIP,))
SHAPE = CLIP_FILTER.shape(CLIP, "float16")


def col(name: str) -> slice:
    return next(part for c, _, part in SHAPE.columns if c.name == name)


def test_url_rows_are_deduplicated_by_url_and_caption_and_never_match_bytes() -> None:
    url = "https://example.org/a.jpg"
    assert CLIP_FILTER.content_digest("c", b"", url) == CLIP_FILTER.content_digest("c", b"", url)
    assert CLIP_FILTER.content_digest("c", b"", url) != CLIP_FILTER.content_digest("d", b"", url)
    assert CLIP_FILTER.content_digest("c", b"", url) != CLIP_FILTER.content_digest("c", b"")
    assert (
        EMBED_IMAGE.content_digest("", b"", url) == hashlib.sha256(b"url:" + url.encode()).digest()
    )


def test_a_job_of_url_rows_carries_each_url_beside_its_row_and_counts_their_bytes() -> None:
    settings = resolve_settings(
        JobRequest(kind="clip-filter", model="clip", unit_size=8192), REGISTRY
    )
    long = "https://example.org/" + "x" * (MAX_URL_CHARS - 40)
    records = [InputRecord(f"u{n}", "cap", n + 1, None, f"{long}{n:06d}") for n in range(1500)]
    records += [
        InputRecord("bytes", "cap", 2000, b"an image", source_url="https://example.org/src"),
        InputRecord("again", "cap", 2001, None, records[0].url),  # computed once
    ]
    job, units, items = plan_job("job-1", JobRequest(), settings, records, KEY, 1)
    assert job.fetch_rows == 1501 and job.url_items == 1502 and job.unique_items == 1501
    opened = [open_unit(u.blob, u.signature, KEY.public_key) for u in units]
    assert len(opened) >= 2  # 1,500 URLs of 4 KB do not fit one unit's bytes
    assert all(sum(map(len, u.urls)) <= MAX_UNIT_BYTES for u in opened)
    for record, item in zip(records, items, strict=True):
        unit = opened[item.unit_seq]
        assert len(unit.urls) == len(unit.images) == unit.rows
        assert unit.url(item.row) == record.url
        assert unit.images[item.row] == (record.image or b"")
        assert item.url == (record.url or record.source_url)
    assert items[-1].unit_seq == items[0].unit_seq and items[-1].row == items[0].row


def test_a_job_without_url_rows_sends_no_urls() -> None:
    settings = resolve_settings(JobRequest(kind="clip-filter", model="clip"), REGISTRY)
    records = [InputRecord("a", "cap", 1, b"img", source_url="https://example.org/a.jpg")]
    job, units, _ = plan_job("job-1", JobRequest(), settings, records, KEY, 1)
    assert job.fetch_rows == 0 and job.url_items == 1
    assert decode_unit(units[0].blob).urls == ()


def _url_unit() -> tuple[bytes, list[str], list[bytes]]:
    settings = resolve_settings(JobRequest(kind="clip-filter", model="clip"), REGISTRY)
    urls = ["https://example.org/0.jpg", "", "https://example.org/2.jpg", ""]
    images = [b"", b"image one", b"", b"image three"]
    records = [
        InputRecord(f"r{n}", f"caption {n}", n + 1, None if url else image, url)
        for n, (url, image) in enumerate(zip(urls, images, strict=True))
    ]
    _, units, items = plan_job("job-1", JobRequest(), settings, records, KEY, 1)
    unit = decode_unit(units[0].blob)
    order = [items[n].row for n in range(4)]
    return units[0].blob, [urls[order.index(i)] for i in range(4)], list(unit.images)


def test_a_composed_lease_keeps_each_url_with_its_row_and_gold_rows_carry_bytes() -> None:
    blob, urls, images = _url_unit()
    assert list(decode_unit(blob).urls) == urls
    candidate = LeaseCandidate("job-1-u000000", "job-1", "clip-filter", blob, 4, 0, 2, 2, 0.5, 10)
    pool = [
        GoldRow(100 + i, "job-1", f"gold {i}", b"", "", f"gold image {i}".encode())
        for i in range(3)
    ]
    unit = decode_unit(blob)
    for seed in range(5):
        composed = compose(KEY, candidate, "lease-1", pool, np.random.default_rng(seed), 2)
        leased = decode_unit(composed.blob)
        assert len(leased.urls) == len(leased.images) == leased.rows > 4
        order = np.frombuffer(composed.composition, dtype="<u2").tolist()
        for i, source in enumerate(order):
            if source < 4:  # a row of the unit: its own text, image and url
                assert leased.row(i) == unit.row(source) and leased.url(i) == urls[source]
            else:  # a gold row: bytes, never a url
                assert leased.url(i) == "" and leased.images[i].startswith(b"gold image")
        lease = LeaseRecord(
            "lease-1",
            "job-1-u000000",
            "v",
            "active",
            0,
            None,
            composed.composition,
            composed.gold_ids,
        )
        gold = {g.gold_id: g for g in pool}
        seen = composed_images(lease, images, gold, urls)
        fetched = composed_fetched(lease, urls, len(order))
        for i, source in enumerate(order):
            assert fetched[i] == (source < 4 and bool(urls[source]))
            # a fetched row's digest is not checked (the coordinator holds no bytes for it)
            assert (seen[i] is None) == fetched[i]


def test_harvested_gold_rows_are_never_url_rows() -> None:
    blob, urls, _ = _url_unit()
    settings = resolve_settings(
        JobRequest(kind="clip-filter", model="clip", gold_fraction=0.5), REGISTRY
    )
    unit = UnitRecord("job-1-u000000", "job-1", 0, 4, "accepted", 2, blob, settings, 2)
    fetched = tuple(bool(u) for u in urls)
    for _ in range(10):
        rows = _harvest(unit, result(4), 2, True, fetched)
        assert rows and all(len(r) == 3 and r[2].startswith(b"image ") for r in rows)


def test_results_may_not_claim_unstable_or_a_fetch_failure_on_a_row_with_bytes() -> None:
    fetched = [True, False, True]
    ok = result(3)
    ok[0, col("status")] = UNREACHABLE
    SHAPE.check_sources(ok, fetched)  # a fetched row may be unreachable
    bad = result(3)
    bad[1, col("status")] = STATUS_LABELS.index("wrong-type")
    with pytest.raises(InvalidArgument) as info:
        SHAPE.check_sources(bad, fetched)
    assert info.value.field == "payload" and "'wrong-type'" in info.value.expected
    assert "row 1 was sent with its bytes" in info.value.expected
    claimed = result(3)
    claimed[2, col("status")] = UNSTABLE
    with pytest.raises(InvalidArgument) as info:
        SHAPE.check_sources(claimed, fetched)
    assert (
        "'unstable' is set by the coordinator" in info.value.expected
        and "row 2" in info.value.expected
    )


def test_replicas_that_fetched_different_bytes_make_the_row_unstable_in_all() -> None:
    fetched = (True, False, True)
    a, b = result(3, seed=1).astype(np.float32), result(3, seed=1).astype(np.float32)
    b[0, col("image_sha256")] = (b[0, col("image_sha256")] + 1) % 256  # other bytes
    b[1, col("image_sha256")] = (b[1, col("image_sha256")] + 1) % 256  # a byte row: not settled
    settled, count = SHAPE.settle_fetched([a, b], fetched)
    assert count == 1
    for m in settled:
        assert m[0, col("status")][0] == UNSTABLE
        for name in ("image_embedding", "similarity", "width", "height", "image_sha256", "punsafe"):
            assert not m[0, col(name)].any(), name
        # the caption's embedding does not depend on the fetch: kept, compared as usual
        assert np.array_equal(m[0, col("text_embedding")], a[0, col("text_embedding")])
        assert np.array_equal(m[2], a[2])  # an agreeing fetched row is untouched
    assert np.array_equal(settled[1][1], b[1])  # a byte row's difference is a disagreement
    assert SHAPE.compare(settled[0][[0, 2]], settled[1][[0, 2]], 0.999).agrees
    # One fetched, the other could not: also unstable.
    c = result(3, seed=1).astype(np.float32)
    c[2] = 0.0
    c[2, col("text_embedding")] = a[2, col("text_embedding")]
    c[2, col("status")] = UNREACHABLE
    settled, count = SHAPE.settle_fetched([a, c], fetched)
    assert count == 1 and settled[0][2, col("status")][0] == UNSTABLE
    # A lone result has nothing to differ from; rows given by bytes never settle.
    assert SHAPE.settle_fetched([b], fetched)[1] == 0
    assert SHAPE.settle_fetched([a, b], (False, False, False))[1] == 0
    assert a[0, col("status")][0] == OK  # the inputs are not changed in place
