"""The SQL store's data-path statements, built once (`Q`), and those of reputation and
daily quotas. The raw SQL of a lease's candidate query, which differs by backend, is in
lease_candidates.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    LargeBinary,
    String,
    bindparam,
    case,
    exists,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ClauseElement, TableClause
from sqlalchemy.sql.elements import ColumnClause

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.fastsql import prebuilt

# A literal, not a bound parameter: the partial index ix_leases_due serves only queries
# that repeat its condition.
_ACTIVE: ColumnClause[str] = literal_column("'active'")
# Expired leases swept per lease call (few: a mass expiry, when many volunteers vanish at
# once, is spread over many leases instead of stalling one).
_SWEEP_BATCH = 50


def _b(name: str, expanding: bool = False) -> Any:
    return bindparam(name, expanding=expanding)


# A job whose rows include URLs is leased only to volunteers that opted in to fetching
# (:fetch_urls 1). The filter is on the job list, so the unit query and ix_units_free are
# unchanged.
_FETCHABLE = (t.jobs.c.fetch_rows == 0) | (bindparam("fetch_urls", type_=BigInteger) == 1)


class Q:
    """The data path's statements, built once. Building a SQLAlchemy expression costs more
    than SQLite takes to run it, so per call only parameters are bound. Parameters named
    b_* are in WHERE clauses of updates, whose column-named parameters are the SET list."""

    u, j, le, r, v, e = t.units, t.jobs, t.leases, t.results, t.volunteers, t.events
    job = select(j).where(j.c.job_id == _b("job_id"))
    volunteer = select(v).where(v.c.volunteer_id == _b("volunteer_id"))
    lease = select(le).where(le.c.lease_id == _b("lease_id"))
    unit = select(u, j).join(j, j.c.job_id == u.c.job_id).where(u.c.unit_id == _b("unit_id"))
    unit_locked = unit.with_for_update(of=u, key_share=True)
    # A lease with its unit and the unit's job: what a submitted result is checked against.
    lease_and_unit = (
        select(
            u,
            j,
            le.c.lease_id,
            le.c.volunteer_id,
            le.c.state.label("lease_state"),
            le.c.deadline_ms,
            le.c.unit_sha256,
            le.c.composition,
            le.c.gold_ids,
        )
        .join(j, j.c.job_id == u.c.job_id)
        .join(le, le.c.unit_id == u.c.unit_id)
        .where(le.c.lease_id == _b("lease_id"))
    )
    lock_unit = (
        select(u.c.unit_id).where(u.c.unit_id == _b("unit_id")).with_for_update(key_share=True)
    )
    lock_job = select(j.c.job_id).where(j.c.job_id == _b("job_id")).with_for_update(key_share=True)
    add_event = e.insert()

    # leasing
    due = (
        select(le.c.unit_id)
        .where(le.c.state == _ACTIVE, le.c.deadline_ms <= _b("now"))
        .limit(_SWEEP_BATCH)
    )
    lock_units_skip = (
        select(u.c.unit_id)
        .where(u.c.unit_id.in_(_b("units", expanding=True)))
        .order_by(u.c.unit_id)
        .with_for_update(key_share=True, skip_locked=True)
    )
    expire = (
        le.update()
        .where(
            le.c.unit_id.in_(_b("units", expanding=True)),
            le.c.state == "active",
            le.c.deadline_ms <= _b("now"),
        )
        .values(state="expired", reason="the deadline passed", **t.LEASE_CLOSED)
    )
    # The jobs to lease from, in order, each row also saying when the first live lease
    # falls due (one index lookup), so a lease sweeps only when something has expired.
    running_jobs = (
        select(
            j.c.job_id,
            j.c.lease_seconds,
            j.c.kind,
            j.c.redundancy,
            j.c.gold_fraction,
            select(func.min(le.c.deadline_ms))
            .where(le.c.state == _ACTIVE)
            .scalar_subquery()
            .label("next_due"),
        )
        .where(j.c.state == "running", _FETCHABLE)
        .order_by(j.c.priority.desc(), j.c.created_ms, j.c.job_id)
    )
    not_mine = (
        ~select(le.c.lease_id)
        .where(
            le.c.unit_id == u.c.unit_id,
            le.c.volunteer_id == _b("volunteer"),
            le.c.state == "active",
            le.c.deadline_ms > _b("now"),
        )
        .exists(),
        ~select(r.c.result_id)
        .where(r.c.unit_id == u.c.unit_id, r.c.volunteer_id == _b("volunteer"))
        .exists(),
    )
    # PostgreSQL: insert the lease only if the unit, just locked, is still free for this
    # volunteer, judged by this statement's snapshot (taken after the lock).
    add_lease_if_free = (
        le.insert()
        .from_select(
            [
                "lease_id",
                "unit_id",
                "volunteer_id",
                "state",
                "created_ms",
                "deadline_ms",
                "reason",
                "address",
                "unit_sha256",
                "composition",
                "gold_ids",
                "unit_blob",
                "unit_signature",
            ],
            select(
                bindparam("lease_id", type_=String),
                u.c.unit_id,
                bindparam("volunteer", type_=String),
                literal("active", String),
                bindparam("now", type_=BigInteger),
                bindparam("deadline", type_=BigInteger),
                literal("", String),
                bindparam("address", type_=String),
                bindparam("unit_sha256", type_=LargeBinary),
                bindparam("composition", type_=LargeBinary),
                bindparam("gold_ids", type_=String),
                bindparam("unit_blob", type_=LargeBinary),
                bindparam("unit_signature", type_=LargeBinary),
            ).where(
                u.c.unit_id == _b("unit_id"), u.c.state == "open", u.c.busy < u.c.target, *not_mine
            ),
        )
        .returning(le.c.lease_id)  # SQLAlchemy reports no rowcount for INSERT ... SELECT
    )
    any_work = (
        select(u.c.unit_id)
        .select_from(u.join(j, j.c.job_id == u.c.job_id))
        .where(j.c.state == "running", _FETCHABLE, u.c.state == "open", *not_mine)
        .limit(1)
    )
    add_lease = le.insert()
    # A volunteer's unexpired leases of open units, with the unit as signed for each (and
    # the unit's own bytes, for a lease handed out uncomposed): ListLeases.
    held_leases = (
        select(
            le.c.lease_id,
            le.c.unit_id,
            le.c.deadline_ms,
            le.c.unit_sha256,
            le.c.unit_blob,
            le.c.unit_signature,
            u.c.blob.label("plain_blob"),
            u.c.signature.label("plain_signature"),
        )
        .join(u, u.c.unit_id == le.c.unit_id)
        .where(
            le.c.volunteer_id == _b("volunteer_id"),
            le.c.state == _ACTIVE,
            le.c.deadline_ms > _b("now"),
            u.c.state == "open",
        )
        .order_by(le.c.created_ms, le.c.lease_id)
    )
    release = (
        le.update()
        .where(le.c.lease_id == _b("b_lease"), le.c.state == "active")
        .values(state="released", reason=_b("b_reason"), **t.LEASE_CLOSED)
    )

    # results
    # The lease a result comes on, and whether its volunteer already answered the unit.
    lease_answered = select(
        le,
        select(r.c.result_id)
        .where(r.c.unit_id == le.c.unit_id, r.c.volunteer_id == le.c.volunteer_id)
        .exists()
        .label("answered"),
    ).where(le.c.lease_id == _b("lease_id"))
    add_result = r.insert()
    # Another lease of the unit granted after this lease's deadline: its slot went to
    # someone else (see ResultQueries.submit_result).
    _other = le.alias("other")
    leased_again = (
        select(_other.c.lease_id)
        .where(
            _other.c.unit_id == _b("unit_id"),
            _other.c.lease_id != _b("lease_id"),
            _other.c.created_ms >= _b("deadline_ms"),
        )
        .limit(1)
    )
    lease_submitted = (
        le.update()
        .where(le.c.lease_id == _b("b_lease"))
        .values(state="submitted", **t.LEASE_CLOSED)
    )
    # The task kind of the unit a result is for, and a volunteer's streak in it.
    _kind = select(j.c.kind).where(j.c.job_id == u.c.job_id, u.c.unit_id == _b("unit_id"))
    streak_of = select(t.reputation.c.consecutive_valid).where(
        t.reputation.c.volunteer_id == _b("volunteer_id"),
        t.reputation.c.kind == _kind.scalar_subquery(),
    )
    counted = (
        select(
            r.c.result_id,
            r.c.volunteer_id,
            r.c.payload,
            r.c.state,
            r.c.received_ms,
            r.c.claimed_tokens,
            r.c.vouched,
            func.coalesce(
                select(t.reputation.c.consecutive_valid)
                .where(
                    t.reputation.c.volunteer_id == r.c.volunteer_id,
                    t.reputation.c.kind == _kind.scalar_subquery(),
                )
                .scalar_subquery(),
                0,
            ),
        )
        .where(r.c.unit_id == _b("unit_id"), r.c.state != "invalid")
        .order_by(r.c.received_ms, r.c.result_id)
    )
    mark_result = r.update().where(r.c.result_id == _b("b_id"))
    update_unit = u.update().where(u.c.unit_id == _b("b_unit"))
    cancel_leases = (
        le.update()
        .where(le.c.unit_id == _b("b_unit"), le.c.state == "active")
        .values(state="cancelled", reason=_b("b_reason"), **t.LEASE_CLOSED)
    )
    # Whether a job still has an open unit: one index probe, where counting them would
    # walk every open unit of the job each time one is decided.
    any_open = select(u.c.unit_id).where(u.c.job_id == _b("job_id"), u.c.state == "open").limit(1)
    # PostgreSQL: another open unit of the job that no transaction holds (FOR SHARE conflicts
    # with the unit lock a submit or a lease takes; see ResultQueries._apply).
    open_unheld = (
        select(u.c.unit_id)
        .where(u.c.job_id == _b("job_id"), u.c.state == "open", u.c.unit_id != _b("unit_id"))
        .limit(1)
        .with_for_update(read=True, skip_locked=True)
    )
    units_failed = select(func.count()).where(u.c.job_id == _b("job_id"), u.c.state == "failed")
    update_job = j.update().where(j.c.job_id == _b("b_job"))


# Reputation (trust_sql.py): a volunteer's counters per task kind.
COUNTERS = (
    "consecutive_valid",
    "valid",
    "disagreements",
    "faults",
    "gold_checked",
    "gold_missed",
    "credit",
)


def _bump_statement(insert: Any) -> Any:
    """Add a volunteer's counter deltas in one statement, creating the row at the first.
    Parameters: the counters' deltas, `reset` 1 to zero the streak instead of adding to it."""
    rep = t.reputation
    statement = insert(rep)
    new = statement.excluded
    added = {name: rep.c[name] + new[name] for name in COUNTERS}
    added["consecutive_valid"] = case(
        (bindparam("reset") == 1, 0), else_=rep.c.consecutive_valid + new.consecutive_valid
    )
    return prebuilt(
        statement.on_conflict_do_update(
            index_elements=[rep.c.volunteer_id, rep.c.kind],
            set_={**added, "updated_ms": new.updated_ms},
        )
    )


