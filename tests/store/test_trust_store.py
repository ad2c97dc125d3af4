"""The store's side of trust (store/trust_sql.py) on every backend: reputation and credit,
gold rows, adaptive replication's quorum changes, daily counts, distinct addresses, rejected
leases, and quarantine with its repair of every unit that rested on the volunteer.

Runs on a SQLite file, an in-memory SQLite and PostgreSQL (tests/store/conftest.py), so the
repair's SQL and its row locks run on each.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

import pytest
from sqlalchemy import select

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.records import (
    LeaseCandidate,
    LeasePlan,
    NewResult,
    Reputation,
    ResultRecord,
    UnitRecord,
    Verdict,
)
from allmende.coordinator.store.sql import SqlStore
from allmende.protocol.errors import FailedPrecondition
from tests.store.helpers import T0, make_job, slots_out_of_step

KIND = "embed-text"
Judge = Callable[[UnitRecord, list[ResultRecord]], Verdict]
_ids = itertools.count()


def plan(solo: bool = False) -> Callable[[LeaseCandidate], LeasePlan]:
    """A compose callback: the unit as planned, marked solo or not."""

    def compose(c: LeaseCandidate) -> LeasePlan:
        digest = hashlib.sha256(c.blob).digest()
        return LeasePlan(c.blob, b"sig", digest, b"\x00\x00", (), solo=solo)

    return compose


def take(
    store: SqlStore,
    volunteer: str,
    now: int = T0,
    solo: bool = False,
    address: str = "",
    day: int = 0,
) -> tuple[str, str] | None:
    """Lease with a compose callback; (lease id, unit id) or None."""
    lease_id = f"tl-{next(_ids)}"
    grant = store.lease_unit(volunteer, lease_id, now, plan(solo), address=address, day=day)
    return None if grant is None else (lease_id, grant.unit_id)


def accept(
    wanted: int | None = None,
    credit: int = 0,
    gold: tuple[tuple[str, bytes], ...] = (),
) -> Judge:
    """Accept every result once `wanted` (default: the unit's target) have arrived."""

    def judge(unit: UnitRecord, results: list[ResultRecord]) -> Verdict:
        need = wanted or unit.target
        if len(results) < need:
            return Verdict("pending", "waiting", new_target=need)
        ids = tuple(r.result_id for r in results)
        return Verdict(
            "accepted", valid=ids, agreement=0.9999, canonical=ids[0], credit=credit, gold=gold
        )

    return judge


def send(
    store: SqlStore,
    got: tuple[str, str] | None,
    volunteer: str,
    judge: Judge,
    now: int = T0 + 1,
    claimed: int = 0,
) -> Verdict:
    assert got is not None
    lease_id, unit_id = got
    result = NewResult(
        f"tr-{next(_ids)}",
        unit_id,
        lease_id,
        volunteer,
        b"env",
        b"sig",
        f"payload of {volunteer}".encode(),
        now,
        claimed_tokens=claimed,
    )
    return store.submit_result(result, judge)


def unit_row(store: SqlStore, unit_id: str) -> object:
    with store.engine.connect() as conn:
        return conn.execute(select(t.units).where(t.units.c.unit_id == unit_id)).one()


def results_of(store: SqlStore, unit_id: str) -> dict[str, tuple[str, int]]:
    """volunteer -> (result state, credit) for a unit."""
    r = t.results
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(r.c.volunteer_id, r.c.state, r.c.credit).where(r.c.unit_id == unit_id)
        ).all()
    return {row.volunteer_id: (row.state, row.credit) for row in rows}


def canonical_volunteer(store: SqlStore, unit_id: str) -> str | None:
    u, r = t.units, t.results
    with store.engine.connect() as conn:
        return conn.execute(
            select(r.c.volunteer_id)
            .select_from(u.join(r, r.c.result_id == u.c.canonical_result_id))
            .where(u.c.unit_id == unit_id)
        ).scalar()


def event_kinds(store: SqlStore) -> list[str]:
    return [event[1] for event in store.recent_events(200)]


# ------------------------------------------------------------------ reputation and credit


