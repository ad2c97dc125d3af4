"""Telling a volunteer what became of its results: the final verdict on each, the credit it
earned, and its lifetime totals (BOINC volunteers ask for exactly this: a result's fate,
not just "sent").

Part of the `Coordinator` facade (a mixin, as submit.py). The totals are counted as
`volunteers list` counts them (`Store.volunteer_totals`), so both always agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from allmende.coordinator.domain.part import CoordinatorPart
from allmende.coordinator.store.verdicts_sql import ResultStanding, VolunteerTotals
from allmende.protocol.errors import InvalidArgument, Unauthenticated

# Units one GetVerdicts call may ask about.
MAX_VERDICT_UNITS = 256
# The quorum's reason for the results it did not side with (domain/judge.py).
OUTVOTED_REASON = "disagreed with the quorum"


@dataclass(frozen=True)
class ResultVerdict:
    unit_id: str
    job_id: str
    verdict: str  # valid, invalid, outvoted, cancelled
    reason: str
    credit: int
    rows: int


@dataclass(frozen=True)
class VerdictReport:
    verdicts: tuple[ResultVerdict, ...]
    totals: VolunteerTotals


def verdict_of(s: ResultStanding) -> ResultVerdict | None:
    """The final verdict on one result, or None while it is still undecided."""

    def made(verdict: str, reason: str = "", credit: int = 0) -> ResultVerdict:
        return ResultVerdict(s.unit_id, s.job_id, verdict, reason[:300], credit, s.rows)

    if s.state == "valid":
        return made("valid", credit=s.credit)
    if s.state == "invalid":
        if s.reason == OUTVOTED_REASON:
            return made("outvoted", "the quorum agreed on other results")
        return made("invalid", s.reason or "invalid")
    if s.unit_state == "failed":
        return made("invalid", f"the unit failed: {s.unit_reason}" if s.unit_reason else "")
    if s.job_state == "cancelled":
        return made("cancelled", s.job_reason or "the job was cancelled")
    return None


class Verdicts(CoordinatorPart):
    def verdicts(self, volunteer_id: str, unit_ids: Sequence[str]) -> VerdictReport:
        """Verdicts on the volunteer's results for `unit_ids` (undecided ones left out), and
        its lifetime totals at this coordinator."""
        if not volunteer_id:
            raise InvalidArgument("volunteer_id", "the id returned by RegisterVolunteer")
        if len(unit_ids) > MAX_VERDICT_UNITS:
            raise InvalidArgument(
                "unit_ids", f"at most {MAX_VERDICT_UNITS} unit ids, got {len(unit_ids)}"
            )
        for unit_id in unit_ids:
            if not unit_id or len(unit_id) > 96:
                raise InvalidArgument("unit_ids", "unit ids of 1 to 96 characters")
        # A quarantined or banned volunteer still learns what became of its work.
        if self.store.get_volunteer(volunteer_id) is None:
            raise Unauthenticated(f"unknown volunteer {volunteer_id[:16]!r}; register first")
        standings = self.store.result_standings(volunteer_id, list(dict.fromkeys(unit_ids)))
        decided = tuple(v for v in map(verdict_of, standings) if v is not None)
        return VerdictReport(decided, self.store.volunteer_totals(volunteer_id))
