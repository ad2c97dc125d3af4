"""Submitting results: checks, gold rows, the quorum, and what a volunteer's record gets.

Part of the `Coordinator` facade (a mixin, so that each use case stays a plain method).
A refused result counts against its volunteer; enough refusals, a missed gold row or
repeated disagreement with the quorum quarantine it (see domain/trust.py).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from allmende.coordinator.domain.compose import (
    composed_fetched,
    composed_images,
    composed_rows,
    open_result,
)
from allmende.coordinator.domain.jobs import result_shape
from allmende.coordinator.domain.judge import Arrival, judge
from allmende.coordinator.domain.part import CoordinatorPart
from allmende.coordinator.store.records import LeaseRecord, NewResult, UnitRecord, VolunteerRecord
from allmende.protocol.errors import (
    AllmendeError,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    shown,
)
from allmende.protocol.kinds import ResultShape, get_kind
from allmende.protocol.kinds.columns import Layout
from allmende.protocol.signing import CTX_RESULT, verify
from allmende.protocol.wire import ResultEnvelope, check_payload, decode_envelope, decode_unit

log = logging.getLogger("allmende.coordinator")

# Results validated at once, per process (a SQLite batch counts as one). Each is ~2 ms of
# Python under the one GIL and a few database round trips: two at once keep the process busy
# while one waits on the database, and more only queue for the GIL, with every lease behind
# them (a volunteer's GPU idles until its lease arrives). Leases are not gated. Measured with
# bench/load.py, one PostgreSQL coordinator, 1,000 paced volunteers: lease p99 25-86 ms
# ungated, 17-25 ms with two. The price: 100 volunteers sending batches of 8 as fast as they
# can get 229 units/s instead of 330 (with 1,000 such volunteers, 295 against 291).
VALIDATING_AT_ONCE = 2


@dataclass(frozen=True)
class SubmitOutcome:
    status: str  # this result: pending, accepted, rejected
    reason: str
    unit_status: str = "pending"  # the unit: pending, accepted, failed, rejected
    rows: int = 0
    job_validated: bool = False  # this result completed its job's validation


class Submissions(CoordinatorPart):
    assimilation_wanted: threading.Event
    validating: threading.BoundedSemaphore  # VALIDATING_AT_ONCE; taken before any store lock

    def submit_results(
        self,
        volunteer_id: str,
        results: Sequence[tuple[bytes, bytes, bytes]],
        most: int,
        address: str | None = None,
    ) -> list[SubmitOutcome | AllmendeError]:
        """Several results of one volunteer, each (envelope, signature, payload) judged on
        its own: the answer holds an outcome, or the error that refused it, per result.
        `address`: the sender's network address ('' for loopback; None when unknown).

        The call as a whole is refused, changing nothing, only when it is malformed: no
        results, more than `most`, an envelope that does not decode or is not
        `volunteer_id`'s."""
        volunteer: VolunteerRecord | None = self._volunteer(volunteer_id)
        if not 1 <= len(results) <= most:
            raise InvalidArgument("results", f"1 to {most} results, got {len(results)}")
        envelopes = []
        for n, (blob, _, _) in enumerate(results):
            try:
                env = decode_envelope(blob)
            except InvalidArgument as exc:
                raise InvalidArgument(f"results[{n}].{exc.field}", exc.expected) from None
            if env.volunteer_id != volunteer_id:
                raise PermissionDenied(
                    f"results[{n}].envelope names volunteer {env.volunteer_id[:16]!r}, "
                    f"not the caller {volunteer_id[:16]}"
                )
            envelopes.append(env)
        answers: list[SubmitOutcome | AllmendeError] = []
        # The gate is taken before any store lock: per result where each result is a
        # transaction of its own (PostgreSQL), else around the whole batch, whose one
        # transaction holds SQLite's write lock from the start.
        whole = self.store.batch_is_one_transaction
        # One commit for all (SQLite); each result in a savepoint of its own, undone alone
        # if refused.
        with self.validating if whole else nullcontext(), self.store.batch():
            for env, (blob, signature, payload) in zip(envelopes, results, strict=True):
                try:
                    with nullcontext() if whole else self.validating:
                        outcome = self._submit(env, blob, signature, payload, volunteer, address)
                except AllmendeError as exc:
                    answers.append(exc)
                    volunteer = None  # a fault may have quarantined it: read it again
                else:
                    answers.append(outcome)
                    if outcome.status == "rejected":
                        volunteer = None
        if any(isinstance(a, SubmitOutcome) and a.job_validated for a in answers):
            self.assimilation_wanted.set()  # again, now that it is committed
        return answers

    def submit_result(
        self, envelope_bytes: bytes, signature: bytes, payload: bytes, address: str | None = None
    ) -> SubmitOutcome:
        env = decode_envelope(envelope_bytes)
        with self.validating:
            return self._submit(env, envelope_bytes, signature, payload, address=address)

    def _submit(
        self,
        env: ResultEnvelope,
        envelope_bytes: bytes,
        signature: bytes,
        payload: bytes,
        volunteer: VolunteerRecord | None = None,
        address: str | None = None,
    ) -> SubmitOutcome:
        if volunteer is None:  # one call: both in one read
            if not env.volunteer_id:
                raise InvalidArgument("volunteer_id", "the id returned by RegisterVolunteer")
            record, found = self.store.get_volunteer_and_lease(env.volunteer_id, env.lease_id)
            volunteer = self._admitted(env.volunteer_id, record)
        else:  # a batch: its volunteer was read once for all
            found = self.store.get_lease_and_unit(env.lease_id)
        if found is None:
            raise NotFound(f"lease {shown(env.lease_id)} does not exist")
        lease, unit = found
        kind = unit.settings.kind
        try:
            try:
                verify(volunteer.public_key, CTX_RESULT, envelope_bytes, signature)
            except IntegrityError:
                raise PermissionDenied(
                    f"signature: the result envelope is not signed by volunteer "
                    f"{env.volunteer_id[:16]}'s key"
                ) from None
            try:
                check_payload(env, payload)
            except IntegrityError as exc:
                raise InvalidArgument("payload", exc.message) from None
            if lease.volunteer_id != env.volunteer_id or lease.unit_id != env.unit_id:
                raise PermissionDenied(
                    f"unit {shown(env.unit_id)} is not leased to volunteer {env.volunteer_id[:16]}"
                )
            shape = result_shape(unit.settings, self.registry)
            matrix = self._check_result(unit, shape, lease.unit_sha256, env, payload, lease)
            gold = self.gold.get(lease.gold_ids)
            content = decode_unit(unit.blob)
            if content.images:  # rows as this volunteer got them, gold rows included
                shape.check_inputs(
                    matrix, composed_images(lease, content.images, gold, content.urls)
                )
            # Statuses only the coordinator sets, or only a fetched row may have.
            shape.check_sources(matrix, composed_fetched(lease, content.urls, len(matrix)))
            opened = open_result(lease, unit.rows, matrix, gold, shape, unit.settings.tau)
        except (InvalidArgument, PermissionDenied) as exc:
            self._fault(env.volunteer_id, kind, exc.message)
            raise
        now = self.clock()
        if opened.gold_missed:
            reason = (
                f"missed {opened.gold_missed} of {opened.gold_checked} hidden gold row(s) "
                f"(lowest cosine {opened.gold_min:.4f}, tau {unit.settings.tau})"
            )
            self.store.reject_lease(lease.lease_id, reason, now)
            self._fault(env.volunteer_id, kind, reason, gold_missed=True)
            log.warning(
                "gold miss unit=%s volunteer=%s %s", unit.unit_id, env.volunteer_id[:12], reason
            )
            return SubmitOutcome("rejected", reason, unit_status="pending", rows=unit.rows)
        stored = shape.encode(opened.matrix) if lease.composition else payload
        texts = list(content.texts) + [g.text for g in gold.values()]
        result_id = uuid.uuid4().hex
        arrival = Arrival(
            result_id,
            opened.matrix,
            opened,
            shape,
            gold_wanted=len(self.gold.rows(unit.job_id)) < self.policy.gold_pool,
            gold_streak=self.policy.gold_streak,
            proven_streak=self.policy.proven_streak,
            fetched=tuple(bool(url) for url in content.urls),
        )
        # Gold rows passed (none missed, or it was refused above), or the operator's own
        # machine when it trusts it: this result may vouch for its quorum.
        vouched = opened.gold_checked > 0 or (self.policy.trust_local and address == "")
        verdict = self.store.submit_result(
            NewResult(
                result_id,
                env.unit_id,
                env.lease_id,
                env.volunteer_id,
                envelope_bytes,
                signature,
                stored,
                now,
                claimed_tokens=min(env.claimed_tokens, get_kind(kind).credit(texts)),
                gold_checked=opened.gold_checked > 0,
                vouched=vouched,
            ),
            lambda u, results: judge(u, results, arrival),
        )
        if verdict.gold_kept:
            self.gold.add(verdict.gold_kept)
        for outvoted in verdict.outvoted:
            self._review(outvoted, kind)
        if verdict.job_validated:
            self.assimilation_wanted.set()
        log.info(
            "result unit=%s volunteer=%s verdict=%s %s",
            env.unit_id,
            env.volunteer_id[:12],
            verdict.status,
            verdict.reason,
        )
        outcome = (
            ("rejected", verdict.reason or "disagreed with the quorum")
            if result_id in verdict.invalid
            else ("accepted", "")
            if verdict.status == "accepted"
            else ("rejected", verdict.reason)
            if verdict.status == "failed"
            else ("pending", verdict.reason)
        )
        return SubmitOutcome(
            *outcome,
            unit_status=verdict.status,
            rows=unit.rows,
            job_validated=verdict.job_validated,
        )

    def _check_result(
        self,
        unit: UnitRecord,
        shape: ResultShape,
        leased_sha256: bytes | None,
        env: ResultEnvelope,
        payload: bytes,
        lease: LeaseRecord,
    ) -> np.ndarray:
        """The result's rows, decoded and checked against what the job's kind declares:
        its columns (name, dtype, width), the rows leased, and each column's row checks."""
        s = unit.settings
        expected = leased_sha256 or hashlib.sha256(unit.blob).digest()
        if env.unit_sha256 != expected:
            raise InvalidArgument("envelope.unit_sha256", "the sha256 of the unit as leased")
        if env.model_sha256 != s.model_sha256:
            raise InvalidArgument("envelope.model_sha256", f"{s.model_sha256} (the job's model)")
        want = shape.layouts
        if env.columns != want:
            raise InvalidArgument("envelope.columns", _columns_wanted(want, env.columns))
        rows = composed_rows(lease, unit.rows)
        if env.rows != rows:
            raise InvalidArgument("envelope.rows", f"{rows} (the rows leased), got {env.rows}")
        matrix = shape.decode(payload, rows)
        shape.check(matrix)
        return matrix

    # ------------------------------------------------------------------ reputation

    def _fault(self, volunteer_id: str, kind: str, reason: str, gold_missed: bool = False) -> None:
        """Count a refused result against its (authenticated) volunteer."""
        self.store.record_fault(volunteer_id, kind, reason[:500], self.clock(), gold_missed)
        self._review(volunteer_id, kind)

    def _review(self, volunteer_id: str, kind: str) -> None:
        """Quarantine a volunteer whose record for `kind` calls for it."""
        rep = self.store.get_reputation(volunteer_id).get(kind)
        reason = self.policy.quarantine_reason(rep) if rep else ""
        if not reason:
            return
        repair = self.store.quarantine(volunteer_id, reason, self.clock())
        if repair is None:
            return
        self.gold.expire()
        log.warning(
            "volunteer quarantined volunteer=%s reason=%s invalidated=%d reopened=%d jobs=%s",
            volunteer_id[:12],
            reason,
            repair.results_invalidated,
            len(repair.units_reopened),
            ",".join(repair.jobs_reopened),
        )


def _columns_wanted(want: Sequence[Layout], got: Sequence[Layout]) -> str:
    """What the job's result columns are, and the first way `got` differs from them."""
    shown = ", ".join(f"{c.name} {c.dtype} x {c.width}" for c in want)
    names = [c.name for c in got]
    for column in want:
        if column.name not in names:
            return f"the job's result columns ({shown}); column {column.name!r} is missing"
    for column in got:
        match = next((c for c in want if c.name == column.name), None)
        if match is None:
            return f"the job's result columns ({shown}); column {column.name!r} is not one"
        if match != column:
            return (
                f"the job's result columns ({shown}); column {column.name!r} is "
                f"{column.dtype} x {column.width}, not {match.dtype} x {match.width}"
            )
    return f"the job's result columns in this order: {shown}"