def test_faults_and_gold_misses_are_counted_per_kind(store: SqlStore) -> None:
    assert store.get_reputation("v1") == {}
    after = store.record_fault("v1", KIND, "forged signature", T0)
    assert after == Reputation(KIND, faults=1)
    after = store.record_fault("v1", KIND, "missed 1 gold row", T0 + 1, gold_missed=True)
    assert after == Reputation(KIND, faults=2, gold_checked=1, gold_missed=1)
    store.record_fault("v1", "other-kind", "bad", T0 + 2)
    reps = store.get_reputation("v1")
    assert set(reps) == {KIND, "other-kind"}
    assert reps["other-kind"] == Reputation("other-kind", faults=1)
    assert store.get_reputation("v2") == {}
    kinds = event_kinds(store)
    assert kinds.count("volunteer.fault") == 2
    assert kinds.count("volunteer.gold_missed") == 1


def test_valid_results_earn_the_granted_credit_and_outvoted_ones_a_disagreement(
    store: SqlStore,
) -> None:
    units = make_job(store, texts=4, unit_size=2, redundancy=3)

    def two_of_three(unit: UnitRecord, results: list[ResultRecord]) -> Verdict:
        if len(results) < 3:
            return Verdict("pending", "waiting")
        ids = tuple(r.result_id for r in results)
        return Verdict(
            "accepted",
            "disagreed with the quorum",
            valid=ids[:2],
            invalid=ids[2:],
            canonical=ids[0],
            agreement=0.9999,
            credit=min(r.claimed_tokens for r in results[:2]),
            outvoted=(results[2].volunteer_id,),
        )

    # v3 first earns a streak on another unit...
    assert send(store, take(store, "v3"), "v3", accept(wanted=1), claimed=5).status == "accepted"
    assert store.get_reputation("v3")[KIND].consecutive_valid == 1
    # ...then v1, v2, v3 answer the second unit and v3 is outvoted
    for vid, claim in (("v1", 40), ("v2", 31), ("v3", 99)):
        got = take(store, vid)
        assert got is not None and got[1] == units[1]
        send(store, got, vid, two_of_three, claimed=claim)
    assert results_of(store, units[1]) == {
        "v1": ("valid", 31),
        "v2": ("valid", 31),
        "v3": ("invalid", 0),
    }
    reps = {vid: store.get_reputation(vid)[KIND] for vid in ("v1", "v2", "v3")}
    assert reps["v1"] == Reputation(KIND, consecutive_valid=1, valid=1, credit=31)
    assert reps["v2"] == Reputation(KIND, consecutive_valid=1, valid=1, credit=31)
    assert reps["v3"] == Reputation(KIND, consecutive_valid=0, valid=1, disagreements=1, credit=0)


def test_a_result_that_carried_gold_rows_counts_as_gold_checked(store: SqlStore) -> None:
    make_job(store, texts=2, unit_size=2, redundancy=2)
    got = take(store, "v1")
    assert got is not None
    result = NewResult("gold-r", got[1], got[0], "v1", b"e", b"s", b"p", T0 + 1, 7, True)
    store.submit_result(result, accept())
    assert store.get_reputation("v1")[KIND] == Reputation(KIND, gold_checked=1)


# ------------------------------------------------------------------ gold rows


def test_gold_rows_per_model_newest_first_across_jobs(store: SqlStore) -> None:
    """Issue 15: a job draws gold rows from every job of its model (both jobs here use the
    default model), so a new job has gold rows before any of its own units is accepted."""
    make_job(store, "job-a")
    make_job(store, "job-b")
    store.add_gold("job-a", [(f"a{i}", bytes([i]) * 8) for i in range(5)], "coordinator", T0)
    store.add_gold("job-b", [("b0", b"\x01" * 8), ("b1", b"\x02" * 8)], "coordinator", T0)
    assert (store.gold_count("job-a"), store.gold_count("job-b")) == (5, 2)
    assert store.gold_count("job-none") == 0
    rows = store.gold_rows(["job-a", "job-b"], 3)
    assert [(g.job_id, g.text) for g in rows] == [
        ("job-a", "b1"),
        ("job-a", "b0"),
        ("job-a", "a4"),
        ("job-b", "b1"),
        ("job-b", "b0"),
        ("job-b", "a4"),
    ]
    assert rows[2].answer == bytes([4]) * 8
    picked = store.gold_by_ids([rows[1].gold_id, rows[2].gold_id, 10**9])
    assert sorted(g.text for g in picked) == ["a4", "b0"]
    assert store.gold_by_ids([]) == []
    assert store.gold_rows([], 3) == []


