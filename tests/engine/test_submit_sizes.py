"""Results are batched into SubmitResults calls that fit the coordinator's request limit."""

from __future__ import annotations

from allmende.client.engine.submission import Sealed, by_size
from allmende.protocol.limits import MAX_SUBMIT_BYTES


def sealed(payload_bytes: int, n: int = 0) -> Sealed:
    return Sealed(f"u{n}", 1, b"e" * 200, b"s" * 64, bytes(payload_bytes), None)


def test_small_results_travel_together() -> None:
    batch = [sealed(200_000, n) for n in range(16)]
    assert by_size(batch) == [batch]


def test_large_results_are_cut_into_calls_under_the_limit_in_order() -> None:
    batch = [sealed(3 * 1024 * 1024, n) for n in range(7)]
    groups = by_size(batch)
    assert [s for g in groups for s in g] == batch
    assert len(groups) == 3
    for group in groups:
        assert sum(s.size for s in group) + 256 + 32 * len(group) <= MAX_SUBMIT_BYTES


def test_a_result_too_large_for_any_call_travels_alone() -> None:
    batch = [sealed(100), sealed(MAX_SUBMIT_BYTES, 1), sealed(100, 2)]
    assert by_size(batch) == [[batch[0]], [batch[1]], [batch[2]]]
