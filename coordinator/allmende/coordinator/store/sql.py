"""The SQL store: one implementation of `Store` over SQLAlchemy Core, for SQLite and PostgreSQL.

SQLite (the embedded default) runs in WAL mode and takes its write lock at the start of each
transaction (BEGIN IMMEDIATE), so read-then-write sequences cannot deadlock or interleave.

PostgreSQL (psycopg 3, READ COMMITTED) lets several coordinator processes share one database,
so the same methods take row locks where the SQLite write lock used to be enough:

- a lease locks the unit it hands out (`FOR NO KEY UPDATE SKIP LOCKED`: concurrent leases
  pass over each other's units instead of queueing), and inserts the lease only if the unit,
  seen in a snapshot taken after the lock, is still free for that volunteer;
- a result locks its unit before it reads the other replicas, so two replicas arriving at
  once on two coordinators are judged one after the other, never each without the other;
- deciding a job's last unit locks the job row before counting the units left open.

Locks are always taken units first, then leases, then jobs, so writers cannot deadlock.
They are FOR NO KEY UPDATE locks: foreign-key checks take KEY SHARE locks on the rows they
reference (a unit's job, for one), and FOR UPDATE would conflict with those.
`units.busy` (replica slots taken) is kept by database triggers; see schema.py.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    LargeBinary,
    String,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    literal,
    literal_column,
    make_url,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import ColumnClause

from allmende.coordinator.store import migrate
from allmende.coordinator.store import schema as t
from allmende.coordinator.store.admin_sql import AdminQueries
from allmende.coordinator.store.base import Compose, Judge
from allmende.coordinator.store.records import (
    DatasetItem,
    DatasetUnit,
    JobCounts,
    JobRecord,
    JobSettings,
    LeaseCandidate,
    LeaseGrant,
    LeaseRecord,
    NewItem,
    NewJob,
    NewResult,
    NewUnit,
    ResultRecord,
    UnitRecord,
    Verdict,
    VolunteerRecord,
)
from allmende.coordinator.store.trust_sql import TrustQueries
from allmende.protocol.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)

_INSERT_BATCH = 5000
_WRITE = "allmende_write"
_READ = "allmende_read"
# A literal, not a bound parameter: the partial index ix_leases_due serves only queries
# that repeat its condition.
_ACTIVE: ColumnClause[str] = literal_column("'active'")
# Expired leases swept per lease call (few: a mass expiry, when many volunteers vanish at
# once, is spread over many leases instead of stalling one), and candidates a PostgreSQL
# lease tries per job.
_SWEEP_BATCH = 50
_LEASE_TRIES = 8
# pg_try_advisory_xact_lock(classid, objid) namespace for job claims ("Alln").
_CLAIM_CLASS = 0x416C6C6E
# meta key: the fingerprint of the coordinator key the database belongs to.
_COORDINATOR = "coordinator"

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
# Replicas of one unit go to distinct network addresses ('' means exempt: loopback, or the
# rule switched off).
_OTHER_ADDRESS = """
  AND (:address = '' OR NOT EXISTS (SELECT 1 FROM leases AS a {lease_index}
                  WHERE a.unit_id = u.unit_id AND a.address = :address
                  AND a.volunteer_id <> :volunteer AND a.state IN ('active', 'submitted')))"""
_CANDIDATE = "SELECT u.unit_id, u.blob, u.signature, u.rows, u.busy, u.quorum FROM units AS u"
_FREE_UNIT = {
    "sqlite": text(
        _CANDIDATE + " INDEXED BY ix_units_free"
        " WHERE u.job_id = :job AND u.state = 'open' AND u.busy < u.target"
        + _NOT_MINE.format(lease_index="INDEXED BY ix_leases_unit")
        + _OTHER_ADDRESS.format(lease_index="INDEXED BY ix_leases_unit")
        + " ORDER BY u.seq LIMIT 1"
    ),
    "postgresql": text(
        _CANDIDATE + " WHERE u.job_id = :job AND u.state = 'open' AND u.busy < u.target"
        " AND u.unit_id <> ALL(:tried)"
        + _NOT_MINE.format(lease_index="")
        + _OTHER_ADDRESS.format(lease_index="")
        + " ORDER BY u.seq LIMIT 1 FOR NO KEY UPDATE OF u SKIP LOCKED"
    ),
}


def _sqlite_engine(url: str, pool_size: int) -> Engine:
    memory = url in ("sqlite://", "sqlite:///:memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if memory:
        kwargs["poolclass"] = StaticPool
    else:  # readers run side by side in WAL mode: one connection per RPC thread
        kwargs.update(pool_size=pool_size, max_overflow=pool_size)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front; readers get a deferred snapshot; a single
        # read needs no transaction at all (one statement is atomic in autocommit mode).
        if conn.info.get(_READ):
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get(_WRITE) else "BEGIN")

    return engine


def _postgres_engine(url: str, pool_size: int) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidArgument("database", "a URL such as postgresql://USER@HOST/DB") from None
    # psycopg 3 is the driver we ship; SQLAlchemy would otherwise pick psycopg2.
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername != "postgresql+psycopg":
        raise InvalidArgument(
            "database", f"postgresql:// (psycopg 3), got driver {parsed.drivername!r}"
        )
    return create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=3600,
        connect_args={"application_name": "allmende-coordinator"},
    )


def backend_of(url: str) -> str:
    """'sqlite' or 'postgresql' for a database URL; InvalidArgument for anything else."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    raise InvalidArgument(
        "database",
        f"a sqlite:///PATH or postgresql://USER@HOST/DB URL, got {scheme or url!r}",
    )


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("://", 1)[0] + "://..."