def test_an_accepted_unit_yields_quorum_gold_rows(store: SqlStore) -> None:
    units = make_job(store, texts=2, unit_size=2, redundancy=2)
    gold = (("job-a text 0", b"\x00" * 16),)
    verdicts = [send(store, take(store, vid), vid, accept(gold=gold)) for vid in ("v1", "v2")]
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.gold.c.source, t.gold.c.unit_id, t.gold.c.text)).all()
    assert [tuple(r) for r in rows] == [("quorum", units[0], "job-a text 0")]
    # The verdict says what was kept, with the ids the pool of this process adds at once.
    assert [v.gold_kept for v in verdicts] == [(), tuple(store.gold_rows(["job-a"], 10))]


# ------------------------------------------------------------------ adaptive replication


def test_a_solo_lease_of_a_fresh_unit_sets_its_quorum_and_target_to_one(store: SqlStore) -> None:
    units = make_job(store, texts=4, unit_size=2, redundancy=2)
    got = take(store, "v1", solo=True)
    assert got is not None and got[1] == units[0]
    row = unit_row(store, units[0])
    assert (row.quorum, row.target) == (1, 1)  # type: ignore[attr-defined]
    other = take(store, "v2")  # the unit is full: v2 gets the next one
    assert other is not None and other[1] == units[1]
    assert send(store, got, "v1", accept()).status == "accepted"
    row = unit_row(store, units[0])
    assert (row.state, row.replicas) == ("accepted", 1)  # type: ignore[attr-defined]


def test_a_solo_plan_for_a_unit_someone_holds_changes_nothing(store: SqlStore) -> None:
    units = make_job(store, texts=2, unit_size=2, redundancy=2)
    assert take(store, "v1") is not None
    got = take(store, "v2", solo=True)
    assert got is not None and got[1] == units[0]
    row = unit_row(store, units[0])
    assert (row.quorum, row.target) == (2, 2)  # type: ignore[attr-defined]


def test_a_lapsed_solo_lease_gives_the_unit_back_its_redundancy(store: SqlStore) -> None:
    units = make_job(store, texts=2, unit_size=2, redundancy=2)
    got = take(store, "v1", solo=True)
    assert got is not None
    store.release_lease(got[0], "quit", T0 + 1)
    again = take(store, "v2", now=T0 + 2)
    assert again is not None and again[1] == units[0]
    row = unit_row(store, units[0])
    assert (row.quorum, row.target) == (2, 2)  # type: ignore[attr-defined]
    assert take(store, "v3", now=T0 + 2) is not None  # the second slot is open again


# ------------------------------------------------------------------ quotas and addresses


def test_leases_count_towards_the_volunteers_day(store: SqlStore) -> None:
    make_job(store, texts=10, unit_size=1, redundancy=1)

    def day_count() -> tuple[int, int]:
        v = store.get_volunteer("v1")
        assert v is not None
        return v.quota_day, v.leased_today

    assert day_count() == (0, 0)
    take(store, "v1", day=7)
    take(store, "v1", day=7)
    assert day_count() == (7, 2)
    take(store, "v1", day=8)  # a new day starts from one
    assert day_count() == (8, 1)
    take(store, "v1")  # day 0: not counted
    assert day_count() == (8, 1)
    v2 = store.get_volunteer("v2")
    assert v2 is not None and (v2.quota_day, v2.leased_today) == (0, 0)


def test_replicas_go_to_distinct_addresses(store: SqlStore) -> None:
    units = make_job(store, texts=2, unit_size=2, redundancy=3)
    first = take(store, "v1", address="10.0.0.5")
    assert first is not None and first[1] == units[0]
    assert take(store, "v2", address="10.0.0.5") is None  # the same address: not this unit
    assert store.work_remaining("v2", T0)
    assert take(store, "v3", address="10.0.0.6") is not None
    loopback = take(store, "v4", address="")  # exempt
    assert loopback is not None and loopback[1] == units[0]


