"""Schema migrations (Alembic) on every backend: they build exactly what schema.py describes,
upgrade old databases without losing data, adopt databases from before migrations, and
refuse databases written by a newer coordinator."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Engine, Integer, MetaData, Table, inspect, text

from allmende.coordinator.store import migrate
from allmende.coordinator.store import schema as t
from allmende.coordinator.store.records import VolunteerRecord
from allmende.coordinator.store.sql import SqlStore, make_engine, open_store
from allmende.protocol.errors import FailedPrecondition
from tests.postgres import PostgresCluster

# What revisions after the baseline added to the baseline's tables.
ADDED_COLUMNS = {("units", "busy")} | {
    (table, column)
    for table, columns in {
        "jobs": ("gold_fraction", "rule", "license", "fetch_rows", "url_items"),
        "items": ("url",),
        "units": ("quorum", "canonical_payload", "decided_tau"),
        "volunteers": ("quarantined", "quarantine_reason", "quota_day", "leased_today"),
        "leases": (
            "address",
            "unit_sha256",
            "composition",
            "gold_ids",
            "unit_blob",
            "unit_signature",
        ),
        "results": ("claimed_tokens", "credit", "vouched"),
    }.items()
    for column in columns
}
# Tables added after the first release.
ADDED_TABLES = {"reputation", "gold", "nonces", "models", "tau_changes"}


@pytest.fixture(params=["sqlite-file", "postgresql"])
def blank_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all."""
    if request.param == "sqlite-file":
        yield "sqlite:///" + str(tmp_path / "blank.db")
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    url = cluster.new_database(migrated=False)
    try:
        yield url
    finally:
        cluster.drop_database(url)


@pytest.fixture
def engine(blank_url: str) -> Iterator[Engine]:
    engine = make_engine(blank_url)
    yield engine
    engine.dispose()


def to(engine: Engine, revision: str) -> str:
    with engine.begin() as conn:
        return migrate.upgrade(conn, revision)


def test_the_code_expects_the_newest_revision() -> None:
    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == t.REVISION


def test_migrations_build_exactly_what_schema_py_describes(store: SqlStore) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, t.metadata) == []
        assert migrate.current_revision(conn) == t.REVISION
        schema = conn.execute(text("SELECT value FROM meta WHERE key = 'schema'")).scalar()
        assert schema == str(t.SCHEMA_VERSION)


def test_the_comparison_itself_sees_a_difference(store: SqlStore) -> None:
    # Guards the test above: a column schema.py has and the database lacks is reported.
    extra = MetaData()
    for table in t.metadata.tables.values():
        table.to_metadata(extra)
    Table("units", extra, Column("spare", Integer), extend_existing=True)
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), extra)
    assert [d[0] for d in diffs] == ["add_column"]


def test_the_baseline_creates_the_first_release_tables(engine: Engine) -> None:
    assert to(engine, migrate.BASELINE) == migrate.BASELINE
    with engine.connect() as conn:
        inspector = inspect(conn)
        tables = set(inspector.get_table_names()) - {"alembic_version"}
        assert tables == set(t.metadata.tables) - ADDED_TABLES
        for name, table in t.metadata.tables.items():
            if name in ADDED_TABLES:
                continue
            have = {c["name"] for c in inspector.get_columns(name)}
            want = {c.name for c in table.columns if (name, c.name) not in ADDED_COLUMNS}
            assert have == want, name