def make_engine(url: str, pool_size: int = 24) -> Engine:
    """The SQLAlchemy engine for a database URL, configured as the store uses it."""
    if backend_of(url) == "sqlite":
        return _sqlite_engine(url, pool_size)
    return _postgres_engine(url, pool_size)


def open_store(url: str, pool_size: int = 24) -> SqlStore:
    """Open the store at a database URL, creating or migrating its schema to this code's.

    `sqlite:///PATH` (or `sqlite://` in memory) is the embedded default; `postgresql://...`
    lets several coordinator processes serve from one database. `pool_size` is the number
    of database connections kept (up to twice that under load): one per RPC worker thread.
    """
    try:
        return SqlStore(make_engine(url, pool_size), serialise_writes=backend_of(url) == "sqlite")
    except DBAPIError as exc:  # unreachable server, wrong credentials, unwritable file
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise FailedPrecondition(f"cannot open the database {safe_url(url)}: {reason}") from None


def _settings(row: Any) -> JobSettings:
    return JobSettings(
        kind=row.kind,
        model=row.model,
        model_sha256=row.model_sha256,
        dims=row.dims,
        redundancy=row.redundancy,
        unit_size=row.unit_size,
        tau=row.tau,
        max_replicas=row.max_replicas,
        lease_seconds=row.lease_seconds,
        result_dtype=row.result_dtype,
        gold_fraction=row.gold_fraction,
    )


def _job(row: Any) -> JobRecord:
    return JobRecord(
        job_id=row.job_id,
        name=row.name,
        state=row.state,
        settings=_settings(row),
        source_name=row.source_name,
        items=row.items,
        unique_items=row.unique_items,
        created_ms=row.created_ms,
        completed_ms=row.completed_ms,
        reason=row.reason,
        priority=row.priority,
    )


def _unit(row: Any) -> UnitRecord:
    return UnitRecord(
        unit_id=row.unit_id,
        job_id=row.job_id,
        seq=row.seq,
        rows=row.rows,
        state=row.state,
        target=row.target,
        blob=row.blob,
        settings=_settings(row),
        quorum=row.quorum,
    )


def _b(name: str, expanding: bool = False) -> Any:
    return bindparam(name, expanding=expanding)