def test_an_address_frees_up_when_its_lease_is_released_but_not_when_it_submitted(
    store: SqlStore,
) -> None:
    units = make_job(store, texts=4, unit_size=2, redundancy=2)
    first = take(store, "v1", address="10.0.0.5")
    other = take(store, "v2", address="10.0.0.5")
    assert first is not None and other is not None
    assert (first[1], other[1]) == (units[0], units[1])  # the second gets another unit
    send(store, first, "v1", accept())  # submitted: the address still counts
    assert take(store, "v3", address="10.0.0.5") is None
    store.release_lease(other[0], "quit", T0 + 2)
    got = take(store, "v3", address="10.0.0.5", now=T0 + 3)
    assert got is not None and got[1] == units[1]


# ------------------------------------------------------------------ rejected leases


def test_a_rejected_lease_frees_its_slot_and_cannot_deliver(store: SqlStore) -> None:
    units = make_job(store, texts=2, unit_size=2, redundancy=2)
    cheat = take(store, "v1")
    honest = take(store, "v2")
    assert cheat is not None and honest is not None
    assert take(store, "v3") is None
    store.reject_lease(cheat[0], "missed 1 of 1 hidden gold row(s)", T0 + 1)
    record = store.get_lease(cheat[0])
    assert record is not None and record.state == "rejected"
    assert slots_out_of_step(store) == {}
    got = take(store, "v3", now=T0 + 2)
    assert got is not None and got[1] == units[0]
    with pytest.raises(FailedPrecondition) as info:
        send(store, cheat, "v1", accept())
    assert "rejected" in info.value.message and "gold" in info.value.message
    # rejecting again, a closed lease or an unknown one changes nothing
    store.reject_lease(cheat[0], "again", T0 + 3)
    store.reject_lease("unknown", "x", T0 + 3)
    send(store, honest, "v2", accept(), now=T0 + 4)
    store.reject_lease(honest[0], "late", T0 + 5)
    record = store.get_lease(honest[0])
    assert record is not None and record.state == "submitted"


# ------------------------------------------------------------------ quarantine and repair


