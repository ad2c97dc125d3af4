"""A lease judges its volunteer inside its own transaction (`admit`), and on PostgreSQL a
unit found taken at the insert is passed over without the lease's other writes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.records import (
    LeaseCandidate,
    LeasePlan,
    Reputation,
    VolunteerRecord,
)
from allmende.coordinator.store.sql import SqlStore
from allmende.protocol.errors import PermissionDenied
from tests.store.helpers import T0, make_job

DAY = 19_700


def leases_of(store: SqlStore, volunteer: str) -> list[str]:
    le = t.leases
    with store.engine.connect() as conn:
        return list(
            conn.execute(select(le.c.unit_id).where(le.c.volunteer_id == volunteer)).scalars()
        )


def leased_today(store: SqlStore, volunteer: str) -> int:
    record = store.get_volunteer(volunteer)
    assert record is not None
    return record.leased_today if record.quota_day == DAY else 0


def unit_slots(store: SqlStore, unit_id: str) -> tuple[int, int, int]:
    """(busy, target, quorum) of a unit."""
    u = t.units
    with store.engine.connect() as conn:
        row = conn.execute(
            select(u.c.busy, u.c.target, u.c.quorum).where(u.c.unit_id == unit_id)
        ).one()
    return row.busy, row.target, row.quorum


def solo(candidate: LeaseCandidate) -> LeasePlan:
    digest = hashlib.sha256(candidate.blob).digest()
    return LeasePlan(candidate.blob, b"sig", digest, b"\x00\x00", (), solo=True)


Standing = tuple[VolunteerRecord | None, dict[str, Reputation]]


def test_admit_sees_the_volunteers_standing_and_a_lease_follows(store: SqlStore) -> None:
    units = make_job(store)
    with store._tx() as conn:
        store._bump(conn, "v1", "embed-text", T0, valid=3, consecutive_valid=3)
    seen: list[Standing] = []

    def admit(record: VolunteerRecord | None, reputation: dict[str, Reputation]) -> bool:
        seen.append((record, reputation))
        return True

    before = store.get_standing("v1")
    grant = store.lease_unit("v1", "L1", T0, solo, day=DAY, admit=admit)
    assert grant is not None and grant.unit_id == units[0]
    assert seen == [before]
    record, reputation = seen[0]
    assert record is not None and record.volunteer_id == "v1"
    assert reputation["embed-text"].valid == 3
    assert leased_today(store, "v1") == 1


def test_an_unknown_volunteer_is_judged_as_none(store: SqlStore) -> None:
    make_job(store)
    seen: list[Standing] = []

    def admit(record: VolunteerRecord | None, reputation: dict[str, Reputation]) -> bool:
        seen.append((record, reputation))
        return False

    assert store.lease_unit("nobody", "L1", T0, admit=admit) is None
    assert seen == [(None, {})]


@pytest.mark.parametrize("refusal", ["declined", "raised"])
def test_a_volunteer_admit_refuses_gets_nothing_and_nothing_changes(
    store: SqlStore, refusal: str
) -> None:
    units = make_job(store)

    def admit(record: VolunteerRecord | None, reputation: dict[str, Reputation]) -> bool:
        if refusal == "raised":
            raise PermissionDenied("volunteer v1 is banned: test")
        return False

    if refusal == "raised":
        with pytest.raises(PermissionDenied, match="banned"):
            store.lease_unit("v1", "L1", T0, solo, day=DAY, admit=admit)
    else:
        assert store.lease_unit("v1", "L1", T0, solo, day=DAY, admit=admit) is None
    assert leases_of(store, "v1") == []
    assert leased_today(store, "v1") == 0
    assert unit_slots(store, units[0])[0] == 0
    # The units are there for the next volunteer, and the refused one can come back.
    assert store.lease_unit("v2", "L2", T0, day=DAY) is not None
    assert store.lease_unit("v1", "L3", T0, day=DAY, admit=lambda r, rep: True) is not None


# ------------------------------------------------------------------ PostgreSQL: a lost insert


def test_a_unit_answered_while_it_was_composed_is_passed_over_with_its_writes(
    pg_store: SqlStore,
) -> None:
    """The insert finds the unit no longer free for the volunteer (its answer to the unit
    was committed by another session after the candidate was chosen): the lease goes to the
    next unit, and neither the quota count nor the solo quorum lands on the lost one."""
    first, second = make_job(pg_store, texts=4, unit_size=2, redundancy=2)
    with pg_store.engine.begin() as conn:  # a lease that takes no slot, for the result to cite
        conn.execute(
            t.leases.insert().values(
                lease_id="old",
                unit_id=first,
                volunteer_id="v2",
                state="released",
                created_ms=T0,
                deadline_ms=T0,
                reason="",
            )
        )
    before = unit_slots(pg_store, first)
    composed: list[str] = []

    def compose(candidate: LeaseCandidate) -> LeasePlan:
        composed.append(candidate.unit_id)
        if len(composed) == 1:  # another session: v1's (invalid) answer to this unit
            with pg_store.engine.begin() as conn:
                conn.execute(
                    t.results.insert().values(
                        result_id="elsewhere",
                        unit_id=candidate.unit_id,
                        lease_id="old",
                        volunteer_id="v1",
                        envelope=b"",
                        signature=b"",
                        payload=b"",
                        state="invalid",
                        received_ms=T0,
                        reason="",
                    )
                )
        return solo(candidate)

    grant = pg_store.lease_unit("v1", "L1", T0, compose, day=DAY, admit=lambda r, rep: True)
    assert composed == [first, second]
    assert grant is not None and grant.unit_id == second
    assert leases_of(pg_store, "v1") == [second]
    assert leased_today(pg_store, "v1") == 1  # counted once, for the lease that was made
    assert unit_slots(pg_store, first) == before  # no solo quorum on the unit it lost
    assert unit_slots(pg_store, second) == (1, 1, 1)
    le = t.leases
    with pg_store.engine.connect() as conn:
        assert conn.execute(select(func.count()).where(le.c.lease_id == "L1")).scalar() == 1


def commit_with_writes_of(
    pg_store: SqlStore, unit_id: str, volunteer: str
) -> Callable[[str], tuple[bool, int, tuple[int, int, int]]]:
    """A function that runs a lease insert with its guarded writes in one committed round
    trip, returning (inserted, leased today, unit slots)."""
    from allmende.coordinator.store.statements import (
        COUNT_LEASE_IF_LEASED,
        SET_QUORUM_IF_LEASED,
        Q,
    )

    def run(lease_id: str) -> tuple[bool, int, tuple[int, int, int]]:
        with pg_store._tx() as conn:
            inserted, *_ = conn.commit_with(
                [
                    (
                        Q.add_lease_if_free,
                        {
                            "lease_id": lease_id,
                            "unit_id": unit_id,
                            "volunteer": volunteer,
                            "now": T0,
                            "deadline": T0 + 60_000,
                            "address": "",
                            "unit_sha256": None,
                            "composition": None,
                            "gold_ids": "",
                            "unit_blob": None,
                            "unit_signature": None,
                        },
                    ),
                    (
                        SET_QUORUM_IF_LEASED,
                        {"b_unit": unit_id, "target": 1, "quorum": 1, "b_lease": lease_id},
                    ),
                    (
                        COUNT_LEASE_IF_LEASED,
                        {"b_volunteer": volunteer, "day": DAY, "b_lease": lease_id},
                    ),
                ]
            )
            made = inserted.first() is not None
        return made, leased_today(pg_store, volunteer), unit_slots(pg_store, unit_id)

    return run


def test_guarded_lease_writes_follow_the_insert_in_one_round_trip(pg_store: SqlStore) -> None:
    unit = make_job(pg_store)[0]
    run = commit_with_writes_of(pg_store, unit, "v1")
    assert run("A") == (True, 1, (1, 1, 1))
    # v1 holds the unit now: the second insert finds it taken, and its writes do nothing.
    assert run("B") == (False, 1, (1, 1, 1))
    assert leases_of(pg_store, "v1") == [unit]
