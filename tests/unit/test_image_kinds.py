"""The image kinds' declarations, column types and job planning: what `clip-filter` and
`embed-image` rows carry, how replicas are compared on hashes, sizes and statuses, what a
job refuses (each by name) and how units with images are composed for a lease."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from allmende.coordinator.domain.compose import MAX_GOLD_BYTES, compose
from allmende.coordinator.domain.jobs import (
    MAX_UNIT_BYTES,
    InputRecord,
    JobRequest,
    check_items,
    plan_job,
    resolve_settings,
)
from allmende.coordinator.store.records import GoldRow, LeaseCandidate
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds import get_kind
from allmende.protocol.kinds.clip_filter import CLIP_FILTER
from allmende.protocol.kinds.embed_image import EMBED_IMAGE
from allmende.protocol.kinds.embed_text import EMBED_TEXT
from allmende.protocol.kinds.image_inputs import OK, STATUS_LABELS
from allmende.protocol.limits import MAX_IMAGE_BYTES, MAX_URL_CHARS
from allmende.protocol.models import ModelRegistry, ModelSpec
from allmende.protocol.signing import SigningKey
from allmende.protocol.wire import WorkUnit, decode_unit, open_unit, sign_unit
from tests.conftest import read_images

DIMS = 8
CLIP = ModelSpec("clip", DIMS, "0" * 64, 77, ("clip-filter", "embed-image"), "/nowhere")
KEY = SigningKey.generate()


def result(rows: int, seed: int = 0, status: int = OK) -> np.ndarray:
    """A plausible clip-filter result: unit embeddings, sizes, digests, scores, status."""
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(rows, DIMS))
    txt = rng.normal(size=(rows, DIMS))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    sim = (img * txt).sum(axis=1, keepdims=True)
    sizes = np.tile([[640, 480]], (rows, 1))
    digests = rng.integers(0, 256, size=(rows, 32))
    punsafe = rng.uniform(size=(rows, 1))
    return np.hstack([img, txt, sim, sizes, digests, punsafe, np.full((rows, 1), status)])


def test_clip_filter_results_round_trip_the_wire_exactly_where_they_must() -> None:
    shape = CLIP_FILTER.shape(CLIP, "float16")
    assert [c.name for c, _, _ in shape.columns] == [
        "image_embedding",
        "text_embedding",
        "similarity",
        "width",
        "height",
        "image_sha256",
        "punsafe",
        "status",
    ]
    assert [lay.dtype for lay in shape.layouts] == [
        "float16",
        "float16",
        "float32",
        "int32",
        "int32",
        "uint8",
        "float32",
        "label",
    ]
    matrix = result(5)
    back = shape.rounded(matrix)
    split, sent = shape.split(back), shape.split(matrix)
    for exact in ("width", "height", "image_sha256", "status"):
        assert np.array_equal(split[exact], sent[exact]), exact
    shape.check(back)
    assert shape.compare(back, shape.rounded(matrix), 0.999).agrees


def test_a_datasets_exact_columns_read_back_as_the_compute_class_returned_them() -> None:
    """What `dataset verify --recompute` compares: a published row (hex digest, whole
    numbers, status label) read back equals the matrix it was published from; values no
    honest dataset holds read back as agreeing with nothing."""
    shape = CLIP_FILTER.shape(CLIP, "float16")
    matrix = shape.rounded(result(4, status=1))
    shown = {col.name: col.show(matrix[:, part], CLIP) for col, _, part in shape.columns}
    back = shape.read(shown)
    for col, _, part in shape.columns:
        assert np.array_equal(back[:, part], matrix[:, part]), col.name
    assert shape.compare(back, matrix, 0.999).agrees
    shown["image_sha256"][0] = "zz" * 32
    shown["image_sha256"][1] = "ab" * 31
    shown["width"][2] = "640"
    shown["status"][3] = "no-such-status"
    bad = dict(zip(["image_sha256", "width", "status"], [[0, 1], [2], [3]], strict=True))
    for col, _, ok in shape.by_column(shape.read(shown), matrix, 0.999):
        assert np.flatnonzero(~ok).tolist() == bad.get(col.name, []), col.name


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("image_sha256", 256, "whole numbers from 0 to 255"),
        ("width", -1, "whole numbers from 0"),
        ("status", len(STATUS_LABELS), f"from 0 to {len(STATUS_LABELS) - 1}"),
        ("similarity", 1.5, "within [-1, 1]"),
    ],
)
def test_values_no_honest_volunteer_sends_are_refused_naming_the_column(
    column: str, value: float, needle: str
) -> None:
    shape = CLIP_FILTER.shape(CLIP, "float16")
    matrix = result(3)
    part = {c.name: p for c, _, p in shape.columns}[column]
    matrix[1, part.start] = value
    with pytest.raises(InvalidArgument) as info:
        shape.check(matrix)
    assert column in info.value.expected and needle in info.value.expected
    assert "row 1" in info.value.expected


def test_rows_without_an_image_agree_only_with_rows_without_one() -> None:
    shape = EMBED_IMAGE.shape(CLIP, "float16")
    matrix = np.hstack([result(2)[:, :DIMS], np.zeros((2, 34)), np.zeros((2, 1))])
    empty = matrix.copy()
    empty[1, :DIMS] = 0.0  # no embedding for row 1 ...
    shape.check(empty)  # ... is allowed for image rows
    assert shape.compare(empty, empty, 0.999).agrees
    comparison = shape.compare(matrix, empty, 0.999)
    assert not comparison.agrees and comparison.worst_row == 1
    # embed-text's embedding has no such exception: a zero row is refused.
    text = EMBED_TEXT.shape(CLIP, "float16")
    with pytest.raises(InvalidArgument, match="norm"):
        text.check(np.zeros((1, DIMS)))


def test_a_digest_that_is_not_the_units_image_is_refused() -> None:
    shape = EMBED_IMAGE.shape(CLIP, "float16")
    images = [b"first image", b"second image"]
    matrix = np.zeros((2, DIMS + 35))
    for row, data in enumerate(images):
        matrix[row, DIMS + 2 : DIMS + 34] = np.frombuffer(hashlib.sha256(data).digest(), np.uint8)
    shape.check_inputs(matrix, images)
    with pytest.raises(InvalidArgument) as info:
        shape.check_inputs(matrix, [images[0], b"other bytes"])
    assert "image_sha256" in info.value.expected and "row 1" in info.value.expected


def test_the_rule_keeps_usable_images_above_the_similarity_default() -> None:
    rule = CLIP_FILTER.parse_rule({"max_punsafe": "0.5"}, CLIP)
    assert rule == {"min_similarity": 0.28, "max_punsafe": 0.5}
    values = {
        "similarity": np.array([[0.3], [0.3], [0.2], [0.3]]),
        "punsafe": np.array([[0.1], [0.9], [0.1], [0.1]]),
        "status": np.array([[0], [0], [0], [1]]),
    }
    assert CLIP_FILTER.keep is not None
    assert CLIP_FILTER.keep(rule, [""] * 4, values, CLIP).tolist() == [True, False, False, False]
    for raw, field in (
        ({"min_similarity": "2"}, "rule.min_similarity"),
        ({"max_punsafe": "x"}, "rule.max_punsafe"),
    ):
        with pytest.raises(InvalidArgument) as info:
            CLIP_FILTER.parse_rule(raw, CLIP)
        assert info.value.field == field


def test_rows_are_deduplicated_by_the_kinds_inputs() -> None:
    image = read_images()[0][1]
    assert EMBED_IMAGE.content_digest("", image) == hashlib.sha256(image).digest()
    assert CLIP_FILTER.content_digest("a", image) != CLIP_FILTER.content_digest("b", image)
    # The length prefix keeps text and image bytes from sliding into each other.
    assert CLIP_FILTER.content_digest("ab", b"c") != CLIP_FILTER.content_digest("a", b"bc")
    assert EMBED_TEXT.content_digest("a", b"") == hashlib.sha256(b"a").digest()


@pytest.mark.parametrize(
    ("kind", "record", "field", "needle"),
    [
        ("clip-filter", InputRecord("a", "cap", 3), "image", "the item's image"),
        ("clip-filter", InputRecord("a", "cap", 3, b"x", "http://e/x.jpg"), "image", "not both"),
        ("clip-filter", InputRecord("a", "cap", 3, None, "ftp://e/x.jpg"), "url", "http or https"),
        ("clip-filter", InputRecord("a", "cap", 3, None, "http:///x.jpg"), "url", "a host"),
        ("clip-filter", InputRecord("a", "cap", 3, None, "http://e/a b.jpg"), "url", "whitespace"),
        ("clip-filter", InputRecord("a", "cap", 3, None, "http://e/\x01"), "url", "control"),
        (
            "clip-filter",
            InputRecord("a", "cap", 3, None, "http://e/" + "x" * MAX_URL_CHARS),
            "url",
            f"at most {MAX_URL_CHARS} characters",
        ),
        (
            "clip-filter",
            InputRecord("a", "cap", 3, b"x", source_url="javascript:alert(1)"),
            "source_url",
            "http or https",
        ),
        (
            "clip-filter",
            InputRecord("a", "cap", 3, None, "http://e/x.jpg", "http://e/y.jpg"),
            "source_url",
            "only with an image",
        ),
        ("embed-text", InputRecord("a", "t", 3, source_url="http://e/y.jpg"), "source_url", "text"),
        (
            "clip-filter",
            InputRecord("a", "cap", 3, b"x" * (MAX_IMAGE_BYTES + 1)),
            "image",
            f"at most {MAX_IMAGE_BYTES} bytes",
        ),
        ("embed-image", InputRecord("a", "a caption", 3, b"x"), "text", "an image only"),
        ("embed-text", InputRecord("a", "text", 3, b"x"), "image", "text only"),
    ],
)
def test_items_must_carry_what_the_kind_takes(
    kind: str, record: InputRecord, field: str, needle: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_items([record], get_kind(kind))
    assert info.value.field == field and needle in info.value.expected
    assert "line 3" in info.value.expected


def test_a_zero_byte_image_is_a_row_not_an_error() -> None:
    check_items([InputRecord("a", "cap", 1, b"")], CLIP_FILTER)


def test_units_of_images_are_cut_by_bytes_and_carry_each_rows_image() -> None:
    registry = ModelRegistry(extra=(CLIP,))
    settings = resolve_settings(
        JobRequest(kind="clip-filter", model="clip", unit_size=1000), registry
    )
    big = MAX_UNIT_BYTES // 3
    records = [
        InputRecord(f"i{n}", f"caption {n % 4}", n + 1, bytes([n % 5]) * big) for n in range(10)
    ]
    records.append(InputRecord("dup", "caption 0", 11, records[0].image))
    job, units, items = plan_job("job-1", JobRequest(), settings, records, KEY, 1)
    assert job.unique_items == 10
    opened = [open_unit(u.blob, u.signature, KEY.public_key) for u in units]
    assert all(sum(map(len, u.images)) <= MAX_UNIT_BYTES for u in opened)
    assert len(units) >= 4
    for record, item in zip(records, items, strict=True):
        unit = opened[item.unit_seq]
        assert unit.row(item.row) == (record.text, record.image)
    assert items[-1].unit_seq == items[0].unit_seq and items[-1].row == items[0].row


def test_gold_rows_of_an_image_kind_carry_their_image_into_the_lease() -> None:
    images = [f"unit image {i}".encode() for i in range(6)]
    unit = WorkUnit(
        "unit-1",
        "job-1",
        "clip-filter",
        "clip",
        "0" * 64,
        tuple(f"caption {i}" for i in range(6)),
        DIMS,
        "float16",
        1,
        images=tuple(images),
    )
    blob, _ = sign_unit(KEY, unit)
    candidate = LeaseCandidate("unit-1", "job-1", "clip-filter", blob, 6, 0, 2, 2, 0.5, 10)
    pool = [
        GoldRow(100 + i, "job-1", f"gold caption {i}", b"", "", f"gold image {i}".encode())
        for i in range(4)
    ]
    # A gold row too large for the lease's gold budget is left out.
    pool.append(GoldRow(200, "job-1", "huge", b"", "", b"x" * (MAX_GOLD_BYTES + 1)))
    rng = np.random.default_rng(7)
    for _ in range(5):
        composed = compose(KEY, candidate, "lease-1", pool, rng, 2)
        leased = decode_unit(composed.blob)
        assert len(leased.images) == leased.rows == 6 + len(composed.gold_ids)
        assert 200 not in composed.gold_ids
        rows = {leased.row(i) for i in range(leased.rows)}
        assert {unit.row(i) for i in range(6)} <= rows
        by_id = {g.gold_id: g for g in pool}
        assert {by_id[g].inputs for g in composed.gold_ids} <= rows
        assert not composed.decoys and not composed.sample