def test_quarantine_reopens_every_unit_that_rested_on_the_volunteer(store: SqlStore) -> None:
    u = make_job(store, texts=8, unit_size=2, redundancy=2)
    other_job = make_job(store, "job-b", texts=2, unit_size=2, redundancy=2, created_ms=T0 + 1)
    gold = (("gold text", b"\x00" * 16),)
    # u0: v1 alone (adaptive replication)
    assert send(store, take(store, "v1", solo=True), "v1", accept(gold=gold)).status == "accepted"
    # u1: v1 and v2; u2: v2 and v3 (both yield gold rows)
    for vid in ("v1", "v2"):
        send(store, take(store, vid), vid, accept(gold=gold))
    for vid in ("v2", "v3"):
        send(store, take(store, vid), vid, accept(gold=gold))
    # u3: v1 (canonical), v2 and v3, all valid: two remain without v1
    for vid in ("v1", "v2", "v3"):
        got = take(store, vid)
        assert got is not None and got[1] == u[3]
        send(store, got, vid, accept(wanted=3))
    assert [unit_row(store, x).state for x in u] == ["accepted"] * 4  # type: ignore[attr-defined]
    assert canonical_volunteer(store, u[3]) == "v1"
    job = store.get_job("job-a")
    assert job is not None and job.state == "assimilating"
    store.complete_job("job-a", b"{}", b"signature", T0 + 5)
    held = take(store, "v1", now=T0 + 6)  # a live lease in another job
    assert held is not None and held[1] == other_job[0]
    assert store.gold_count("job-a") == 3
    v2_before = store.get_reputation("v2")[KIND]

    repair = store.quarantine("v1", "missed gold rows in 1 result(s)", T0 + 10)

    assert repair is not None
    assert repair.results_invalidated == 3
    assert sorted(repair.units_reopened) == sorted([u[0], u[1]])
    assert repair.jobs_reopened == ("job-a",)
    volunteer = store.get_volunteer("v1")
    assert volunteer is not None and volunteer.quarantined
    assert volunteer.quarantine_reason == "missed gold rows in 1 result(s)"
    # u0 and u1 are open again and need the job's full quorum from others
    for unit_id in (u[0], u[1]):
        row = unit_row(store, unit_id)
        assert row.state == "open"  # type: ignore[attr-defined]
        assert (row.quorum, row.target) == (2, 2)  # type: ignore[attr-defined]
        assert row.canonical_result_id is None  # type: ignore[attr-defined]
        assert "re-verifying" in row.reason  # type: ignore[attr-defined]
    assert results_of(store, u[1])["v2"][0] == "valid"  # v2's own result still counts
    # u2 never involved v1; u3 keeps two valid results and a canonical one from v2
    assert unit_row(store, u[2]).state == "accepted"  # type: ignore[attr-defined]
    row3 = unit_row(store, u[3])
    assert (row3.state, row3.replicas) == ("accepted", 2)  # type: ignore[attr-defined]
    assert canonical_volunteer(store, u[3]) == "v2"
    for unit_id in (u[0], u[1], u[3]):
        assert results_of(store, unit_id)["v1"] == ("invalid", 0)
    # the dataset is withdrawn, the job runs again, gold rows of reopened units are gone
    job = store.get_job("job-a")
    assert job is not None and job.state == "running"
    assert "re-verifying" in job.reason
    assert store.get_manifest("job-a") is None
    with store.engine.connect() as conn:
        left = conn.execute(select(t.gold.c.unit_id)).scalars().all()
    assert left == [u[2]]
    # v1's live lease is cancelled; the slot bookkeeping stays right
    record = store.get_lease(held[0])
    assert record is not None and record.state == "cancelled"
    assert slots_out_of_step(store) == {}
    kinds = event_kinds(store)
    assert "volunteer.quarantined" in kinds and "job.reverifying" in kinds
    assert list(store.units_resting_on_quarantined("job-a")) == []
    # quarantining again changes nothing
    assert store.quarantine("v1", "again", T0 + 11) is None

    # re-verification by others: u0 needs two new results, u1 one more next to v2's
    for vid in ("v3", "v4"):
        got = take(store, vid, now=T0 + 12)
        assert got is not None and got[1] == u[0]
        send(store, got, vid, accept(), now=T0 + 13)
    got = take(store, "v3", now=T0 + 14)
    assert got is not None and got[1] == u[1]
    assert send(store, got, "v3", accept(), now=T0 + 15).status == "accepted"
    job = store.get_job("job-a")
    assert job is not None and job.state == "assimilating"
    assert {canonical_volunteer(store, x) for x in u} <= {"v2", "v3", "v4"}
    assert store.get_reputation("v2")[KIND].valid == v2_before.valid  # not credited twice
    assert slots_out_of_step(store) == {}


def test_quarantine_of_a_pending_result_frees_its_slot(store: SqlStore) -> None:
    units = make_job(store, texts=2, unit_size=2, redundancy=2)
    assert send(store, take(store, "v1"), "v1", accept()).status == "pending"
    repair = store.quarantine("v1", "3 refused result(s)", T0 + 5)
    assert repair is not None
    assert (repair.results_invalidated, repair.units_reopened, repair.jobs_reopened) == (1, (), ())
    assert results_of(store, units[0]) == {"v1": ("invalid", 0)}
    assert slots_out_of_step(store) == {}
    job = store.get_job("job-a")
    assert job is not None and job.state == "running"
    for vid in ("v2", "v3"):
        got = take(store, vid, now=T0 + 6)
        assert got is not None and got[1] == units[0]


def test_units_resting_on_a_quarantined_volunteer_are_listed(store: SqlStore) -> None:
    units = make_job(store, texts=2, unit_size=2, redundancy=1)
    send(store, take(store, "v1"), "v1", accept())
    assert list(store.units_resting_on_quarantined("job-a")) == []
    # the flag alone, as a second coordinator would see it before its repair commits
    v = t.volunteers
    with store.engine.begin() as conn:
        conn.execute(v.update().where(v.c.volunteer_id == "v1").values(quarantined=1))
    assert list(store.units_resting_on_quarantined("job-a")) == [units[0]]
    assert list(store.units_resting_on_quarantined("job-other")) == []