def seed_first_release_rows(engine: Engine) -> None:
    """A job mid-flight as the first release stored it: one unit with two active leases
    (one past its deadline), one valid and one invalid result, one unit untouched."""
    job = (
        "INSERT INTO jobs (job_id, name, state, priority, kind, model, model_sha256, dims,"
        " redundancy, unit_size, tau, max_replicas, lease_seconds, result_dtype, source_name,"
        " items, unique_items, created_ms, completed_ms, reason) VALUES ('j', 'n', 'running',"
        " 0, 'embed-text', 'm', 'h', 4, 2, 1, 0.99, 5, 60, 'float16', 's', 2, 2, 0, 0, '')"
    )
    unit = (
        "INSERT INTO units (unit_id, job_id, seq, rows, state, target, blob, signature,"
        " agreement, replicas, reason, updated_ms) VALUES"
        " (:u, 'j', :seq, 1, 'open', 2, :b, :b, 0, 0, '', 0)"
    )
    volunteer = (
        "INSERT INTO volunteers (volunteer_id, public_key, display_name, client_version,"
        " hardware, created_ms, last_seen_ms, banned, ban_reason)"
        " VALUES (:v, :b, '', '', '', 0, 0, 0, '')"
    )
    lease = (
        "INSERT INTO leases (lease_id, unit_id, volunteer_id, state, created_ms, deadline_ms,"
        " reason) VALUES (:l, 'u1', :v, :s, 0, :d, '')"
    )
    result = (
        "INSERT INTO results (result_id, unit_id, lease_id, volunteer_id, envelope, signature,"
        " payload, state, received_ms, reason) VALUES (:r, 'u1', :l, :v, :b, :b, :b, :s, 0, '')"
    )
    with engine.begin() as conn:
        conn.execute(text(job))
        for seq, unit_id in enumerate(("u1", "u2")):
            conn.execute(text(unit), {"u": unit_id, "seq": seq, "b": b"x"})
        for vid in ("a", "b", "c", "d"):
            conn.execute(text(volunteer), {"v": vid, "b": vid.encode() * 32})
        for lease_id, vid, state, deadline in (
            ("la", "a", "active", 10**15),
            ("lb", "b", "active", 1),  # expired, not yet swept
            ("lc", "c", "submitted", 10**15),
            ("ld", "d", "submitted", 10**15),
        ):
            conn.execute(text(lease), {"l": lease_id, "v": vid, "s": state, "d": deadline})
        for result_id, lease_id, vid, state in (
            ("rc", "lc", "c", "valid"),
            ("rd", "ld", "d", "invalid"),
        ):
            conn.execute(
                text(result), {"r": result_id, "l": lease_id, "v": vid, "s": state, "b": b"x"}
            )


def busy(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT unit_id, busy FROM units")).all())  # type: ignore[arg-type]


def test_upgrading_keeps_the_data_and_counts_the_slots_taken(
    engine: Engine, blank_url: str
) -> None:
    to(engine, migrate.BASELINE)
    seed_first_release_rows(engine)
    store = open_store(blank_url)  # as `coordinator serve` of the new release does
    try:
        assert store.revision == t.REVISION
        assert busy(engine) == {"u1": 3, "u2": 0}  # 2 active leases + 1 counted result
        job = store.get_job("j")
        assert job is not None and job.state == "running"
        # the next lease sweeps the expired one: u1 keeps 2 of 2 slots (a lease, a valid
        # result), so the newcomer gets u2
        store.put_volunteer(VolunteerRecord("e", b"e" * 32, "", "", "", 0))
        grant = store.lease_unit("e", "le", 5)
        assert grant is not None and grant.unit_id == "u2"
        assert busy(engine) == {"u1": 2, "u2": 1}
    finally:
        store.close()


def test_a_database_from_before_migrations_is_adopted(engine: Engine, blank_url: str) -> None:
    to(engine, migrate.BASELINE)
    seed_first_release_rows(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))  # as create_all() left it
    store = open_store(blank_url)
    try:
        assert store.revision == t.REVISION
        assert busy(engine)["u1"] == 3
    finally:
        store.close()


def test_a_partial_database_without_history_is_refused(engine: Engine, blank_url: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT)"))
        conn.execute(text("INSERT INTO meta VALUES ('schema', '1')"))
        conn.execute(text("CREATE TABLE jobs (job_id VARCHAR(64) PRIMARY KEY)"))
        conn.execute(text("CREATE TABLE volunteers (volunteer_id VARCHAR(64) PRIMARY KEY)"))
    with pytest.raises(FailedPrecondition, match="no migration history"):
        open_store(blank_url)


def test_downgrade_then_upgrade_again(engine: Engine, blank_url: str) -> None:
    to(engine, "head")
    with engine.begin() as conn:
        assert migrate.downgrade(conn, migrate.BASELINE) == migrate.BASELINE
    with engine.connect() as conn:
        assert "busy" not in {c["name"] for c in inspect(conn).get_columns("units")}
    seed_first_release_rows(engine)
    assert to(engine, "head") == t.REVISION
    assert busy(engine)["u1"] == 3


def test_a_database_from_a_newer_coordinator_is_refused(engine: Engine, blank_url: str) -> None:
    to(engine, "head")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(FailedPrecondition, match="newer allmende"):
        open_store(blank_url)


def test_coordinators_starting_together_migrate_once(blank_url: str) -> None:
    revisions: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            store = open_store(blank_url)
            revisions.append(store.revision)
            store.close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert revisions == [t.REVISION] * 4
