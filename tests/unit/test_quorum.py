"""Tests of row-by-row result comparison and the quorum decision."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from allmende.coordinator.domain.quorum import QuorumOutcome
from allmende.coordinator.domain.quorum import decide as quorum_decide
from allmende.protocol import codec
from allmende.protocol.kinds import ResultShape
from allmende.protocol.kinds.base import Comparison
from allmende.protocol.kinds.columns import row_cosines
from allmende.protocol.kinds.embed_text import EMBED_TEXT
from allmende.protocol.models import DEFAULT_MODEL, ModelRegistry


def shape(dims: int) -> ResultShape:
    """embed-text's result for a model of `dims` dimensions."""
    return EMBED_TEXT.shape(replace(ModelRegistry().get(DEFAULT_MODEL), dims=dims), "float16")


def compare(a: np.ndarray, b: np.ndarray, tau: float = 0.999) -> Comparison:
    return shape(a.shape[1]).compare(a, b, tau)


def decide(
    matrices: list[np.ndarray], tau: float, quorum: int, proven: list[bool] | None = None
) -> QuorumOutcome:
    dims = matrices[0].shape[1] if matrices else 384
    return quorum_decide(matrices, shape(dims), tau, quorum, proven)


def consensus(matrices: list[np.ndarray]) -> np.ndarray:
    return shape(matrices[0].shape[1]).combine(matrices)


