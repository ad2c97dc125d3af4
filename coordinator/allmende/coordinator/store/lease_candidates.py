"""The raw SQL of a lease's candidate query (`FREE_UNIT`, and on PostgreSQL
`FREE_UNIT_FIRST_JOB`), which differs by backend, and the advisory lock a PostgreSQL lease
transaction takes first (`LOCK_KEY`). Built once; leasing_sql.py runs them. The data path's
other statements are in statements.py.
"""

from __future__ import annotations

from sqlalchemy import text

from allmende.coordinator.store.fastsql import prebuilt

# The first unit of a job with a free replica slot that the volunteer neither holds nor has
# answered. Written out, because each backend needs a clause SQLAlchemy cannot say for it:
# SQLite's planner, without statistics, would walk ix_units_open and look at every unit in
# flight, hence INDEXED BY; PostgreSQL locks the unit it returns and passes over units other
# coordinators hold (SKIP LOCKED), and excludes candidates it has already rejected.
_NOT_MINE = """
  AND NOT EXISTS (SELECT 1 FROM leases AS l {lease_index}
                  WHERE l.unit_id = u.unit_id AND l.volunteer_id = :volunteer
                  AND l.state = :active AND l.deadline_ms > :now)
  AND NOT EXISTS (SELECT 1 FROM results AS r
                  WHERE r.unit_id = u.unit_id AND r.volunteer_id = :volunteer)"""
# Replicas of one unit go to distinct address blocks (leases.address holds the block; ''
# means exempt: loopback or a local socket; :distinct 0 switches the rule off).
_OTHER_ADDRESS = """
  AND (:address = '' OR :distinct = 0 OR NOT EXISTS (SELECT 1 FROM leases AS a {lease_index}
                  WHERE a.unit_id = u.unit_id AND a.address = :address
                  AND a.volunteer_id <> :volunteer AND a.state IN ('active', 'submitted')))"""
# One address block holds at most :block_share of the job's replica slots (its units, the
# last seq + 1, times its redundancy) in unexpired leases, and may always take one. Not
# correlated with the unit, so each backend evaluates it once per statement; on PostgreSQL
# the lease transaction first takes an advisory lock on the block (LOCK_KEY), so replicas
# counting at once cannot both take the last slot.
_BLOCK_SHARE = """
  AND (:address = '' OR (SELECT count(*) FROM leases AS b {block_index}
                  JOIN units AS bu ON bu.unit_id = b.unit_id
                  WHERE b.address = :address AND b.state = 'active'
                  AND b.deadline_ms > :now AND bu.job_id = :job)
       < {greatest}(1, :block_share * (SELECT max(s.seq) + 1 FROM units AS s
                                       WHERE s.job_id = :job)
                      * (SELECT bj.redundancy FROM jobs AS bj WHERE bj.job_id = :job)))"""
# The volunteer holds fewer than :held_cap unexpired leases: a lease call's later leases are
# held to the cap its first one judged (`admit`), so that two calls at once, each one
# transaction per lease on PostgreSQL, cannot both fill it (the advisory lock on the
# volunteer orders them).
_HELD = """
  AND (SELECT count(*) FROM leases AS h {held_index}
       WHERE h.volunteer_id = :volunteer AND h.state = 'active' AND h.deadline_ms > :now)
      < :held_cap"""
# With the gold rows the unit's earlier leases got: every replica of a unit gets the same
# gold rows (in its own order), so volunteers comparing their copies learn nothing.
_CANDIDATE = (
    "SELECT u.unit_id, u.job_id, u.blob, u.signature, u.rows, u.busy, u.quorum,"
    " (SELECT g.gold_ids FROM leases AS g WHERE g.unit_id = u.unit_id AND g.gold_ids <> ''"
    " ORDER BY g.created_ms LIMIT 1) AS gold_ids FROM units AS u"
)
FREE_UNIT = {
    "sqlite": text(
        _CANDIDATE + " INDEXED BY ix_units_free"
        " WHERE u.job_id = :job AND u.state = 'open' AND u.busy < u.target"
        + _NOT_MINE.format(lease_index="INDEXED BY ix_leases_unit")
        + _OTHER_ADDRESS.format(lease_index="INDEXED BY ix_leases_unit")
        + _BLOCK_SHARE.format(block_index="INDEXED BY ix_leases_block", greatest="max")
        + _HELD.format(held_index="INDEXED BY ix_leases_volunteer")
        + " ORDER BY u.seq LIMIT 1"
    ),
    "postgresql": text(
        _CANDIDATE + " WHERE u.job_id = :job AND u.state = 'open' AND u.busy < u.target"
        " AND u.unit_id <> ALL(:tried)"
        + _NOT_MINE.format(lease_index="")
        + _OTHER_ADDRESS.format(lease_index="")
        + _BLOCK_SHARE.format(block_index="", greatest="GREATEST")
        + _HELD.format(held_index="")
        + " ORDER BY u.seq LIMIT 1 FOR NO KEY UPDATE OF u SKIP LOCKED"
    ),
}
# PostgreSQL: the candidate in the job a lease tries first (the order of Q.running_jobs),
# so that it can travel in the lease transaction's first round trip, before the job list
# it would otherwise wait for.
FREE_UNIT_FIRST_JOB = text(
    str(FREE_UNIT["postgresql"]).replace(
        ":job",
        "(SELECT job_id FROM jobs WHERE state = 'running'"
        " AND (fetch_rows = 0 OR :fetch_urls = 1)"
        " ORDER BY priority DESC, created_ms, job_id LIMIT 1)",
    )
)
# PostgreSQL: a lease transaction first takes a transaction-scoped advisory lock on its
# volunteer and on its address block (keys 'volunteer:ID', 'block:BLOCK'), so that the caps
# on leases held per volunteer and slots held per block, counted in the statements after
# it, hold across coordinator replicas. Always taken before any row lock, so it cannot
# deadlock with them.
LOCK_KEY = text("SELECT pg_advisory_xact_lock(hashtext(:key)) IS NULL AS locked")


for _statement in [*FREE_UNIT.values(), FREE_UNIT_FIRST_JOB, LOCK_KEY]:
    prebuilt(_statement)
