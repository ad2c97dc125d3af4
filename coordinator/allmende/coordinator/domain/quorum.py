"""The quorum decision over replica results, compared row by row as their kind declares.

GPUs do not agree bit for bit, so two results agree when every row agrees on every column
within its tolerance (for embeddings: cosine at least tau; see protocol/kinds/columns.py).
The deciding group is the largest group of results that all agree with each other (the
earliest such group on ties); it must reach the job's quorum, and what is published is its
consensus (for embeddings the normalised mean), not any one member's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from allmende.protocol.kinds import ResultShape
from allmende.protocol.kinds.base import Comparison


@dataclass(frozen=True)
class QuorumOutcome:
    group: tuple[int, ...]  # indices of the largest mutually agreeing group (earliest first)
    agreement: float  # lowest agreement within the group (1.0 for a group of one)
    reached: bool
    worst: Comparison | None  # the worst pairwise comparison overall, for messages
    vouched: bool = True  # the group holds a proven result (see `decide`)


def decide(
    matrices: list[np.ndarray],
    shape: ResultShape,
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
        pair[(i, j)] = shape.compare(matrices[i], matrices[j], tau)
    worst = min(pair.values(), key=lambda c: (c.agrees, c.agreement)) if pair else None
    largest: QuorumOutcome | None = None
    for size in range(n, 0, -1):
        for group in combinations(range(n), size):
            pairs = [pair[p] for p in combinations(group, 2)]
            if not all(c.agrees for c in pairs):
                continue
            agreement = min((c.agreement for c in pairs), default=1.0)
            vouched = proven is None or any(proven[i] for i in group)
            if vouched and (size >= quorum or largest is None):
                return QuorumOutcome(group, agreement, size >= quorum, worst)
            if largest is None:
                largest = QuorumOutcome(group, agreement, size >= quorum, worst, vouched)
        if largest is not None and size <= quorum:
            break  # a proven group now would be smaller than the quorum
    return largest or QuorumOutcome((), 0.0, False, worst)  # () only when n == 0
