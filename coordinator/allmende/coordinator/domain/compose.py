"""Units composed for one lease, and results taken apart again.

Every lease gets its own copy of a unit: the unit's rows in a fresh random order with a few
gold rows (known answers) and a decoy mixed in, signed for that lease alone. A volunteer cannot tell
gold rows from the others, cannot reuse another volunteer's result (other order, other
gold rows, other lease id), and cannot replay an old one. On submission the coordinator
checks the gold rows, then puts the unit's rows back in unit order.

Rows a volunteer fetches from a URL keep their URL in the new order (WorkUnit.urls); gold
rows and decoys always carry their bytes. A fetched row's image digest cannot be checked
against the unit (`composed_images` gives None for it), and only such rows may report a
fetch failure (`composed_fetched`, ResultShape.check_sources).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from allmende.coordinator.domain.jobs import MAX_UNIT_BYTES
from allmende.coordinator.store.records import GoldRow, LeaseCandidate, LeaseRecord
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds import ResultShape
from allmende.protocol.limits import MAX_TEXT_BYTES
from allmende.protocol.signing import SigningKey
from allmende.protocol.wire import decode_unit, sign_unit

# Composed units index their rows with uint16.
MAX_COMPOSED_ROWS = 65535
# Bytes of gold rows (texts and images) one composed unit carries at most: image rows are
# large, and a unit of small images must not grow past a message with large gold images.
MAX_GOLD_BYTES = 2 * 1024 * 1024
# The most a composed unit weighs: the planned unit, its gold rows, a decoy and framing.
MAX_COMPOSED_BYTES = MAX_UNIT_BYTES + MAX_GOLD_BYTES + MAX_TEXT_BYTES + 64 * 1024


@dataclass(frozen=True)
class Composed:
    blob: bytes
    signature: bytes
    unit_sha256: bytes
    composition: bytes
    gold_ids: tuple[int, ...]  # the unit's shared gold rows, then this lease's own
    shared: int = -1  # how many of gold_ids are shared (-1: all)
    decoys: tuple[str, ...] = ()  # texts repeated as decoys
    sample: tuple[str, ...] = ()  # ordinary texts of this unit, for later leases' decoys


@dataclass(frozen=True)
class Viewer:
    """What the volunteer a unit is composed for has seen, so that gold rows never repeat
    a text it saw as an ordinary row, and repeats stop meaning "gold".

    `seen_units`: units it leased (a gold row taken from one of them is a text it
    computed); `given`: gold rows it got recently (its own extra row is one it has not);
    `decoys`: ordinary texts it got in other leases, repeated once per lease like a gold
    row, with their answers ignored."""

    seen_units: frozenset[str] = frozenset()
    given: frozenset[int] = frozenset()
    decoys: tuple[str, ...] = ()

    def may_see(self, row: GoldRow) -> bool:
        return not row.unit_id or row.unit_id not in self.seen_units

    def after(self, unit_id: str, gold_ids: Sequence[int], texts: Sequence[str]) -> Viewer:
        """The view once a lease of `unit_id` with these gold rows was composed."""
        return Viewer(
            self.seen_units | {unit_id},
            self.given | set(gold_ids),
            (*self.decoys, *texts),
        )


def new_rng() -> np.random.Generator:
    return np.random.default_rng(secrets.randbits(128))


def gold_count(rows: int, fraction: float, available: int) -> int:
    """Gold rows to mix into a unit of `rows` rows: at least one when the job wants any."""
    if fraction <= 0 or available == 0:
        return 0
    return min(available, max(1, math.ceil(rows * fraction)), MAX_COMPOSED_ROWS - rows)


def _within(rows: list[GoldRow], budget: int) -> list[GoldRow]:
    """The first of `rows` whose texts and images fit in `budget` bytes (in order, so that
    every replica of a unit keeps the same shared rows)."""
    kept, used = [], 0
    for row in rows:
        used += len(row.text.encode("utf-8", "surrogatepass")) + len(row.image)
        if used > budget:
            break
        kept.append(row)
    return kept


def _pick(pool: list[GoldRow], k: int, rng: np.random.Generator) -> list[GoldRow]:
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)] if k else []


def compose(
    key: SigningKey,
    candidate: LeaseCandidate,
    lease_id: str,
    pool: list[GoldRow],
    rng: np.random.Generator,
    now_ms: int,
    earlier: dict[int, GoldRow] | None = None,
    viewer: Viewer | None = None,
    own_row: bool = True,
) -> Composed:
    """`earlier`: the gold rows the unit's earlier leases got, reused when all still exist,
    so that replicas of a unit cannot find gold rows by comparing their copies.

    With a `viewer` (the volunteer it is for), each lease also gets one gold row of its own
    that this volunteer has not been given recently, and one decoy: an ordinary text it got
    in another lease. A copier that re-orders a partner's honest rows has no answer for the
    own row; a volunteer answering only texts it has seen before misses it; and a text seen
    twice may be a decoy as well as a gold row. No gold row is a text from a unit the
    volunteer leased, and the unit's gold rows too are ones it was not given lately where
    the pool allows. Without `own_row` (a unit that goes out alone: no partner to copy)
    the lease gets no row of its own; with a decoy only every other lease, at random."""
    unit = decode_unit(candidate.blob)
    # A row is its inputs: its text, and its image for image kinds. Gold rows match rows
    # of the unit by all of them.
    own_rows = {unit.row(i) for i in range(unit.rows)}
    if pool:  # a row twice in one unit would give its gold copy away
        pool = [g for g in pool if g.inputs not in own_rows]
    if viewer is not None:
        pool = [g for g in pool if viewer.may_see(g)]
    if earlier and all(i in earlier for i in candidate.gold_ids):
        shared = [earlier[i] for i in candidate.gold_ids]
    else:
        k = gold_count(candidate.rows, candidate.gold_fraction, len(pool))
        unseen = [g for g in pool if viewer is None or g.gold_id not in viewer.given]
        shared = _pick(unseen, k, rng) if len(unseen) >= k else _pick(pool, k, rng)
    own: list[GoldRow] = []
    decoys: list[str] = []
    # Decoys are texts a volunteer saw before; an image kind's rows are too large to keep
    # per volunteer for that, so its leases get gold rows without decoys.
    with_decoys = not unit.images
    if viewer is not None and candidate.gold_fraction > 0:
        taken_rows = {g.inputs for g in shared}
        taken = {g.gold_id for g in shared} | {g.text for g in shared}
        left = [g for g in pool if g.gold_id not in taken and g.inputs not in taken_rows]
        if with_decoys:
            left = [g for g in left if g.text not in taken]
        fresh = [g for g in left if g.gold_id not in viewer.given] or left
        own = _pick(fresh, min(1, len(fresh)), rng) if own_row else []
        own_texts = set(unit.texts)
        repeats = [t for t in dict.fromkeys(viewer.decoys) if t not in own_texts]
        repeats = [t for t in repeats if t not in taken and all(t != g.text for g in own)]
        if with_decoys and repeats and rng.random() < 0.5:
            decoys = [repeats[int(rng.integers(len(repeats)))]]
    sample = min(2, unit.rows) if viewer is not None and with_decoys else 0
    shared = _within(shared, MAX_GOLD_BYTES)
    own = _within(own, MAX_GOLD_BYTES - sum(len(g.text) + len(g.image) for g in shared))
    gold = shared + own
    k = len(gold)
    extra = k + len(decoys)
    if candidate.rows + extra > MAX_COMPOSED_ROWS:
        gold, decoys, own = shared, [], []
        k = extra = len(shared)
    order = rng.permutation(candidate.rows + extra).astype("<u2")
    rows = [
        unit.row(i)
        if i < candidate.rows
        else gold[i - candidate.rows].inputs
        if i < candidate.rows + k
        else (decoys[i - candidate.rows - k], b"")
        for i in order.tolist()
    ]
    texts = tuple(text for text, _ in rows)
    images = tuple(image for _, image in rows) if unit.images else ()
    # URL rows keep their URL in the new order; gold rows and decoys always carry bytes.
    urls = (
        tuple(unit.urls[i] if i < candidate.rows else "" for i in order.tolist())
        if unit.urls
        else ()
    )
    blob, signature = sign_unit(
        key,
        replace(unit, texts=texts, images=images, urls=urls, lease_id=lease_id, created_ms=now_ms),
    )
    return Composed(
        blob,
        signature,
        hashlib.sha256(blob).digest(),
        order.tobytes(),
        tuple(g.gold_id for g in gold),
        len(shared),
        tuple(decoys),
        tuple(unit.texts[i] for i in rng.choice(len(unit.texts), size=sample, replace=False)),
    )


@dataclass(frozen=True)
class Opened:
    matrix: np.ndarray  # the unit's rows, in unit order
    gold_checked: int  # gold rows compared
    gold_missed: int  # of those, rows that disagree with their answer
    gold_min: float  # the lowest agreement of a gold row (cosine for embeddings; 1.0: none)
    # Every gold row agrees with room to spare: half-way from the threshold to identical
    # on every column (for embeddings: cosine >= (1 + tau) / 2).
    gold_close: bool = True


def composed_rows(lease: LeaseRecord, unit_rows: int) -> int:
    return len(lease.composition) // 2 if lease.composition else unit_rows


def open_result(
    lease: LeaseRecord,
    unit_rows: int,
    matrix: np.ndarray,
    gold: dict[int, GoldRow],
    shape: ResultShape,
    tau: float,
) -> Opened:
    """Check a composed result's gold rows and return the unit's rows in unit order."""
    if not lease.composition:
        return Opened(matrix, 0, 0, 1.0)
    order = np.frombuffer(lease.composition, dtype="<u2").astype(np.int64)
    if matrix.shape[0] != order.size:
        raise InvalidArgument("envelope.rows", f"{order.size} (the rows leased), got {len(matrix)}")
    is_unit = order < unit_rows
    is_gold = ~is_unit & (order < unit_rows + len(lease.gold_ids))  # beyond: decoys, ignored
    answers = []
    for source in order[is_gold].tolist():
        row = gold.get(lease.gold_ids[source - unit_rows])
        answer = None if row is None else np.frombuffer(row.answer, dtype="<f4")
        # A row of another shape (a pool shared across jobs of one model) is not an answer.
        answers.append(answer if answer is not None and answer.size == shape.width else None)
    known = [i for i, a in enumerate(answers) if a is not None]
    missed, lowest, close = 0, 1.0, True
    if known:
        expected = np.stack([answers[i] for i in known])  # type: ignore[misc]
        got = matrix[is_gold][known]
        ok, slack = shape.measures(got, expected, tau)
        missed = int((~ok).sum())
        lowest = shape.compare(got, expected, tau).agreement
        close = bool((slack >= 0.5).all())
    unit_matrix = np.empty((unit_rows, matrix.shape[1]), dtype=matrix.dtype)
    unit_matrix[order[is_unit]] = matrix[is_unit]
    return Opened(unit_matrix, len(known), missed, lowest, close)


def composed_images(
    lease: LeaseRecord,
    images: Sequence[bytes],
    gold: dict[int, GoldRow],
    urls: Sequence[str] = (),
) -> list[bytes | None]:
    """The image of each row as the lease's volunteer got it (None: a row whose image the
    coordinator does not hold, e.g. a gold row dropped since, or a row the volunteer
    fetched from its URL in `urls`), so that a result's digests are checked in the order
    the volunteer sent them."""

    def own(i: int) -> bytes | None:
        return None if urls and urls[i] else images[i]

    if not lease.composition:
        return [own(i) for i in range(len(images))]
    out: list[bytes | None] = []
    for source in np.frombuffer(lease.composition, dtype="<u2").tolist():
        if source < len(images):
            out.append(own(source))
        elif source - len(images) < len(lease.gold_ids):
            row = gold.get(lease.gold_ids[source - len(images)])
            out.append(None if row is None else row.image)
        else:
            out.append(None)  # a decoy (text kinds only)
    return out


def composed_fetched(lease: LeaseRecord, urls: Sequence[str], rows: int) -> list[bool]:
    """Per row as the lease's volunteer got it (`rows` of them): whether it fetched the
    row from a URL (never a gold row or a decoy). `urls`: the planned unit's."""
    if not urls:
        return [False] * rows
    if not lease.composition:
        return [bool(url) for url in urls]
    return [
        source < len(urls) and bool(urls[source])
        for source in np.frombuffer(lease.composition, dtype="<u2").tolist()
    ]
