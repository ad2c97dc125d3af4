"""Volunteers hear the final verdict on their results (GetVerdicts, a signed call): valid
with the credit granted, outvoted, invalid with the reason, cancelled, and their lifetime
totals, the same figures `volunteers list` shows. Real coordinator on port 0."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from allmende.client.connection import CoordinatorClient
from allmende.client.engine import events as ev
from allmende.client.probes import FakeProbe
from allmende.coordinator.app import RunningCoordinator
from allmende.protocol.requests import sign_request
from allmende.v1 import allmende_pb2 as pb
from allmende.v1 import allmende_pb2_grpc as rpc
from tests.conftest import job_requests
from tests.engine.helpers import SlowComputer, start
from tests.engine.test_controls import QUIET, make_config
from tests.integration.volunteers import RandomComputer, RawVolunteer, text_vector

TEXTS = [f"sentence {i} about the verdict" for i in range(12)]


def honest(volunteer: RawVolunteer) -> tuple[pb.Lease, object]:
    got = volunteer.lease()
    assert got is not None
    lease, unit = got
    import numpy as np

    volunteer.submit(lease, unit, np.stack([text_vector(t, unit.dims) for t in unit.texts]))
    return lease, unit


def raw(admin: CoordinatorClient) -> RawVolunteer:
    volunteer = RawVolunteer(admin)
    volunteer.register()
    return volunteer


def listed(admin: CoordinatorClient, volunteer_id: str) -> pb.VolunteerStatus:
    [status] = [v for v in admin.list_volunteers() if v.volunteer_id == volunteer_id]
    return status


def test_valid_outvoted_and_credit_match_volunteers_list(admin: CoordinatorClient) -> None:
    admin.create_job(job_requests(TEXTS, redundancy=2, unit_size=12, gold_fraction=0.0))
    a, liar, c = raw(admin), raw(admin), raw(admin)
    _, unit = honest(a)
    got = liar.lease()
    assert got is not None
    liar.submit(got[0], got[1], RandomComputer().compute(got[1]))
    undecided = a.client.verdicts(a.volunteer_id, [unit.unit_id])  # type: ignore[attr-defined]
    assert list(undecided.verdicts) == [] and undecided.totals.results_pending == 1
    honest(c)  # the third replica settles it: a and c agree, the liar is outvoted

    answer = a.client.verdicts(a.volunteer_id, [unit.unit_id, "no-such-unit"])  # type: ignore[attr-defined]
    [verdict] = answer.verdicts
    status = listed(admin, a.volunteer_id)
    # The raw volunteers claim no tokens, so the quorum's lowest claim grants none; the
    # engine test below earns real credit.
    assert (verdict.verdict, verdict.credit, verdict.rows) == ("valid", status.credit, 12)
    assert (answer.totals.results_valid, answer.totals.credit) == (1, status.credit)
    assert status.results_valid == 1

    [lost] = liar.client.verdicts(liar.volunteer_id, [unit.unit_id]).verdicts
    assert (lost.verdict, lost.credit) == ("outvoted", 0)
    assert "quorum" in lost.reason
    assert listed(admin, liar.volunteer_id).results_invalid == 1


def test_a_cancelled_job_is_the_verdict(admin: CoordinatorClient) -> None:
    job = admin.create_job(job_requests(TEXTS, redundancy=2, unit_size=12, gold_fraction=0.0))
    a = raw(admin)
    _, unit = honest(a)
    admin.cancel_job(job.job_id)
    [verdict] = a.client.verdicts(a.volunteer_id, [unit.unit_id]).verdicts
    assert (verdict.verdict, verdict.credit) == ("cancelled", 0)
    assert "cancelled" in verdict.reason


def test_verdicts_are_signed_and_only_ones_own(admin: CoordinatorClient) -> None:
    admin.create_job(job_requests(TEXTS, redundancy=2, unit_size=12, gold_fraction=0.0))
    a, b = raw(admin), raw(admin)
    stub = rpc.VolunteerServiceStub(admin.channel)
    request = pb.GetVerdictsRequest(volunteer_id=a.volunteer_id, unit_ids=["x"])
    with pytest.raises(grpc.RpcError) as unsigned:
        stub.GetVerdicts(request)
    assert unsigned.value.code() == grpc.StatusCode.UNAUTHENTICATED
    as_b = sign_request(b.key, "/allmende.v1.VolunteerService/GetVerdicts", request)
    with pytest.raises(grpc.RpcError) as other:
        stub.GetVerdicts(request, metadata=as_b)
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    too_many = [f"u{i}" for i in range(257)]
    with pytest.raises(Exception) as big:
        a.client.verdicts(a.volunteer_id, too_many)
    assert "unit_ids" in str(big.value)


def test_the_engine_reports_verdicts_and_keeps_totals_across_restarts(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    admin.create_job(job_requests(TEXTS * 1, redundancy=2, unit_size=4, gold_fraction=0.0))
    home_a = tmp_path / "a"
    first = start(
        make_config(coordinator, home_a, exit_when_idle=True),
        SlowComputer(0.0),
        probe=FakeProbe([QUIET]),
    )
    assert first.finish().units == 3  # one replica of each unit; the second must be another's
    assert not first.of(ev.ResultVerdict)
    [pending] = first.of(ev.CreditTotals)[-1:]
    assert (pending.results_pending, pending.results_valid, pending.waiting) == (3, 0, 3)  # type: ignore[attr-defined]

    second = start(
        make_config(coordinator, tmp_path / "b", exit_when_idle=True),
        SlowComputer(0.0),
        probe=FakeProbe([QUIET]),
    )
    assert second.finish().units == 3
    verdicts = second.of(ev.ResultVerdict)
    assert sorted(v.verdict for v in verdicts) == ["valid"] * 3  # type: ignore[attr-defined]

    again = start(
        make_config(coordinator, home_a, exit_when_idle=True),
        SlowComputer(0.0),
        probe=FakeProbe([QUIET]),
    )
    again.finish()
    remembered, *_, final = again.of(ev.CreditTotals)
    assert remembered.remembered and remembered.results_pending == 3  # type: ignore[attr-defined]
    heard = again.of(ev.ResultVerdict)
    assert sorted(v.verdict for v in heard) == ["valid"] * 3  # type: ignore[attr-defined]
    a_id = again.engine.volunteer_id
    status = listed(admin, a_id)
    assert (final.results_valid, final.credit) == (status.results_valid, status.credit)  # type: ignore[attr-defined]
    assert final.results_valid == 3 and final.credit == sum(v.credit for v in heard) > 0  # type: ignore[attr-defined]
    assert final.waiting == 0  # type: ignore[attr-defined]

    # nothing new since: the remembered totals are still confirmed by the coordinator
    quiet = start(
        make_config(coordinator, home_a, exit_when_idle=True),
        SlowComputer(0.0),
        probe=FakeProbe([QUIET]),
    )
    quiet.finish()
    told = quiet.of(ev.CreditTotals)
    assert [t.remembered for t in told] == [True, False]  # type: ignore[attr-defined]
    assert told[0] == replace(told[1], remembered=True)
