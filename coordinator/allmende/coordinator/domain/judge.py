"""Deciding a unit from its results: quorum, adaptive replication's checks, credit, and the
gold rows an accepted unit yields.

Runs inside the store's submit transaction (see `Store.submit_result`), once per result.

A group that agrees is accepted only if one of its results is *proven* (see
`TrustPolicy.proven_streak`): otherwise the unit stays open for one more replica, until a
proven volunteer's result joins the group. Two new accounts agreeing on invented rows thus
publish nothing. What is published is the group's consensus (ResultShape.combine: for
embeddings the normalised mean).

Rows the volunteers fetched from a URL are settled first (ResultShape.settle_fetched): where
the replicas' digests or statuses of such a row differ, they fetched different things, and
the row becomes the kind's coordinator-set status in every replica before the quorum
compares them. It is then no disagreement: nobody is outvoted or faulted for it, and the
unit is accepted on its other rows. A unit accepted on one result has nothing to settle
against: its fetched rows rest on that volunteer (and its unit's gold rows) alone. Fetched
rows never become gold rows (the coordinator holds no bytes for them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allmende.coordinator.domain import quorum
from allmende.coordinator.domain.compose import Opened, gold_count, new_rng
from allmende.coordinator.store.records import GoldInput, ResultRecord, UnitRecord, Verdict
from allmende.protocol.kinds import ResultShape
from allmende.protocol.wire import decode_unit

# Gold rows taken from each unit a proven quorum accepted, while the pool wants more.
HARVEST_ROWS = 4


@dataclass(frozen=True)
class Arrival:
    """The result that triggered this judgement."""

    result_id: str
    matrix: np.ndarray  # in unit order, gold rows removed
    opened: Opened
    shape: ResultShape  # the job's result columns
    gold_wanted: bool  # the job still wants gold rows from accepted units
    gold_streak: int = 0  # see Verdict.gold_streak
    proven_streak: int = 0  # see TrustPolicy.proven_streak (0: every result is proven)
    # Per row of the unit: the volunteers fetched it from a URL (empty: no such row).
    fetched: tuple[bool, ...] = ()


def proven(result: ResultRecord, streak: int) -> bool:
    """The result may vouch for its quorum (see TrustPolicy.proven_streak)."""
    return streak == 0 or result.vouched or result.streak >= streak


def suspicious(unit: UnitRecord, arrival: Arrival) -> str:
    """Why a result that would stand alone needs replicas after all ('' if it need not)."""
    if unit.needed > 1 or unit.needed >= unit.settings.redundancy:
        return ""  # replicated anyway, or the job itself asks for one result per unit
    if arrival.opened.gold_checked == 0:
        return "a lone result without gold rows to check it"
    if not arrival.opened.gold_close:
        return f"a lone result whose gold rows agree only to {arrival.opened.gold_min:.6f}"
    return ""


def judge(unit: UnitRecord, results: list[ResultRecord], arrival: Arrival) -> Verdict:
    s = unit.settings
    why = suspicious(unit, arrival)
    if why:
        wanted = max(s.redundancy, 2)
        return Verdict(
            "pending",
            f"{why}; replicating",
            new_target=max(wanted, len(results)),
            new_quorum=wanted,
        )
    waiting = Verdict("pending", f"waiting for {unit.target - len(results)} more replica(s)")
    if len(results) < min(unit.target, unit.needed):
        return waiting
    matrices = [
        arrival.matrix
        if r.result_id == arrival.result_id
        else arrival.shape.decode(r.payload, unit.rows)
        for r in results
    ]
    # URL rows whose replicas fetched different things get the coordinator's status in all before
    # they are compared: nobody's fault, not a disagreement (ResultShape.settle_fetched).
    matrices, _ = arrival.shape.settle_fetched(matrices, arrival.fetched)
    vouching = [proven(r, arrival.proven_streak) for r in results]
    outcome = quorum.decide(matrices, arrival.shape, s.tau, unit.needed, vouching)
    ids = [r.result_id for r in results]
    # Short of the target, decide only when every result in hand agrees in a proven group
    # that reaches the quorum: the target was raised for results since invalidated (their
    # volunteer quarantined), which nobody else will replace.
    if len(results) < unit.target and not (
        outcome.reached and outcome.vouched and len(outcome.group) == len(results)
    ):
        return waiting
    if outcome.reached and not outcome.vouched:
        return Verdict(
            "pending",
            f"{len(outcome.group)} result(s) agree, but none from a proven volunteer (gold "
            "rows passed, or a record of valid results); waiting for one more replica",
            new_target=len(results) + 1,
        )
    if outcome.reached:
        group = [matrices[i] for i in outcome.group]
        published = arrival.shape.combine(group)
        valid = tuple(ids[i] for i in outcome.group)
        invalid = tuple(i for i in ids if i not in valid)
        claims = [results[i].claimed_tokens for i in outcome.group]
        return Verdict(
            "accepted",
            "disagreed with the quorum" if invalid else "",
            valid=valid,
            invalid=invalid,
            agreement=outcome.agreement,
            canonical=valid[0],
            canonical_payload=arrival.shape.encode(published) if len(group) > 1 else b"",
            # (a group of one had nothing to settle against: its own payload is published)
            credit=min(claims),
            outvoted=tuple(r.volunteer_id for r in results if r.result_id in invalid),
            gold=_harvest(unit, published, len(valid), arrival.gold_wanted, arrival.fetched),
            gold_streak=arrival.gold_streak,
        )
    worst = outcome.worst
    detail = f"{worst.describe()} (tau {s.tau})" if worst else ""
    if len(results) < s.max_replicas:
        return Verdict(
            "pending",
            f"replicas disagree, {detail}; another replica requested",
            new_target=len(results) + 1,
        )
    return Verdict(
        "failed",
        f"no quorum after {len(results)} results (largest agreeing group "
        f"{len(outcome.group)}, needed {unit.needed}); {detail}",
    )


def _harvest(
    unit: UnitRecord,
    canonical: np.ndarray,
    agreeing: int,
    wanted: bool,
    fetched: tuple[bool, ...] = (),
) -> tuple[GoldInput, ...]:
    """Rows of a unit that distinct volunteers agreed on, to serve as gold rows (with their
    image, for image kinds). Never a row fetched from a URL: a gold row carries its bytes,
    and the coordinator does not hold a fetched row's."""
    candidates = [i for i in range(unit.rows) if not (fetched and fetched[i])]
    if not wanted or agreeing < 2 or unit.settings.gold_fraction <= 0 or not candidates:
        return ()
    # A few rows more than one unit's share: a volunteer never gets rows from units it
    # leased, so the pool must hold rows of many units before everyone has fresh ones.
    k = min(
        len(candidates),
        max(HARVEST_ROWS, gold_count(unit.rows, unit.settings.gold_fraction, unit.rows)),
    )
    content = decode_unit(unit.blob)
    rows = new_rng().choice(candidates, size=k, replace=False).tolist()
    answers = [np.ascontiguousarray(canonical[i], dtype="<f4").tobytes() for i in rows]
    if content.images:
        return tuple(
            (content.texts[i], a, content.images[i]) for i, a in zip(rows, answers, strict=True)
        )
    return tuple((content.texts[i], a) for i, a in zip(rows, answers, strict=True))