def test_release_quarantine(store: SqlStore) -> None:
    assert store.quarantine("v2", "outvoted", T0) is not None
    store.release_quarantine("v2", T0 + 1)
    volunteer = store.get_volunteer("v2")
    assert volunteer is not None
    assert (volunteer.quarantined, volunteer.quarantine_reason) == (False, "")
    assert "volunteer.released" in event_kinds(store)
    assert store.quarantine("v2", "again", T0 + 2) is not None  # can be quarantined anew


def test_quarantine_withdraws_the_credit_of_the_results_it_voids(store: SqlStore) -> None:
    units = make_job(store, texts=6, unit_size=2, redundancy=2)
    make_job(store, "job-b", texts=2, unit_size=2, redundancy=1, created_ms=T0 + 1)
    for credit in (30, 12):  # two units v1 and v2 agree on
        for vid in ("v1", "v2"):
            send(store, take(store, vid), vid, accept(credit=credit))
    store.record_fault("v1", "other-kind", "bad", T0)  # another kind's record is untouched
    assert store.get_reputation("v1")[KIND].credit == 42
    assert send(store, take(store, "v1"), "v1", accept()).status == "pending"  # no credit yet
    store.quarantine("v1", "outvoted", T0 + 5)
    assert store.get_reputation("v1")[KIND].credit == 0
    assert store.get_reputation("v1")["other-kind"] == Reputation("other-kind", faults=1)
    assert store.get_reputation("v2")[KIND].credit == 42
    for unit_id, credit in zip(units[:2], (30, 12), strict=True):
        assert results_of(store, unit_id) == {"v1": ("invalid", 0), "v2": ("valid", credit)}


def test_a_dataset_written_while_a_quarantine_reopened_its_job_is_not_published(
    store: SqlStore,
) -> None:
    """The assimilator reads the canonical rows, a quarantine re-opens units under it, then
    the assimilator finishes: the job must stay running, without a manifest."""
    units = make_job(store, texts=2, unit_size=2, redundancy=2)
    for vid in ("v1", "v2"):
        send(store, take(store, vid), vid, accept())
    with store.claim_job("job-a", "assimilating") as job:
        assert job is not None
        rows = list(store.dataset_units("job-a"))  # what assimilate() writes
        assert [r.unit_id for r in rows] == units
        repair = store.quarantine("v1", "missed gold rows", T0 + 5)
        assert repair is not None and repair.jobs_reopened == ("job-a",)
        store.complete_job("job-a", b"{}", b"signature", T0 + 6)
    job = store.get_job("job-a")
    assert job is not None and job.state == "running"
    assert store.get_manifest("job-a") is None
    assert "job.complete" not in event_kinds(store)
    assert unit_row(store, units[0]).state == "open"  # type: ignore[attr-defined]
    assert take(store, "v3", now=T0 + 7) is not None  # and its units are leased again


def test_a_volunteers_standing_is_its_record_and_reputation_per_kind(store: SqlStore) -> None:
    assert store.get_standing("nobody") == (None, {})
    record, reputation = store.get_standing("v1")
    assert record == store.get_volunteer("v1") and reputation == {}
    with store._tx() as conn:
        store._bump(conn, "v1", "embed-text", T0, consecutive_valid=1, valid=1, credit=8)
        store._bump(conn, "v1", "filter-text", T0, faults=1, consecutive_valid=-1)
        store._bump(conn, "v2", "embed-text", T0, valid=5)
    record, reputation = store.get_standing("v1")
    assert record is not None and record.volunteer_id == "v1"
    assert reputation == store.get_reputation("v1")
    assert sorted(reputation) == ["embed-text", "filter-text"]
    assert (reputation["embed-text"].valid, reputation["embed-text"].credit) == (1, 8)
    assert reputation["filter-text"].faults == 1