BUMP = {"sqlite": _bump_statement(sqlite.insert), "postgresql": _bump_statement(postgresql.insert)}
REPUTATION = prebuilt(
    select(t.reputation).where(t.reputation.c.volunteer_id == bindparam("volunteer_id"))
)
# A volunteer's record with its reputation rows (one row per task kind, or one with kind
# NULL before its first counted result): what a lease checks, in one read.
# And the unexpired leases it holds (parameter `now`), for the cap on leases held at once.
_LIVE_LEASES = (
    select(func.count())
    .where(
        t.leases.c.volunteer_id == t.volunteers.c.volunteer_id,
        t.leases.c.state == _ACTIVE,
        t.leases.c.deadline_ms > bindparam("now"),
    )
    .scalar_subquery()
    .label("live_leases")
)
STANDING = prebuilt(
    select(
        t.volunteers,
        _LIVE_LEASES,
        *(t.reputation.c[name].label(f"rep_{name}") for name in ("kind", *COUNTERS)),
    )
    .select_from(
        t.volunteers.outerjoin(
            t.reputation, t.reputation.c.volunteer_id == t.volunteers.c.volunteer_id
        )
    )
    .where(t.volunteers.c.volunteer_id == bindparam("volunteer_id"))
)
SET_QUORUM = prebuilt(t.units.update().where(t.units.c.unit_id == bindparam("b_unit")))
COUNT_LEASE = prebuilt(
    t.volunteers.update()
    .where(t.volunteers.c.volunteer_id == bindparam("b_volunteer"))
    .values(
        leased_today=case(
            (t.volunteers.c.quota_day == bindparam("day"), t.volunteers.c.leased_today + 1),
            else_=1,
        ),
        quota_day=bindparam("day"),
    )
)
# The same two writes, made only if the lease `b_lease` exists: on PostgreSQL they travel
# with the lease's insert and the COMMIT in one round trip, before anyone knows whether the
# insert found its unit still free.
_LEASED = exists().where(t.leases.c.lease_id == bindparam("b_lease"))
SET_QUORUM_IF_LEASED = prebuilt(SET_QUORUM.where(_LEASED))
COUNT_LEASE_IF_LEASED = prebuilt(COUNT_LEASE.where(_LEASED))


for _statement in vars(Q).values():
    if isinstance(_statement, ClauseElement) and not isinstance(_statement, TableClause):
        prebuilt(_statement)
