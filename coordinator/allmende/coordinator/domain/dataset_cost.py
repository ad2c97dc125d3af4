"""What a dataset cost: volunteer compute time, items computed (every replica counted),
the redundancy overhead and energy, from the signed envelopes of every result the job got.

Openness about cost is part of the sustainability claim: the card and the manifest state it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from allmende.protocol.errors import InvalidArgument
from allmende.protocol.wire import decode_envelope


def job_cost(envelopes: Iterable[bytes], rows: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(cost, energy) of a job whose dataset has `rows` rows.

    cost: volunteer_seconds (the sum of every result's compute time), results, items_computed
    (rows of every result: replicas, outvoted results and hidden gold rows included),
    rows_accepted and redundancy_overhead (items computed ÷ rows accepted; null without rows).
    energy: as volunteers reported it with their results (energy per 1,000 items times the
    result's rows): the total in Wh, per 1,000 dataset rows, how many results reported it,
    and whether any figure was an estimate (power times time) rather than a GPU's own
    energy counter.
    """
    total_wh = 0.0
    compute_ms = computed = results = reporting = 0
    estimated = False
    for blob in envelopes:
        results += 1
        try:
            envelope = decode_envelope(blob)
        except InvalidArgument:  # checked when it arrived; never fail a dataset over it
            continue
        compute_ms += max(envelope.compute_ms, 0)
        computed += envelope.rows
        if envelope.energy_wh_per_1000 > 0:
            reporting += 1
            total_wh += envelope.energy_wh_per_1000 * envelope.rows / 1000
            estimated = estimated or envelope.energy_estimated
    cost = {
        "volunteer_seconds": round(compute_ms / 1000, 3),
        "results": results,
        "items_computed": computed,
        "rows_accepted": rows,
        "redundancy_overhead": round(computed / rows, 4) if rows else None,
    }
    energy = {
        "wh": round(total_wh, 6),
        "wh_per_1000_rows": round(total_wh / rows * 1000, 6) if rows else 0.0,
        "results": results,
        "results_reporting": reporting,
        "estimated": estimated,
    }
    return cost, energy


def job_energy(envelopes: Iterable[bytes], rows: int) -> dict[str, Any]:
    """The energy half of `job_cost`."""
    return job_cost(envelopes, rows)[1]
