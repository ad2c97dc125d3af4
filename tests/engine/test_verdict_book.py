"""The volunteer's record of results waiting for a verdict, on disk: it survives a restart,
an unreadable file is set aside with a warning instead of stopping the volunteer, and a
coordinator without GetVerdicts is asked once. (The real coordinator path is tested in
tests/integration/test_verdicts.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from allmende.client.connection import RemoteError
from allmende.client.engine import events as ev
from allmende.client.engine.verdicts import VerdictBook
from allmende.v1 import allmende_pb2 as pb

FP = "ab" * 32


class OldCoordinator:
    """A coordinator from before GetVerdicts."""

    def __init__(self) -> None:
        self.calls = 0

    def verdicts(self, volunteer_id: str, unit_ids: list[str]) -> pb.GetVerdictsResponse:
        self.calls += 1
        raise RemoteError("UNIMPLEMENTED", "Method not found", False)


class Answering:
    def verdicts(self, volunteer_id: str, unit_ids: list[str]) -> pb.GetVerdictsResponse:
        return pb.GetVerdictsResponse(
            verdicts=[pb.ResultVerdict(unit_id=u, job_id="j", verdict="valid", credit=7, rows=2)
                      for u in unit_ids if u != "u-open"],
            totals=pb.VerdictTotals(results_valid=1, results_pending=1, credit=7, items_valid=2),
        )  # fmt: skip


def test_waiting_results_and_totals_survive_a_restart(tmp_path: Path) -> None:
    events: list[ev.Event] = []
    book = VerdictBook(tmp_path, FP, events.append)
    book.note("u-done", 2)
    book.note("u-open", 2)
    again = VerdictBook(tmp_path, FP, events.append)
    assert again.waiting == 2
    again.poll(Answering(), "v")  # type: ignore[arg-type]
    [verdict] = [e for e in events if isinstance(e, ev.ResultVerdict)]
    assert (verdict.unit_id, verdict.verdict, verdict.credit) == ("u-done", "valid", 7)
    third = VerdictBook(tmp_path, FP, events.append)
    assert third.waiting == 1
    third.announce()
    remembered = events[-1]
    assert isinstance(remembered, ev.CreditTotals) and remembered.remembered
    assert (remembered.results_valid, remembered.credit, remembered.waiting) == (1, 7, 1)


def test_an_unreadable_record_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / f"{FP[:32]}.json").write_text("{not json")
    book = VerdictBook(tmp_path, FP, lambda e: None)
    assert book.waiting == 0 and "unreadable verdict record" in caplog.text
    book.note("u1", 3)  # and it is written afresh
    assert VerdictBook(tmp_path, FP, lambda e: None).waiting == 1


def test_a_coordinator_without_verdicts_is_asked_once(tmp_path: Path) -> None:
    book = VerdictBook(tmp_path, FP, lambda e: None)
    book.note("u1", 3)
    old = OldCoordinator()
    book.poll(old, "v")  # type: ignore[arg-type]
    book.poll(old, "v")  # type: ignore[arg-type]
    assert old.calls == 1 and book.waiting == 1