def unit_rows(rows: int = 64, dims: int = 384, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((rows, dims)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def as_fp16(m: np.ndarray) -> np.ndarray:
    """What the coordinator sees after a replica went through the codec."""
    enc = codec.encode(m, "float16")
    return codec.decode(enc.payload, "float16", enc.rows, enc.dims)


def corrupt_row(m: np.ndarray, row: int, seed: int = 99) -> np.ndarray:
    out = m.copy()
    v = np.random.default_rng(seed).standard_normal(m.shape[1]).astype(np.float32)
    out[row] = v / np.linalg.norm(v)
    return out


# ------------------------------------------------------------------ row_cosines / compare


def test_row_cosines_of_known_vectors() -> None:
    a = np.array([[1, 0], [1, 0], [1, 1], [3, 4]], dtype=np.float32)
    b = np.array([[2, 0], [0, 5], [-1, -1], [4, 3]], dtype=np.float32)
    np.testing.assert_allclose(row_cosines(a, b), [1.0, 0.0, -1.0, 24 / 25], atol=1e-12)


def test_row_cosines_ignores_scale() -> None:
    a = unit_rows(8, 16)
    np.testing.assert_allclose(row_cosines(a, 7.5 * a), np.ones(8), atol=1e-12)


def test_zero_vector_rows_give_zero_not_nan() -> None:
    a = np.array([[0, 0], [1, 0]], dtype=np.float32)
    b = np.array([[0, 0], [0, 0]], dtype=np.float32)
    with np.errstate(all="raise"):  # no hidden divide-by-zero either
        cos = row_cosines(a, b)
    np.testing.assert_array_equal(cos, [0.0, 0.0])
    # so an all-zero answer never agrees with anything, itself included
    assert not compare(a, b, 0.5).agrees


def test_row_cosines_refuses_different_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        row_cosines(np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError):
        row_cosines(np.zeros((2, 3)), np.zeros((2, 4)))


def test_compare_names_the_worst_row() -> None:
    a = unit_rows(20, 32)
    b = corrupt_row(a, 13)
    c = compare(a, b)
    assert c.worst_row == 13
    assert c.agreement < 0.5
    assert compare(a, a).agreement == pytest.approx(1.0, abs=1e-12)


def test_compare_of_zero_rows_agrees_trivially() -> None:
    empty = np.zeros((0, 384), dtype=np.float32)
    c = compare(empty, empty, 1.0)
    assert c == Comparison(1.0, -1, True, "", "agreement")
    assert c.agrees


def test_agrees_is_inclusive_at_tau() -> None:
    a = unit_rows(4, 8, seed=5)
    b = a.copy()
    b[1] = a[1] + 0.05 * unit_rows(1, 8, seed=6)[0]
    exact = compare(a, b).agreement
    assert compare(a, b, exact).agrees
    assert not compare(a, b, float(np.nextafter(exact, 2.0))).agrees
    assert compare(a, b, float(np.nextafter(exact, 0.0))).agrees


# ------------------------------------------------------------------ decide


def test_two_agreeing_results_reach_quorum() -> None:
    a = unit_rows()
    out = decide([a, a.copy()], tau=0.999, quorum=2)
    assert out.reached
    assert out.group == (0, 1)
    assert out.agreement == pytest.approx(1.0, abs=1e-9)
    assert out.worst is not None and out.worst.agreement == out.agreement


def test_one_corrupted_row_breaks_agreement() -> None:
    a = unit_rows()
    b = corrupt_row(a, 41)
    out = decide([a, b], tau=0.999, quorum=2)
    assert not out.reached
    assert len(out.group) == 1
    assert out.group == (0,)  # the earliest result stands alone
    assert out.worst is not None and out.worst.worst_row == 41


def test_three_results_with_one_liar_pick_the_honest_pair() -> None:
    honest = unit_rows()
    liar = corrupt_row(honest, 5)
    for order, expected in [
        ([liar, honest, as_fp16(honest)], (1, 2)),
        ([honest, liar, as_fp16(honest)], (0, 2)),
        ([honest, as_fp16(honest), liar], (0, 1)),
    ]:
        out = decide(order, tau=0.999, quorum=2)
        assert out.reached
        assert out.group == expected
        assert out.agreement >= 0.999
        assert out.worst is not None and out.worst.worst_row == 5


def test_tie_between_groups_goes_to_the_earliest() -> None:
    # Two honest-looking but disagreeing camps of equal size: the camp that arrived first wins.
    a = unit_rows(seed=1)
    b = unit_rows(seed=2)
    out = decide([b, a, a.copy(), b.copy()], tau=0.999, quorum=2)
    assert out.reached
    assert out.group == (0, 3)
    single = decide([a, b], tau=0.999, quorum=2)
    assert single.group == (0,)
    assert not single.reached


def test_group_must_agree_pairwise_not_just_with_one_member() -> None:
    # b sits between a and c: a~b and b~c but a!~c, so no group of three.
    a = np.array([[1.0, 0.0]])
    theta = np.arccos(0.9995)
    b = np.array([[np.cos(theta), np.sin(theta)]])
    c = np.array([[np.cos(2 * theta), np.sin(2 * theta)]])
    out = decide([a, b, c], tau=0.999, quorum=3)
    assert compare(a, b, 0.999).agrees and compare(b, c, 0.999).agrees
    assert not compare(a, c, 0.999).agrees
    assert not out.reached
    assert out.group == (0, 1)


def test_quorum_larger_than_the_group_is_not_reached() -> None:
    a = unit_rows()
    out = decide([a, a.copy()], tau=0.999, quorum=3)
    assert out.group == (0, 1)
    assert not out.reached


def test_single_result_reaches_a_quorum_of_one() -> None:
    out = decide([unit_rows()], tau=0.999, quorum=1)
    assert out.reached
    assert out.group == (0,)
    assert out.agreement == 1.0
    assert out.worst is None


def test_no_results_reach_nothing() -> None:
    out = decide([], tau=0.999, quorum=1)
    assert not out.reached
    assert out.group == ()
    assert out.worst is None


def test_zero_row_results_agree() -> None:
    empty = np.zeros((0, 384), dtype=np.float32)
    out = decide([empty, empty.copy()], tau=0.999, quorum=2)
    assert out.reached
    assert out.group == (0, 1)


def test_tau_boundary_in_decide() -> None:
    a = unit_rows(4, 8, seed=5)
    b = a.copy()
    b[2] = a[2] + 0.03 * unit_rows(1, 8, seed=6)[0]
    exact = compare(a, b).agreement
    assert 0.99 < exact < 1.0
    assert decide([a, b], tau=exact, quorum=2).reached
    assert not decide([a, b], tau=float(np.nextafter(exact, 2.0)), quorum=2).reached
    assert decide([a, b], tau=exact, quorum=2).agreement == exact


def test_fp16_noise_from_batch_differences_still_agrees_at_default_tau() -> None:
    # Two honest replicas: the same embeddings with float32 noise of the size that
    # batch-shape and kernel differences cause, each rounded to fp16 by the codec.
    base = unit_rows(256, 384, seed=11)
    rng = np.random.default_rng(12)
    replicas = []
    for _ in range(2):
        noisy = base + rng.normal(0.0, 1e-4, base.shape).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        replicas.append(as_fp16(noisy))
    assert not np.array_equal(replicas[0], replicas[1])
    out = decide(replicas, tau=0.999, quorum=2)
    assert out.reached
    assert out.agreement > 0.9999


# ------------------------------------------------------------------ issue 15


def test_a_group_without_a_proven_result_is_returned_but_not_vouched() -> None:
    fake = unit_rows(seed=11)
    outcome = decide([fake, fake.copy()], 0.999, 2, proven=[False, False])
    assert outcome.group == (0, 1) and outcome.reached and not outcome.vouched


def test_a_proven_group_of_the_quorum_beats_a_larger_unproven_one() -> None:
    honest = unit_rows()
    fake = unit_rows(seed=11)
    matrices = [fake, fake.copy(), fake.copy(), honest, honest.copy()]
    outcome = decide(matrices, 0.999, 2, proven=[False, False, False, True, False])
    assert outcome.group == (3, 4) and outcome.reached and outcome.vouched
    # below the quorum a proven result alone does not win
    outcome = decide(matrices[:4], 0.999, 2, proven=[False, False, False, True])
    assert outcome.group == (0, 1, 2) and not outcome.vouched


def test_consensus_is_the_normalised_mean_not_the_first_result() -> None:
    honest = unit_rows()
    turned = honest.copy()
    turned[:, 0] += 0.04
    turned /= np.linalg.norm(turned, axis=1, keepdims=True)
    mean = consensus([turned, honest])
    assert np.allclose(np.linalg.norm(mean, axis=1), 1.0, atol=1e-6)
    assert (row_cosines(mean, honest) > row_cosines(turned, honest)).all()
    assert not np.allclose(mean, turned)
    assert np.allclose(consensus([honest, honest]), honest, atol=1e-6)