class _Q:
    """The data path's statements, built once. Building a SQLAlchemy expression costs more
    than SQLite takes to run it, so per call only parameters are bound. Parameters named
    b_* are in WHERE clauses of updates, whose column-named parameters are the SET list."""

    u, j, le, r, v, e = t.units, t.jobs, t.leases, t.results, t.volunteers, t.events
    job = select(j).where(j.c.job_id == _b("job_id"))
    volunteer = select(v).where(v.c.volunteer_id == _b("volunteer_id"))
    lease = select(le).where(le.c.lease_id == _b("lease_id"))
    unit = select(u, j).join(j, j.c.job_id == u.c.job_id).where(u.c.unit_id == _b("unit_id"))
    unit_locked = unit.with_for_update(of=u, key_share=True)
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
        .values(state="expired", reason="the deadline passed")
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
        .where(j.c.state == "running")
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
            ).where(
                u.c.unit_id == _b("unit_id"), u.c.state == "open", u.c.busy < u.c.target, *not_mine
            ),
        )
        .returning(le.c.lease_id)  # SQLAlchemy reports no rowcount for INSERT ... SELECT
    )
    any_work = (
        select(u.c.unit_id)
        .select_from(u.join(j, j.c.job_id == u.c.job_id))
        .where(j.c.state == "running", u.c.state == "open", *not_mine)
        .limit(1)
    )
    add_lease = le.insert()
    release = (
        le.update()
        .where(le.c.lease_id == _b("b_lease"), le.c.state == "active")
        .values(state="released", reason=_b("b_reason"))
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
    lease_submitted = le.update().where(le.c.lease_id == _b("b_lease")).values(state="submitted")
    counted = (
        select(
            r.c.result_id,
            r.c.volunteer_id,
            r.c.payload,
            r.c.state,
            r.c.received_ms,
            r.c.claimed_tokens,
        )
        .where(r.c.unit_id == _b("unit_id"), r.c.state != "invalid")
        .order_by(r.c.received_ms, r.c.result_id)
    )
    mark_valid = r.update().where(r.c.result_id.in_(_b("b_ids", expanding=True)))
    update_unit = u.update().where(u.c.unit_id == _b("b_unit"))
    cancel_leases = (
        le.update()
        .where(le.c.unit_id == _b("b_unit"), le.c.state == "active")
        .values(state="cancelled", reason=_b("b_reason"))
    )
    # Whether a job still has an open unit: one index probe, where counting them would
    # walk every open unit of the job each time one is decided.
    any_open = select(u.c.unit_id).where(u.c.job_id == _b("job_id"), u.c.state == "open").limit(1)
    units_failed = select(func.count()).where(u.c.job_id == _b("job_id"), u.c.state == "failed")
    update_job = j.update().where(j.c.job_id == _b("b_job"))


class SqlStore(AdminQueries, TrustQueries):
    """`Store` over SQLAlchemy Core. Each public method is one transaction."""

    def __init__(self, engine: Engine, serialise_writes: bool = False) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        # SQLite allows one writer; a process-wide lock keeps threads from queueing in
        # SQLite's busy handler, which is slower and unfair.
        self._write_lock = threading.Lock() if serialise_writes else None
        # Jobs claimed by this process (SQLite; on PostgreSQL the database holds claims).
        self._claims: set[str] = set()
        self._claims_lock = threading.Lock()
        # Single-statement reads skip the transaction: autocommit on PostgreSQL (no BEGIN
        # and ROLLBACK round trips), no BEGIN on SQLite.
        self._reader = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self.postgres else engine
        )
        try:
            with self._tx() as conn:
                self.revision = migrate.upgrade(conn)
        except BaseException:
            engine.dispose()
            raise

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """One write transaction: committed when the block ends, rolled back on error."""
        if self._write_lock is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self._write_lock, self.engine.connect() as conn:
            conn.info[_WRITE] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop(_WRITE, None)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for one read statement, outside any transaction."""
        with self._reader.connect() as conn:
            conn.info[_READ] = True
            try:
                yield conn
            finally:
                conn.info.pop(_READ, None)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ jobs

    def create_job(self, job: NewJob, units: Sequence[NewUnit], items: Sequence[NewItem]) -> None:
        s = job.settings
        with self._tx() as conn:
            if conn.execute(select(t.jobs.c.job_id).where(t.jobs.c.job_id == job.job_id)).first():
                raise AlreadyExists(f"job {job.job_id} already exists")
            conn.execute(
                t.jobs.insert().values(
                    job_id=job.job_id,
                    name=job.name,
                    state="running",
                    priority=0,
                    kind=s.kind,
                    model=s.model,
                    model_sha256=s.model_sha256,
                    dims=s.dims,
                    redundancy=s.redundancy,
                    unit_size=s.unit_size,
                    tau=s.tau,
                    max_replicas=s.max_replicas,
                    lease_seconds=s.lease_seconds,
                    result_dtype=s.result_dtype,
                    gold_fraction=s.gold_fraction,
                    source_name=job.source_name,
                    items=job.items,
                    unique_items=job.unique_items,
                    created_ms=job.created_ms,
                    completed_ms=0,
                    reason="",
                )
            )
            conn.execute(
                t.units.insert(),
                [
                    {
                        "unit_id": u.unit_id,
                        "job_id": job.job_id,
                        "seq": u.seq,
                        "rows": u.rows,
                        "state": "open",
                        "target": s.redundancy,
                        "quorum": s.redundancy,
                        "blob": u.blob,
                        "signature": u.signature,
                        "agreement": 0.0,
                        "replicas": 0,
                        "reason": "",
                        "updated_ms": job.created_ms,
                    }
                    for u in units
                ],
            )
            for start in range(0, len(items), _INSERT_BATCH):
                conn.execute(
                    t.items.insert(),
                    [
                        {
                            "job_id": job.job_id,
                            "seq": i.seq,
                            "item_id": i.item_id,
                            "unit_seq": i.unit_seq,
                            "row": i.row,
                            "content_sha256": i.content_sha256,
                        }
                        for i in items[start : start + _INSERT_BATCH]
                    ],
                )
            self._event(
                conn,
                job.created_ms,
                "job.created",
                f"{job.items} items, {len(units)} units",
                job_id=job.job_id,
            )

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._read() as conn:
            row = conn.execute(_Q.job, {"job_id": job_id}).first()
        return _job(row) if row else None

    def list_jobs(self) -> list[JobRecord]:
        with self._read() as conn:
            rows = conn.execute(select(t.jobs).order_by(t.jobs.c.created_ms)).all()
        return [_job(r) for r in rows]

    def job_counts(self, job_id: str, now_ms: int) -> JobCounts:
        u, r, le = t.units, t.results, t.leases
        with self.engine.connect() as conn:
            by_state: dict[str, int] = dict(
                conn.execute(
                    select(u.c.state, func.count()).where(u.c.job_id == job_id).group_by(u.c.state)
                ).all()
            )
            unit_ids = select(u.c.unit_id).where(u.c.job_id == job_id)
            open_units = select(u.c.unit_id).where(u.c.job_id == job_id, u.c.state == "open")
            in_progress = conn.execute(
                select(func.count(func.distinct(le.c.unit_id))).where(
                    le.c.unit_id.in_(open_units), le.c.state == "active", le.c.deadline_ms > now_ms
                )
            ).scalar_one()
            received = conn.execute(
                select(func.count()).select_from(r).where(r.c.unit_id.in_(unit_ids))
            ).scalar_one()
            rejected = conn.execute(
                select(func.count())
                .select_from(r)
                .where(r.c.unit_id.in_(unit_ids), r.c.state == "invalid")
            ).scalar_one()
            volunteers = conn.execute(
                select(func.count(func.distinct(r.c.volunteer_id))).where(
                    r.c.unit_id.in_(unit_ids), r.c.state == "valid"
                )
            ).scalar_one()
            min_agreement = conn.execute(
                select(func.min(u.c.agreement)).where(u.c.job_id == job_id, u.c.state == "accepted")
            ).scalar()
            failed = conn.execute(
                select(u.c.unit_id, u.c.reason)
                .where(u.c.job_id == job_id, u.c.state == "failed")
                .order_by(u.c.seq)
            ).all()
        return JobCounts(
            units_total=sum(by_state.values()),
            units_accepted=by_state.get("accepted", 0),
            units_failed=by_state.get("failed", 0),
            units_in_progress=in_progress,
            results_received=received,
            results_rejected=rejected,
            min_agreement=float(min_agreement) if min_agreement is not None else 0.0,
            volunteers=volunteers,
            failed_units=[(f.unit_id, f.reason) for f in failed],
        )

    # ------------------------------------------------------------------ volunteers

    def put_volunteer(self, volunteer: VolunteerRecord) -> None:
        v = t.volunteers
        values = {
            "display_name": volunteer.display_name,
            "client_version": volunteer.client_version,
            "hardware": volunteer.hardware,
        }
        dialect_insert = postgresql.insert if self.postgres else sqlite.insert
        with self._tx() as conn:
            # Insert-or-nothing, so the same volunteer registering with two coordinators at
            # once is one row and one event, not a unique-key error.
            inserted = conn.execute(
                dialect_insert(v)
                .values(
                    volunteer_id=volunteer.volunteer_id,
                    public_key=volunteer.public_key,
                    created_ms=volunteer.created_ms,
                    last_seen_ms=volunteer.created_ms,
                    banned=0,
                    ban_reason="",
                    **values,
                )
                .on_conflict_do_nothing(index_elements=[v.c.volunteer_id])
                .returning(v.c.volunteer_id)
            ).first()
            if inserted is None:
                conn.execute(
                    v.update().where(v.c.volunteer_id == volunteer.volunteer_id).values(**values)
                )
            else:
                self._event(
                    conn,
                    volunteer.created_ms,
                    "volunteer.registered",
                    volunteer.display_name or volunteer.volunteer_id[:12],
                    volunteer_id=volunteer.volunteer_id,
                )

    def get_volunteer(self, volunteer_id: str) -> VolunteerRecord | None:
        with self._read() as conn:
            row = conn.execute(_Q.volunteer, {"volunteer_id": volunteer_id}).first()
        if row is None:
            return None
        return VolunteerRecord(
            volunteer_id=row.volunteer_id,
            public_key=row.public_key,
            display_name=row.display_name,
            client_version=row.client_version,
            hardware=row.hardware,
            created_ms=row.created_ms,
            banned=bool(row.banned),
            ban_reason=row.ban_reason,
            last_seen_ms=row.last_seen_ms,
            quarantined=bool(row.quarantined),
            quarantine_reason=row.quarantine_reason,
            quota_day=row.quota_day,
            leased_today=row.leased_today,
        )

    # ------------------------------------------------------------------ leases

    def _expire_leases(self, conn: Connection, now_ms: int) -> None:
        """Move leases past their deadline to 'expired', freeing their slots (`busy`)."""
        due = conn.execute(_Q.due, {"now": now_ms}).scalars().all()
        if not due:
            return
        units = sorted(set(due))
        if self.postgres:
            # Unit first (the lock order); a unit someone else holds is swept next time.
            units = list(conn.execute(_Q.lock_units_skip, {"units": units}).scalars())
        if units:
            conn.execute(_Q.expire, {"units": units, "now": now_ms})

    def lease_unit(
        self,
        volunteer_id: str,
        lease_id: str,
        now_ms: int,
        compose: Compose | None = None,
        address: str = "",
        day: int = 0,
    ) -> LeaseGrant | None:
        """Lease the first unit with a free replica slot: highest priority job first, then
        the oldest job, then unit order. Never two live leases of one unit to one volunteer,
        never a unit the volunteer has already sent a result for, and (unless `address` is
        '') never a unit another volunteer at the same address holds or answered.

        `compose` turns the chosen unit into what this lease hands out (rows in a per-lease
        order, gold rows mixed in, signed); without it the unit goes out as planned. A plan
        marked `solo` (adaptive replication) makes this volunteer's result alone decide a
        unit nobody else holds yet. `day` counts the lease towards the volunteer's quota."""
        with self._tx() as conn:
            jobs = conn.execute(_Q.running_jobs).all()
            if jobs and jobs[0].next_due is not None and jobs[0].next_due <= now_ms:
                self._expire_leases(conn, now_ms)
            query = _FREE_UNIT[conn.dialect.name]
            for job in jobs:
                tried: list[str] = []
                for _ in range(_LEASE_TRIES):
                    params: dict[str, Any] = {
                        "job": job.job_id,
                        "volunteer": volunteer_id,
                        "active": "active",
                        "now": now_ms,
                        "address": address,
                    }
                    if self.postgres:
                        params["tried"] = tried
                    row = conn.execute(query, params).first()
                    if row is None:
                        break
                    deadline = now_ms + job.lease_seconds * 1000
                    plan = (
                        compose(
                            LeaseCandidate(
                                unit_id=row.unit_id,
                                job_id=job.job_id,
                                kind=job.kind,
                                blob=row.blob,
                                rows=row.rows,
                                busy=row.busy,
                                quorum=row.quorum or job.redundancy,
                                redundancy=job.redundancy,
                                gold_fraction=job.gold_fraction,
                                deadline_ms=deadline,
                            )
                        )
                        if compose is not None
                        else None
                    )
                    values = {
                        "address": address,
                        "unit_sha256": plan.unit_sha256 if plan else None,
                        "composition": plan.composition if plan else None,
                        "gold_ids": ",".join(map(str, plan.gold_ids)) if plan else "",
                    }
                    if self.postgres:
                        # The candidate query judged the volunteer's own leases by a snapshot
                        # from before it locked the unit, so a lease another coordinator
                        # committed in between could be missed. Now that this transaction
                        # holds the unit, every earlier writer of it has committed, and the
                        # insert's fresh snapshot sees them all.
                        inserted = conn.execute(
                            _Q.add_lease_if_free,
                            {
                                "lease_id": lease_id,
                                "unit_id": row.unit_id,
                                "volunteer": volunteer_id,
                                "now": now_ms,
                                "deadline": deadline,
                                **values,
                            },
                        )
                        if inserted.first() is None:
                            tried.append(row.unit_id)
                            continue
                    else:
                        conn.execute(
                            _Q.add_lease,
                            {
                                "lease_id": lease_id,
                                "unit_id": row.unit_id,
                                "volunteer_id": volunteer_id,
                                "state": "active",
                                "created_ms": now_ms,
                                "deadline_ms": deadline,
                                "reason": "",
                                **values,
                            },
                        )
                    self._after_lease(conn, row, job, plan, volunteer_id, day)
                    if plan is None:
                        return LeaseGrant(lease_id, row.unit_id, deadline, row.blob, row.signature)
                    return LeaseGrant(lease_id, row.unit_id, deadline, plan.blob, plan.signature)
        return None

    def work_remaining(self, volunteer_id: str, now_ms: int) -> bool:
        """Whether a running job has an open unit this volunteer could take once a slot frees."""
        with self._read() as conn:
            params = {"volunteer": volunteer_id, "now": now_ms}
            return conn.execute(_Q.any_work, params).first() is not None

    def get_lease(self, lease_id: str) -> LeaseRecord | None:
        with self._read() as conn:
            row = conn.execute(_Q.lease, {"lease_id": lease_id}).first()
        if row is None:
            return None
        return LeaseRecord(
            row.lease_id,
            row.unit_id,
            row.volunteer_id,
            row.state,
            row.deadline_ms,
            row.unit_sha256,
            row.composition or b"",
            tuple(int(g) for g in row.gold_ids.split(",")) if row.gold_ids else (),
        )

    def get_unit(self, unit_id: str) -> UnitRecord | None:
        with self._read() as conn:
            row = conn.execute(_Q.unit, {"unit_id": unit_id}).first()
        return _unit(row) if row else None

    def release_lease(self, lease_id: str, reason: str, now_ms: int) -> None:
        with self._tx() as conn:
            row = conn.execute(_Q.lease, {"lease_id": lease_id}).first()
            if row is None or row.state != "active":
                return
            if self.postgres:
                conn.execute(_Q.lock_unit, {"unit_id": row.unit_id})
            released = conn.execute(_Q.release, {"b_lease": lease_id, "b_reason": reason})
            if not released.rowcount:  # a result or a cancellation got there first
                return
            self._event(
                conn,
                now_ms,
                "lease.released",
                reason,
                unit_id=row.unit_id,
                volunteer_id=row.volunteer_id,
            )

    # ------------------------------------------------------------------ results

    def submit_result(self, result: NewResult, judge: Judge) -> Verdict:
        with self._tx() as conn:
            # The unit first: results for it are judged one at a time, across coordinators.
            unit_row = conn.execute(
                _Q.unit_locked if self.postgres else _Q.unit, {"unit_id": result.unit_id}
            ).first()
            lease = conn.execute(_Q.lease_answered, {"lease_id": result.lease_id}).first()
            if lease is None:
                raise NotFound(f"lease {result.lease_id!r} does not exist")
            if lease.volunteer_id != result.volunteer_id or lease.unit_id != result.unit_id:
                raise PermissionDenied(
                    f"unit {result.unit_id!r} is not leased to volunteer {result.volunteer_id[:12]}"
                )
            # A lease past its deadline may still deliver while its unit is open: the work is
            # done, and another replica's slot was already freed for someone else.
            if lease.state not in ("active", "expired"):
                why = {
                    "submitted": "a result was already submitted on it",
                    "released": "it was released (handed back)",
                }.get(lease.state, f"it was {lease.state}: {lease.reason}")
                raise FailedPrecondition(f"lease {result.lease_id} is closed; {why}")
            assert unit_row is not None  # foreign key
            if unit_row.state != "open":
                raise FailedPrecondition(f"unit {result.unit_id} is already {unit_row.state}")
            if lease.answered:
                raise AlreadyExists(f"volunteer already submitted a result for {result.unit_id}")
            conn.execute(
                _Q.add_result,
                {
                    "result_id": result.result_id,
                    "unit_id": result.unit_id,
                    "lease_id": result.lease_id,
                    "volunteer_id": result.volunteer_id,
                    "envelope": result.envelope,
                    "signature": result.signature,
                    "payload": result.payload,
                    "state": "pending",
                    "received_ms": result.received_ms,
                    "reason": "",
                    "claimed_tokens": result.claimed_tokens,
                    "credit": 0,
                },
            )
            conn.execute(_Q.lease_submitted, {"b_lease": result.lease_id})
            unit = _unit(unit_row)
            if result.gold_checked:
                self._bump(
                    conn,
                    result.volunteer_id,
                    unit.settings.kind,
                    result.received_ms,
                    gold_checked=1,
                )
            stored = conn.execute(_Q.counted, {"unit_id": result.unit_id}).all()
            verdict = judge(unit, [ResultRecord(*row) for row in stored])
            self._apply(conn, unit, verdict, result)
        return verdict

    def _apply(self, conn: Connection, unit: UnitRecord, v: Verdict, result: NewResult) -> None:
        now = result.received_ms
        # Reputation first: _settle credits only results still 'pending' (decided just now).
        self._settle(conn, unit, v, now)
        if v.valid:
            conn.execute(_Q.mark_valid, {"b_ids": list(v.valid), "state": "valid"})
        if v.invalid:
            conn.execute(
                _Q.mark_valid, {"b_ids": list(v.invalid), "state": "invalid", "reason": v.reason}
            )
        changes: dict[str, Any] = {"b_unit": unit.unit_id, "updated_ms": now}
        if v.new_target:
            changes["target"] = v.new_target
        if v.new_quorum:
            changes["quorum"] = v.new_quorum
        if v.status == "accepted":
            changes.update(
                state="accepted",
                canonical_result_id=v.canonical,
                agreement=v.agreement,
                replicas=len(v.valid),
            )
        elif v.status == "failed":
            changes.update(state="failed", reason=v.reason)
        conn.execute(_Q.update_unit, changes)
        if v.status in ("accepted", "failed"):
            # Replicas still out are no longer needed: their holders get a clear refusal.
            conn.execute(
                _Q.cancel_leases,
                {"b_unit": unit.unit_id, "b_reason": f"unit {unit.unit_id} was already {v.status}"},
            )
        kind = {
            "accepted": "unit.accepted",
            "failed": "unit.failed",
            "rejected": "result.rejected",
        }.get(v.status, "result.received")
        self._event(
            conn,
            now,
            kind,
            v.reason or v.status,
            job_id=unit.job_id,
            unit_id=unit.unit_id,
            volunteer_id=result.volunteer_id,
        )
        if v.status not in ("accepted", "failed"):
            return
        # Two coordinators deciding a job's last two units at once would each still see the
        # other's unit open; the job row lock makes the second count after the first commits.
        if self.postgres:
            conn.execute(_Q.lock_job, {"job_id": unit.job_id})
        if conn.execute(_Q.any_open, {"job_id": unit.job_id}).first() is not None:
            return
        failed = conn.execute(_Q.units_failed, {"job_id": unit.job_id}).scalar_one()
        if failed:
            conn.execute(
                _Q.update_job,
                {
                    "b_job": unit.job_id,
                    "state": "failed",
                    "completed_ms": now,
                    "reason": f"{failed} unit(s) failed validation; see failed units",
                },
            )
            self._event(conn, now, "job.failed", f"{failed} unit(s) failed", job_id=unit.job_id)
        else:
            conn.execute(_Q.update_job, {"b_job": unit.job_id, "state": "assimilating"})
            self._event(conn, now, "job.validated", "every unit accepted", job_id=unit.job_id)

    # ------------------------------------------------------------------ the coordinator

    def bound_coordinator(self) -> str | None:
        """The fingerprint of the coordinator key this database serves, once bound."""
        m = t.meta
        with self._read() as conn:
            value = conn.execute(select(m.c.value).where(m.c.key == _COORDINATOR)).scalar()
        return None if value is None else str(value)

    def bind_coordinator(self, fingerprint: str) -> None:
        """Tie the database to one coordinator key, or refuse a different one.

        Units are signed with the key of the coordinator that planned them and volunteers pin
        one fingerprint, so replicas on one database must share one data folder (key, admin
        token, datasets); a second `coordinator init` pointed at the same database would not.
        """
        m = t.meta
        dialect_insert = postgresql.insert if self.postgres else sqlite.insert
        with self._tx() as conn:
            conn.execute(
                dialect_insert(m)
                .values(key=_COORDINATOR, value=fingerprint)
                .on_conflict_do_nothing(index_elements=[m.c.key])
            )
            have = conn.execute(select(m.c.value).where(m.c.key == _COORDINATOR)).scalar_one()
        if have != fingerprint:
            raise FailedPrecondition(
                f"this database serves the coordinator with key {have[:16]}..., not this data "
                f"folder's {fingerprint[:16]}...: coordinators sharing a database must share "
                "one data folder (its key, admin token and datasets)"
            )

    # ------------------------------------------------------------------ assimilation

    def jobs_in_state(self, state: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(t.jobs.c.job_id)
                    .where(t.jobs.c.state == state)
                    .order_by(t.jobs.c.created_ms)
                ).scalars()
            )

    @contextmanager
    def claim_job(self, job_id: str, state: str) -> Iterator[JobRecord | None]:
        """Hold a job exclusively while the block runs, if it is (still) in `state`.

        Yields the job, or None when another holder has it or it has left `state` (another
        coordinator finished it). Assimilators claim a job before writing its dataset, so
        coordinators sharing a database and data folder never write one job twice at once.
        On PostgreSQL the claim is a transaction-scoped advisory lock, which the database
        drops when the claiming process dies; on SQLite it holds within this process.
        """
        if not self.postgres:
            with self._claims_lock:
                if job_id in self._claims:
                    yield None
                    return
                self._claims.add(job_id)
            try:
                job = self.get_job(job_id)
                yield job if job is not None and job.state == state else None
            finally:
                with self._claims_lock:
                    self._claims.discard(job_id)
            return
        key = zlib.crc32(job_id.encode()) - (1 << 31)  # a signed 32-bit lock id
        with self.engine.connect() as conn, conn.begin():
            claimed = conn.execute(
                text("SELECT pg_try_advisory_xact_lock(:c, :k)"), {"c": _CLAIM_CLASS, "k": key}
            ).scalar()
            if not claimed:
                yield None
                return
            # Read after the lock: a holder that finished before we got it has committed.
            job = self.get_job(job_id)
            yield job if job is not None and job.state == state else None

    def dataset_units(self, job_id: str) -> Iterator[DatasetUnit]:
        u, r, j = t.units, t.results, t.jobs
        query = (
            select(
                u.c.unit_id, u.c.blob, r.c.payload, j.c.result_dtype, u.c.replicas, u.c.agreement
            )
            .select_from(
                u.join(r, r.c.result_id == u.c.canonical_result_id).join(
                    j, j.c.job_id == u.c.job_id
                )
            )
            .where(u.c.job_id == job_id, u.c.state == "accepted")
            .order_by(u.c.seq)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield DatasetUnit(*row)

    def dataset_items(self, job_id: str) -> Iterator[DatasetItem]:
        i, u = t.items, t.units
        query = (
            select(i.c.seq, i.c.item_id, u.c.unit_id, i.c.row, i.c.content_sha256)
            .select_from(i.join(u, and_(u.c.job_id == i.c.job_id, u.c.seq == i.c.unit_seq)))
            .where(i.c.job_id == job_id)
            .order_by(i.c.seq)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield DatasetItem(*row)

    def complete_job(self, job_id: str, manifest: bytes, signature: bytes, now_ms: int) -> None:
        """Publish a dataset, if the job is still assimilating: a quarantine that re-opened
        its units while the dataset was being written sent it back to running, and the rows
        just written may be the quarantined volunteer's."""
        j = t.jobs
        with self._tx() as conn:
            done = conn.execute(
                j.update()
                .where(j.c.job_id == job_id, j.c.state == "assimilating")
                .values(
                    state="complete",
                    completed_ms=now_ms,
                    manifest=manifest,
                    manifest_sig=signature,
                )
            )
            if done.rowcount:
                self._event(conn, now_ms, "job.complete", "dataset written", job_id=job_id)

    def get_manifest(self, job_id: str) -> tuple[bytes, bytes] | None:
        j = t.jobs
        with self.engine.connect() as conn:
            row = conn.execute(
                select(j.c.manifest, j.c.manifest_sig).where(j.c.job_id == job_id)
            ).first()
        if row is None or row.manifest is None:
            return None
        return row.manifest, row.manifest_sig

    # ------------------------------------------------------------------ events

    def _event(
        self,
        conn: Connection,
        now_ms: int,
        kind: str,
        message: str,
        job_id: str = "",
        unit_id: str = "",
        volunteer_id: str = "",
    ) -> None:
        conn.execute(
            _Q.add_event,
            {
                "ts_ms": now_ms,
                "kind": kind,
                "message": message,
                "job_id": job_id,
                "unit_id": unit_id,
                "volunteer_id": volunteer_id,
            },
        )

    def add_event(
        self,
        now_ms: int,
        kind: str,
        message: str,
        job_id: str = "",
        unit_id: str = "",
        volunteer_id: str = "",
    ) -> None:
        with self._tx() as conn:
            self._event(conn, now_ms, kind, message, job_id, unit_id, volunteer_id)

    def recent_events(self, limit: int) -> list[tuple[int, str, str, str, str, str]]:
        e = t.events
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(e.c.ts_ms, e.c.kind, e.c.job_id, e.c.unit_id, e.c.volunteer_id, e.c.message)
                .order_by(e.c.event_id.desc())
                .limit(limit)
            ).all()
        return [tuple(r) for r in reversed(rows)]
