"""Units composed for one lease, and results taken apart again.

Every lease gets its own copy of a unit: the unit's rows in a fresh random order with a few
gold rows (known answers) mixed in, signed for that lease alone. A volunteer cannot tell
gold rows from the others, cannot reuse another volunteer's result (other order, other
gold rows, other lease id), and cannot replay an old one. On submission the coordinator
checks the gold rows, then puts the unit's rows back in unit order.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass, replace

import numpy as np

from allmende.coordinator.domain.quorum import row_cosines
from allmende.coordinator.store.records import GoldRow, LeaseCandidate, LeaseRecord
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.signing import SigningKey
from allmende.protocol.wire import decode_unit, sign_unit

# Composed units index their rows with uint16.
MAX_COMPOSED_ROWS = 65535


@dataclass(frozen=True)
class Composed:
    blob: bytes
    signature: bytes
    unit_sha256: bytes
    composition: bytes
    gold_ids: tuple[int, ...]


def new_rng() -> np.random.Generator:
    return np.random.default_rng(secrets.randbits(128))


def gold_count(rows: int, fraction: float, available: int) -> int:
    """Gold rows to mix into a unit of `rows` rows: at least one when the job wants any."""
    if fraction <= 0 or available == 0:
        return 0
    return min(available, max(1, math.ceil(rows * fraction)), MAX_COMPOSED_ROWS - rows)


def compose(
    key: SigningKey,
    candidate: LeaseCandidate,
    lease_id: str,
    pool: list[GoldRow],
    rng: np.random.Generator,
    now_ms: int,
    earlier: dict[int, GoldRow] | None = None,
) -> Composed:
    """`earlier`: the gold rows the unit's earlier leases got, reused when all still exist,
    so that replicas of a unit cannot find gold rows by comparing their copies."""
    unit = decode_unit(candidate.blob)
    if earlier and all(i in earlier for i in candidate.gold_ids):
        gold = [earlier[i] for i in candidate.gold_ids]
    else:
        if pool:  # a text twice in one unit would give its gold copy away
            own = set(unit.texts)
            pool = [g for g in pool if g.text not in own]
        k = gold_count(candidate.rows, candidate.gold_fraction, len(pool))
        gold = [pool[i] for i in rng.choice(len(pool), size=k, replace=False)] if k else []
    k = len(gold)
    order = rng.permutation(candidate.rows + k).astype("<u2")
    texts = tuple(
        unit.texts[i] if i < candidate.rows else gold[i - candidate.rows].text
        for i in order.tolist()
    )
    blob, signature = sign_unit(
        key, replace(unit, texts=texts, lease_id=lease_id, created_ms=now_ms)
    )
    return Composed(
        blob,
        signature,
        hashlib.sha256(blob).digest(),
        order.tobytes(),
        tuple(g.gold_id for g in gold),
    )


@dataclass(frozen=True)
class Opened:
    matrix: np.ndarray  # the unit's rows, in unit order
    gold_checked: int  # gold rows compared
    gold_missed: int  # of those, rows below tau
    gold_min: float  # the lowest gold row cosine (1.0 when none)


def composed_rows(lease: LeaseRecord, unit_rows: int) -> int:
    return len(lease.composition) // 2 if lease.composition else unit_rows


def open_result(
    lease: LeaseRecord,
    unit_rows: int,
    matrix: np.ndarray,
    gold: dict[int, GoldRow],
    tau: float,
) -> Opened:
    """Check a composed result's gold rows and return the unit's rows in unit order."""
    if not lease.composition:
        return Opened(matrix, 0, 0, 1.0)
    order = np.frombuffer(lease.composition, dtype="<u2").astype(np.int64)
    if matrix.shape[0] != order.size:
        raise InvalidArgument("envelope.rows", f"{order.size} (the rows leased), got {len(matrix)}")
    is_gold = order >= unit_rows
    answers = []
    for source in order[is_gold].tolist():
        row = gold.get(lease.gold_ids[source - unit_rows])
        answers.append(None if row is None else np.frombuffer(row.answer, dtype="<f4"))
    known = [i for i, a in enumerate(answers) if a is not None]
    missed, lowest = 0, 1.0
    if known:
        expected = np.stack([answers[i] for i in known])  # type: ignore[misc]
        got = matrix[is_gold][known]
        cos = row_cosines(got, expected)
        missed = int((cos < tau).sum())
        lowest = float(cos.min())
    unit_matrix = np.empty((unit_rows, matrix.shape[1]), dtype=matrix.dtype)
    unit_matrix[order[~is_gold]] = matrix[~is_gold]
    return Opened(unit_matrix, len(known), missed, lowest)
