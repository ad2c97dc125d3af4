"""Row-by-row comparison of replica results, and the quorum decision built on it.

GPUs do not agree bit for bit, so two results agree when every row's cosine similarity is
at least tau. The deciding group is the largest group of results that all agree with each
other (the earliest such group on ties); it must reach the job's quorum, and what is
published is its consensus (the normalised mean), not any one member's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b` (zero rows give 0)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    a64 = a.astype(np.float64, copy=False)
    b64 = b.astype(np.float64, copy=False)
    dots = np.einsum("ij,ij->i", a64, b64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return np.asarray(cos)


@dataclass(frozen=True)
class Comparison:
    min_cosine: float
    worst_row: int

    def agrees(self, tau: float) -> bool:
        return self.min_cosine >= tau


def compare(a: np.ndarray, b: np.ndarray) -> Comparison:
    cos = row_cosines(a, b)
    if cos.size == 0:
        return Comparison(1.0, -1)
    worst = int(np.argmin(cos))
    return Comparison(float(cos[worst]), worst)


@dataclass(frozen=True)
class QuorumOutcome:
    group: tuple[int, ...]  # indices of the largest mutually agreeing group (earliest first)
    agreement: float  # lowest row cosine within the group (1.0 for a group of one)
    reached: bool
    worst: Comparison | None  # the worst pairwise comparison overall, for messages
    vouched: bool = True  # the group holds a proven result (see `decide`)


def decide(
    matrices: list[np.ndarray],
    tau: float,
    quorum: int,
    proven: Sequence[bool] | None = None,
) -> QuorumOutcome:
    """Find the largest group of results that pairwise agree within tau.

    `matrices` are in arrival order; ties between groups of the same size go to the group
    whose members arrived first. The number of replicas is small (bounded by the job's
    maximum), so trying every group is cheap and exact.

    `proven` (one flag per result): the largest group of at least `quorum` results that
    holds a proven result wins over larger groups without one (new accounts cannot outvote
    a proven volunteer by numbers alone). Without such a group the largest group is
    returned with `vouched` False.
    """
    n = len(matrices)
    pair: dict[tuple[int, int], Comparison] = {}
    for i, j in combinations(range(n), 2):
        pair[(i, j)] = compare(matrices[i], matrices[j])
    worst = min(pair.values(), key=lambda c: c.min_cosine) if pair else None
    largest: QuorumOutcome | None = None
    for size in range(n, 0, -1):
        for group in combinations(range(n), size):
            pairs = [pair[p] for p in combinations(group, 2)]
            if not all(c.agrees(tau) for c in pairs):
                continue
            agreement = min((c.min_cosine for c in pairs), default=1.0)
            vouched = proven is None or any(proven[i] for i in group)
            if vouched and (size >= quorum or largest is None):
                return QuorumOutcome(group, agreement, size >= quorum, worst)
            if largest is None:
                largest = QuorumOutcome(group, agreement, size >= quorum, worst, vouched)
        if largest is not None and size <= quorum:
            break  # a proven group now would be smaller than the quorum
    return largest or QuorumOutcome((), 0.0, False, worst)  # () only when n == 0


def consensus(matrices: list[np.ndarray], normalise: bool) -> np.ndarray:
    """The rows to publish for a group of agreeing results: their element-wise mean, each
    row scaled back to unit length when the kind's rows are unit-normalised.

    Not the first result's values: a replica whose rows are slightly rotated still agrees
    within tau, and must not decide alone what is published. With two replicas the mean
    halves such a deviation; with more, each replica's weight shrinks."""
    mean = np.mean(np.stack([m.astype(np.float64, copy=False) for m in matrices]), axis=0)
    if normalise:
        norms = np.linalg.norm(mean, axis=1, keepdims=True)
        mean = mean / np.where(norms > 0, norms, 1.0)
    return np.asarray(mean, dtype=np.float32)
