"""The task-kind seam: result columns, their codec, comparison and checks, read from a
kind's declaration. The kind here is made up for the test (a vector, a score and a label
per row), so what passes is the seam, not one kind."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from allmende.protocol import codec
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds import KINDS, get_kind
from allmende.protocol.kinds.base import KindSpec, RuleParam, rule_text
from allmende.protocol.kinds.columns import LabelColumn, Layout, ScoreColumn, VectorColumn
from allmende.protocol.kinds.exact_columns import StatusColumn
from allmende.protocol.models import ModelSpec
from allmende.protocol.wire import CODEC, ResultEnvelope, decode_envelope, encode_envelope

ROOT = Path(__file__).resolve().parents[2]
MODEL = ModelSpec("toy", 4, "0" * 64, 16, ("toy-kind",), "/nowhere", labels=("a", "b", "c"))


def _positive(text: str, model: ModelSpec) -> float:
    if not text.replace(".", "", 1).isdigit():
        raise InvalidArgument("min_score", f"a number, got {text!r}")
    return float(text)


TOY = KindSpec(
    name="toy-kind",
    description="a vector, a score and a label per row",
    inputs=("text",),
    results=(
        VectorColumn("vector", "a unit vector"),
        ScoreColumn("score", "a probability", tolerance=1e-3),
        LabelColumn("label", "one of a, b, c"),
    ),
    compute="tests.nowhere:Toy",
    credit=len,
    agreement="score",
    rule=(RuleParam("min_score", "keep rows scoring this much", _positive),),
)
SHAPE = TOY.shape(MODEL, "float16")


def rows(n: int = 6, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = rng.uniform(0, 1, (n, 1)).astype(np.float32)
    labels = rng.integers(0, 3, (n, 1)).astype(np.float32)
    return SHAPE.rounded(np.hstack([vectors, scores, labels]))


def test_the_shape_puts_the_columns_side_by_side() -> None:
    assert SHAPE.width == 6
    assert SHAPE.layouts == (
        Layout("vector", "float16", 4),
        Layout("score", "float32", 1),
        Layout("label", "label", 1),
    )
    parts = SHAPE.split(rows())
    assert [a.shape for a in parts.values()] == [(6, 4), (6, 1), (6, 1)]


def test_columns_round_trip_through_one_zstd_frame() -> None:
    matrix = rows(50)
    payload = SHAPE.encode(matrix)
    back = SHAPE.decode(payload, 50)
    np.testing.assert_array_equal(back, matrix)
    # the label column travels as uint16 indices, the score as float32: exact
    assert set(np.unique(back[:, 5])) <= {0.0, 1.0, 2.0}


def test_one_float16_column_is_the_format_results_always_had() -> None:
    matrix = rows(20)[:, :4]
    payload, raw = codec.encode_columns(matrix, [("float16", 4)])
    assert payload == codec.encode(matrix, "float16").payload
    assert raw == 20 * 4 * 2


def test_decoding_refuses_a_payload_of_another_shape_and_names_the_column() -> None:
    payload = SHAPE.encode(rows(5))
    with pytest.raises(InvalidArgument, match="bytes once decompressed"):
        SHAPE.decode(payload, 6)
    bad = rows(5)
    bad[3, 4] = np.nan
    with pytest.raises(InvalidArgument, match="column 'score' row 3 has NaN"):
        SHAPE.decode(codec.encode_columns(bad, SHAPE.encoding())[0], 5)


def test_row_checks_of_each_column_type() -> None:
    good = rows()
    SHAPE.check(good)
    scaled = good.copy()
    scaled[2, :4] *= 3
    with pytest.raises(InvalidArgument, match=r"unit-normalised rows in column 'vector'.*row 2"):
        SHAPE.check(scaled)
    high = good.copy()
    high[4, 4] = 1.5
    with pytest.raises(InvalidArgument, match=r"'score' within \[0, 1\]; row 4"):
        SHAPE.check(high)
    unknown = good.copy()
    unknown[1, 5] = 3  # one past the model's three labels
    with pytest.raises(InvalidArgument, match=r"'label' holds one of model toy's 3 labels.*row 1"):
        SHAPE.check(unknown)


def test_replicas_agree_only_when_every_column_does() -> None:
    a = rows()
    assert SHAPE.compare(a, a.copy(), 0.999).agrees
    near = a.copy()
    near[0, 4] += 0.0005
    same = SHAPE.compare(a, near, 0.999)
    assert same.agrees and same.agreement == pytest.approx(0.9995, abs=1e-6)
    far = a.copy()
    far[3, 4] += 0.002
    off = SHAPE.compare(a, far, 0.999)
    assert not off.agrees and off.worst_row == 3
    assert "1 - |score difference|" in off.describe()
    relabelled = a.copy()
    relabelled[2, 5] = (relabelled[2, 5] + 1) % 3
    other = SHAPE.compare(a, relabelled, 0.999)
    assert not other.agrees and (other.column, other.worst_row) == ("label", 2)
    assert other.describe() == "column 'label' disagrees at row 2"


def test_the_lone_result_margin_is_half_way_to_identical_on_every_column() -> None:
    a = rows()
    near = a.copy()
    near[1, 4] += 0.0004  # within tolerance and within half of it
    ok, slack = SHAPE.measures(a, near, 0.999)
    assert ok.all() and (slack >= 0.5).all()
    near[1, 4] += 0.0002  # still agrees, but no longer by a margin
    ok, slack = SHAPE.measures(a, near, 0.999)
    assert ok.all() and slack[1] < 0.5


def test_consensus_is_taken_column_by_column() -> None:
    a = rows()
    b = a.copy()
    b[:, 4] += 0.0008
    b[:, :4] += 0.01
    b[:, :4] /= np.linalg.norm(b[:, :4], axis=1, keepdims=True)
    both = SHAPE.combine([a, b])
    np.testing.assert_allclose(both[:, 4], (a[:, 4] + b[:, 4]) / 2, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(both[:, :4], axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(both[:, 5], a[:, 5])


def test_envelopes_carry_the_columns_and_refuse_none_or_unnamed_ones() -> None:
    env = ResultEnvelope(
        unit_id="u", lease_id="l", volunteer_id="v", rows=6, columns=SHAPE.layouts,
        codec=CODEC, payload_sha256=b"\x00" * 32, unit_sha256=b"", model_sha256="",
        device="cpu", compute_ms=1, created_ms=1,
    )  # fmt: skip
    assert decode_envelope(encode_envelope(env)) == env
    for columns, field in [
        ((), "envelope.columns"),
        ((Layout("", "float32", 1),), "envelope.columns[0]"),
        ((Layout("vector", "float16", 4), Layout("x", "float32", 0)), "envelope.columns[1]"),
    ]:
        blob = encode_envelope(ResultEnvelope(**{**env.__dict__, "columns": columns}))
        with pytest.raises(InvalidArgument) as info:
            decode_envelope(blob)
        assert info.value.field == field


def test_rules_take_only_the_parameters_the_kind_declares() -> None:
    assert TOY.parse_rule({"min_score": "0.5"}, MODEL) == {"min_score": 0.5}
    with pytest.raises(InvalidArgument) as info:
        TOY.parse_rule({"min_score": "lots"}, MODEL)
    assert info.value.field == "rule.min_score" and "'lots'" in info.value.expected
    with pytest.raises(InvalidArgument) as info:
        TOY.parse_rule({"max_score": "1"}, MODEL)
    assert info.value.field == "rule.max_score" and "min_score" in info.value.expected
    with pytest.raises(InvalidArgument, match="rule parameter of embed-text jobs"):
        get_kind("embed-text").parse_rule({"min_score": "1"}, MODEL)
    assert rule_text({"langs": ["de", "en"], "min": 0.5}) == {"langs": "de,en", "min": "0.5"}


def test_unknown_kinds_are_refused_by_name() -> None:
    with pytest.raises(InvalidArgument) as info:
        get_kind("embed-audio")
    assert info.value.field == "kind" and "embed-text" in info.value.expected


# Where a kind's name must never appear: these read the declarations instead.
SEAM_FREE = [
    "coordinator/allmende/coordinator/domain",
    "coordinator/allmende/coordinator/store",
    "coordinator/allmende/coordinator/transport",
    "client/allmende/client/engine",
]


def test_domain_store_transport_and_engine_never_name_a_kind() -> None:
    names = re.compile("|".join(re.escape(f'"{name}"') for name in KINDS))
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in SEAM_FREE
        for path in sorted((ROOT / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if names.search(line)
    ]
    assert found == []


def test_coordinator_code_never_names_a_status_only_fetched_rows_have() -> None:
    """Which statuses only fetched rows may have, and which one the coordinator sets, is
    the kinds' declaration (StatusColumn.fetched_only, .unstable): the coordinator's
    domain, store and transport read it there."""
    labels = {
        label
        for kind in KINDS.values()
        for col in kind.results
        if isinstance(col, StatusColumn)
        for label in (*col.fetched_only, col.unstable)
        if label
    }
    assert {"unreachable", "unstable"} <= labels
    quoted = re.compile("|".join(re.escape(f'"{label}"') for label in sorted(labels)))
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in SEAM_FREE[:3]
        for path in sorted((ROOT / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if quoted.search(line)
    ]
    assert found == []


def test_the_kind_name_check_would_find_one() -> None:
    names = re.compile("|".join(re.escape(f'"{name}"') for name in KINDS))
    assert names.search('    if unit.kind == "embed-text":')
