"""Units composed per lease and results taken apart again
(coordinator/allmende/coordinator/domain/compose.py), with real signed units and real keys."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from allmende.coordinator.domain.compose import (
    MAX_COMPOSED_ROWS,
    compose,
    composed_rows,
    gold_count,
    open_result,
)
from allmende.coordinator.store.records import GoldRow, LeaseCandidate, LeaseRecord
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds.embed_text import EMBED_TEXT
from allmende.protocol.models import DEFAULT_MODEL, ModelRegistry
from allmende.protocol.signing import SigningKey
from allmende.protocol.wire import WorkUnit, decode_unit, open_unit, sign_unit
from tests.integration.rawclient import text_rows

KEY = SigningKey.generate()
DIMS = 16
TAU = 0.999
# embed-text's result for a 16-dimensional model
SHAPE = EMBED_TEXT.shape(replace(ModelRegistry().get(DEFAULT_MODEL), dims=DIMS), "float16")
UNIT_TEXTS = tuple(f"unit text {i}" for i in range(10))
GOLD_TEXTS = [f"gold text {i}" for i in range(6)]


def gold_pool() -> list[GoldRow]:
    answers = text_rows(GOLD_TEXTS, DIMS)
    return [
        GoldRow(100 + i, "job-1", text, answers[i].astype("<f4").tobytes())
        for i, text in enumerate(GOLD_TEXTS)
    ]


def candidate(texts: tuple[str, ...] = UNIT_TEXTS, gold_fraction: float = 0.2) -> LeaseCandidate:
    unit = WorkUnit(
        unit_id="unit-1",
        job_id="job-1",
        kind="embed-text",
        model="m",
        model_sha256="0" * 64,
        texts=texts,
        dims=DIMS,
        result_dtype="float16",
        created_ms=1,
    )
    blob, _ = sign_unit(KEY, unit)
    return LeaseCandidate(
        unit_id="unit-1",
        job_id="job-1",
        kind="embed-text",
        blob=blob,
        rows=len(texts),
        busy=0,
        quorum=2,
        redundancy=2,
        gold_fraction=gold_fraction,
        deadline_ms=10_000,
    )


def leased(
    pool: list[GoldRow] | None = None, seed: int = 0, gold_fraction: float = 0.2
) -> tuple[WorkUnit, LeaseRecord]:
    """Compose a unit for lease 'lease-<seed>'; the unit as sent and the lease as stored."""
    c = compose(
        KEY,
        candidate(gold_fraction=gold_fraction),
        f"lease-{seed}",
        gold_pool() if pool is None else pool,
        np.random.default_rng(seed),
        now_ms=5,
    )
    unit = open_unit(c.blob, c.signature, KEY.public_key)  # signed by the coordinator key
    assert c.unit_sha256 == hashlib.sha256(c.blob).digest()
    lease = LeaseRecord(
        f"lease-{seed}", "unit-1", "v1", "active", 10_000, c.unit_sha256, c.composition, c.gold_ids
    )
    return unit, lease


# ------------------------------------------------------------------ gold_count


def test_gold_count() -> None:
    assert gold_count(100, 0.0, 50) == 0  # the job wants none
    assert gold_count(100, 0.02, 0) == 0  # none known yet
    assert gold_count(1, 0.02, 50) == 1  # at least one
    assert gold_count(100, 0.02, 50) == 2
    assert gold_count(101, 0.02, 50) == 3  # rounded up
    assert gold_count(100, 0.5, 7) == 7  # no more than the pool holds
    assert gold_count(MAX_COMPOSED_ROWS, 0.5, 50) == 0  # uint16 indices are full
    assert gold_count(MAX_COMPOSED_ROWS - 3, 0.5, 50) == 3


# ------------------------------------------------------------------ compose


def test_a_composed_unit_holds_the_rows_in_a_lease_order_and_hidden_gold_rows() -> None:
    unit, lease = leased()
    k = gold_count(len(UNIT_TEXTS), 0.2, len(GOLD_TEXTS))
    assert k == 2
    assert unit.lease_id == "lease-0"
    assert unit.created_ms == 5
    assert unit.unit_id == "unit-1" and unit.dims == DIMS
    assert len(unit.texts) == len(UNIT_TEXTS) + k
    assert len(lease.gold_ids) == k
    assert composed_rows(lease, len(UNIT_TEXTS)) == len(UNIT_TEXTS) + k
    gold_texts = {g.gold_id: g.text for g in gold_pool()}
    assert sorted(unit.texts) == sorted([*UNIT_TEXTS, *(gold_texts[g] for g in lease.gold_ids)])
    order = np.frombuffer(lease.composition, dtype="<u2")
    for position, source in enumerate(order.tolist()):
        expected = (
            UNIT_TEXTS[source]
            if source < len(UNIT_TEXTS)
            else gold_texts[lease.gold_ids[source - len(UNIT_TEXTS)]]
        )
        assert unit.texts[position] == expected


def test_two_leases_get_different_orders_gold_rows_and_bytes() -> None:
    first, lease_a = leased(seed=1)
    second, lease_b = leased(seed=2)
    assert first.texts != second.texts
    assert lease_a.composition != lease_b.composition
    assert lease_a.unit_sha256 != lease_b.unit_sha256
    unit_rows = set(UNIT_TEXTS)
    assert {t for t in first.texts if t in unit_rows} == {t for t in second.texts if t in unit_rows}


def test_without_a_gold_pool_or_gold_fraction_the_unit_is_only_reordered() -> None:
    for pool, fraction in (([], 0.2), (None, 0.0)):
        unit, lease = leased(pool=pool, gold_fraction=fraction)
        assert lease.gold_ids == ()
        assert sorted(unit.texts) == sorted(UNIT_TEXTS)
        assert np.frombuffer(lease.composition, dtype="<u2").max() < len(UNIT_TEXTS)


# ------------------------------------------------------------------ open_result


def honest(unit: WorkUnit) -> np.ndarray:
    return text_rows(unit.texts, unit.dims)


def by_id() -> dict[int, GoldRow]:
    return {g.gold_id: g for g in gold_pool()}


def gold_positions(lease: LeaseRecord, rows: int) -> list[int]:
    order = np.frombuffer(lease.composition, dtype="<u2")
    return [i for i, source in enumerate(order.tolist()) if source >= rows]


def test_open_result_puts_rows_back_in_unit_order_and_checks_every_gold_row() -> None:
    unit, lease = leased(seed=3)
    opened = open_result(lease, len(UNIT_TEXTS), honest(unit), by_id(), SHAPE, TAU)
    assert opened.gold_checked == 2
    assert opened.gold_missed == 0
    assert opened.gold_min == pytest.approx(1.0, abs=1e-6)
    assert opened.matrix.shape == (len(UNIT_TEXTS), DIMS)
    np.testing.assert_allclose(opened.matrix, text_rows(UNIT_TEXTS, DIMS), atol=1e-6)


def test_open_result_counts_gold_misses_and_reports_the_lowest_cosine() -> None:
    unit, lease = leased(seed=4)
    matrix = honest(unit)
    first, second = gold_positions(lease, len(UNIT_TEXTS))
    matrix[first] = text_rows(["something else"], DIMS)[0]
    opened = open_result(lease, len(UNIT_TEXTS), matrix, by_id(), SHAPE, TAU)
    assert (opened.gold_checked, opened.gold_missed) == (2, 1)
    assert opened.gold_min < 0.5
    matrix[second] = -matrix[second]
    opened = open_result(lease, len(UNIT_TEXTS), matrix, by_id(), SHAPE, TAU)
    assert (opened.gold_checked, opened.gold_missed) == (2, 2)
    assert opened.gold_min == pytest.approx(-1.0, abs=1e-6)
    # the unit's own rows are still put back in order
    np.testing.assert_allclose(opened.matrix, text_rows(UNIT_TEXTS, DIMS), atol=1e-6)


def test_a_gold_row_close_to_tau_passes_and_one_just_below_misses() -> None:
    unit, lease = leased(seed=5)
    position = gold_positions(lease, len(UNIT_TEXTS))[0]
    matrix = honest(unit)
    row = matrix[position].astype(np.float64)
    other = text_rows(["orthogonal direction"], DIMS)[0].astype(np.float64)
    other -= other.dot(row) * row
    other /= np.linalg.norm(other)
    for cosine, missed in ((0.9992, 0), (0.9985, 1)):
        matrix[position] = (cosine * row + np.sqrt(1 - cosine**2) * other).astype(np.float32)
        opened = open_result(lease, len(UNIT_TEXTS), matrix, by_id(), SHAPE, TAU)
        assert opened.gold_missed == missed
        assert opened.gold_min == pytest.approx(cosine, abs=1e-5)


def test_gold_rows_no_longer_known_are_not_checked() -> None:
    unit, lease = leased(seed=6)
    matrix = honest(unit)
    for position in gold_positions(lease, len(UNIT_TEXTS)):
        matrix[position] = -matrix[position]  # wrong, but nobody can tell any more
    known = {i: g for i, g in by_id().items() if i != lease.gold_ids[0]}
    opened = open_result(lease, len(UNIT_TEXTS), matrix, known, SHAPE, TAU)
    assert (opened.gold_checked, opened.gold_missed) == (1, 1)
    opened = open_result(lease, len(UNIT_TEXTS), matrix, {}, SHAPE, TAU)
    assert (opened.gold_checked, opened.gold_missed, opened.gold_min) == (0, 0, 1.0)
    np.testing.assert_allclose(opened.matrix, text_rows(UNIT_TEXTS, DIMS), atol=1e-6)


def test_a_result_in_another_leases_order_comes_out_wrong() -> None:
    unit_a, _ = leased(seed=7)
    _, lease_b = leased(seed=8)
    opened = open_result(lease_b, len(UNIT_TEXTS), honest(unit_a), by_id(), SHAPE, TAU)
    wrong_rows = (np.einsum("ij,ij->i", opened.matrix, text_rows(UNIT_TEXTS, DIMS)) < TAU).sum()
    assert wrong_rows > 0  # (seeds 7 and 8 put the unit's rows in different places)


@pytest.mark.parametrize("delta", [-1, 1, -3])
def test_a_result_with_the_wrong_row_count_is_invalid(delta: int) -> None:
    unit, lease = leased(seed=9)
    matrix = honest(unit)
    rows = matrix.shape[0] + delta
    wrong = matrix[:rows] if delta < 0 else np.vstack([matrix, matrix[:delta]])
    with pytest.raises(InvalidArgument) as info:
        open_result(lease, len(UNIT_TEXTS), wrong, by_id(), SHAPE, TAU)
    assert info.value.field == "envelope.rows"
    assert f"{matrix.shape[0]} (the rows leased), got {rows}" in info.value.message


def test_a_lease_without_composition_is_taken_as_it_is() -> None:
    lease = LeaseRecord("lease-x", "unit-1", "v1", "active", 1)
    matrix = text_rows(UNIT_TEXTS, DIMS)
    opened = open_result(lease, len(UNIT_TEXTS), matrix, by_id(), SHAPE, TAU)
    assert opened.matrix is matrix
    assert (opened.gold_checked, opened.gold_missed, opened.gold_min) == (0, 0, 1.0)
    assert composed_rows(lease, len(UNIT_TEXTS)) == len(UNIT_TEXTS)


def test_the_planned_unit_is_unchanged_by_composing() -> None:
    c = candidate()
    before = decode_unit(c.blob)
    compose(KEY, c, "lease-z", gold_pool(), np.random.default_rng(0), now_ms=9)
    assert decode_unit(c.blob) == before
    assert before.lease_id == ""
