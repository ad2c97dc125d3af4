"""The coordinator's tables, in SQLAlchemy Core so that SQLite and PostgreSQL share them.

This module describes the schema at the newest migration (`REVISION`); the migrations in
`migrations/versions/` create it, and a test checks that both agree on every backend.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    literal_column,
)

# The Alembic revision this code expects (the head of migrations/versions/).
REVISION = "0012"
# Written to meta.schema by the migrations. Coordinators from before Alembic refuse any
# other value, so a revision that older code must not run against raises it.
SCHEMA_VERSION = 8

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    # running, paused, cancelled, assimilating, complete, failed
    Column("state", String(16), nullable=False),
    # Among running jobs, higher priority units are leased first.
    Column("priority", Integer, nullable=False, default=0),
    Column("kind", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("model_sha256", String(64), nullable=False),
    Column("dims", Integer, nullable=False),
    Column("redundancy", Integer, nullable=False),
    Column("unit_size", Integer, nullable=False),
    Column("tau", Float, nullable=False),
    Column("max_replicas", Integer, nullable=False),
    Column("lease_seconds", Integer, nullable=False),
    Column("result_dtype", String(16), nullable=False),
    Column("source_name", Text, nullable=False),
    Column("items", BigInteger, nullable=False),
    Column("unique_items", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("completed_ms", BigInteger, nullable=False, default=0),
    Column("reason", Text, nullable=False, default=""),
    Column("manifest", LargeBinary, nullable=True),
    Column("manifest_sig", LargeBinary, nullable=True),
    # Share of each composed unit's rows that are hidden gold rows (migration 0003).
    Column("gold_fraction", Float, nullable=False, default=0.0, server_default="0"),
    # The kind's keep rule, canonical JSON ('' for none) (migration 0008).
    Column("rule", Text, nullable=False, default="", server_default=""),
    # The dataset's licence identifier, '' for unknown (migration 0009).
    Column("license", Text, nullable=False, default="", server_default=""),
    # Items whose image volunteers fetch from a URL: > 0 leases the job's units only to
    # volunteers that opted in (LeaseWorkRequest.fetch_urls). Migration 0012.
    Column("fetch_rows", BigInteger, nullable=False, default=0, server_default="0"),
    # Items with a URL, fetched or an image's source URL: > 0 gives the dataset a `url`
    # column (migration 0012).
    Column("url_items", BigInteger, nullable=False, default=0, server_default="0"),
)

units = Table(
    "units",
    metadata,
    Column("unit_id", String(96), primary_key=True),
    Column("job_id", String(64), ForeignKey("jobs.job_id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # open, accepted, failed
    Column("target", Integer, nullable=False),  # replicas wanted now
    Column("blob", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("canonical_result_id", String(64), nullable=True),
    Column("agreement", Float, nullable=False, default=0.0),
    Column("replicas", Integer, nullable=False, default=0),
    Column("reason", Text, nullable=False, default=""),
    Column("updated_ms", BigInteger, nullable=False, default=0),
    # Replica slots taken: leases in state 'active' plus results not 'invalid'. Database
    # triggers keep it (migration 0002), whichever code changes leases or results, so that
    # leasing finds a free unit through ix_units_free instead of counting per unit.
    Column("busy", Integer, nullable=False, default=0, server_default="0"),
    # Results that must agree to accept the unit: the job's redundancy, 1 when adaptive
    # replication trusts the one volunteer holding it, more once a result looked suspicious.
    Column("quorum", Integer, nullable=False, default=0, server_default="0"),
    # The rows published for an accepted unit: the normalised mean of its agreeing results,
    # in the job's dtype, encoded as results are; NULL when one result decided alone (its
    # payload is published). Migration 0005.
    Column("canonical_payload", LargeBinary, nullable=True),
    # The job's tau when the unit was decided (migration 0009; NULL for units decided
    # before): `job set --tau` mid-job changes it for the units decided after.
    Column("decided_tau", Float, nullable=True),
    UniqueConstraint("job_id", "seq"),
)
Index("ix_units_open", units.c.state, units.c.job_id, units.c.seq)
# Open units with a free replica slot, in lease order. The literal 'open' matters: a partial
# index serves only queries that repeat its condition, literals included.
_FREE = and_(units.c.state == literal_column("'open'"), units.c.busy < units.c.target)
Index("ix_units_free", units.c.job_id, units.c.seq, sqlite_where=_FREE, postgresql_where=_FREE)

# Every `job set --tau` change, with its time: a dataset's manifest lists them (0009).
tau_changes = Table(
    "tau_changes",
    metadata,
    Column("change_id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("jobs.job_id"), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("old_tau", Float, nullable=False),
    Column("new_tau", Float, nullable=False),
)
Index("ix_tau_changes_job", tau_changes.c.job_id, tau_changes.c.ts_ms)

items = Table(
    "items",
    metadata,
    Column("job_id", String(64), ForeignKey("jobs.job_id"), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("item_id", Text, nullable=False),
    Column("unit_seq", Integer, nullable=False),
    Column("row", Integer, nullable=False),
    Column("content_sha256", LargeBinary, nullable=False),
    # The row's fetch URL, or its image's source URL; '' for none (migration 0012).
    Column("url", Text, nullable=False, default="", server_default=""),
)

volunteers = Table(
    "volunteers",
    metadata,
    Column("volunteer_id", String(64), primary_key=True),
    Column("public_key", LargeBinary, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("client_version", Text, nullable=False),
    Column("hardware", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False, default=0),
    Column("banned", Integer, nullable=False, default=0),
    Column("ban_reason", Text, nullable=False, default=""),
    # Caught lying: gets no work; its unconfirmed rows are re-verified (migration 0003).
    Column("quarantined", Integer, nullable=False, default=0, server_default="0"),
    Column("quarantine_reason", Text, nullable=False, default="", server_default=""),
    # Units leased on UTC day `quota_day` (days since the epoch), for the daily quota.
    Column("quota_day", Integer, nullable=False, default=0, server_default="0"),
    Column("leased_today", Integer, nullable=False, default=0, server_default="0"),
)

leases = Table(
    "leases",
    metadata,
    Column("lease_id", String(64), primary_key=True),
    Column("unit_id", String(96), ForeignKey("units.unit_id"), nullable=False),
    Column("volunteer_id", String(64), ForeignKey("volunteers.volunteer_id"), nullable=False),
    # active; then submitted, released, cancelled, or expired (deadline passed, swept at the
    # next lease; an expired lease may still deliver its result while the unit is open)
    Column("state", String(16), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("deadline_ms", BigInteger, nullable=False),
    Column("reason", Text, nullable=False, default=""),
    # The volunteer's address block ('' for loopback; domain/trust.py), so replicas of a
    # unit go to distinct blocks and one block holds a bounded share of a job's slots; the
    # unit as composed for this lease: sha256 of its signed bytes, the unit row each of its
    # rows came from (uint16, little-endian; unit.rows and up index into gold_ids,
    # comma-separated gold row ids). Migration 0003.
    Column("address", String(64), nullable=False, default="", server_default=""),
    Column("unit_sha256", LargeBinary, nullable=True),
    Column("composition", LargeBinary, nullable=True),
    Column("gold_ids", Text, nullable=False, default="", server_default=""),
    # The unit exactly as signed for this lease, so that a volunteer that lost its state
    # gets it back (ListLeases); NULL for leases from before migration 0007.
    Column("unit_blob", LargeBinary, nullable=True),
    Column("unit_signature", LargeBinary, nullable=True),
)
# What a lease leaving 'active' drops: its unit, needed only while the lease is live
# (ListLeases), so that the table keeps no copy of every unit ever handed out.
LEASE_CLOSED: dict[str, None] = {"unit_blob": None, "unit_signature": None}
Index("ix_leases_unit", leases.c.unit_id, leases.c.state)
Index("ix_leases_volunteer", leases.c.volunteer_id, leases.c.state)
# Live leases by deadline, for the sweep that expires them (partial, so lookups of one
# unit's or one volunteer's leases keep to the indexes above).
_LIVE = leases.c.state == literal_column("'active'")
Index("ix_leases_due", leases.c.deadline_ms, sqlite_where=_LIVE, postgresql_where=_LIVE)
# Live leases by address block, for the cap on a job's slots one block holds (migration 0006).
Index(
    "ix_leases_block",
    leases.c.address,
    leases.c.deadline_ms,
    sqlite_where=_LIVE,
    postgresql_where=_LIVE,
)

results = Table(
    "results",
    metadata,
    Column("result_id", String(64), primary_key=True),
    Column("unit_id", String(96), ForeignKey("units.unit_id"), nullable=False),
    Column("lease_id", String(64), ForeignKey("leases.lease_id"), nullable=False),
    Column("volunteer_id", String(64), ForeignKey("volunteers.volunteer_id"), nullable=False),
    Column("envelope", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("state", String(16), nullable=False),  # pending, valid, invalid
    Column("received_ms", BigInteger, nullable=False),
    Column("reason", Text, nullable=False, default=""),
    # Tokens the volunteer claimed, and the credit granted once the result was validated.
    Column("claimed_tokens", BigInteger, nullable=False, default=0, server_default="0"),
    Column("credit", BigInteger, nullable=False, default=0, server_default="0"),
    # 1: the result may vouch for its quorum (passed gold rows, or a trusted volunteer's).
    # Migration 0005.
    Column("vouched", Integer, nullable=False, default=0, server_default="0"),
    # One result per volunteer per unit: replicas must come from distinct volunteers.
    UniqueConstraint("unit_id", "volunteer_id"),
)
Index("ix_results_unit", results.c.unit_id, results.c.state)
Index("ix_results_volunteer", results.c.volunteer_id, results.c.state)

# A volunteer's record per task kind (BOINC's host_app_version): what adaptive replication
# and quarantine decide on.
reputation = Table(
    "reputation",
    metadata,
    Column("volunteer_id", String(64), ForeignKey("volunteers.volunteer_id"), primary_key=True),
    Column("kind", String(64), primary_key=True),
    Column("consecutive_valid", Integer, nullable=False, default=0),
    Column("valid", Integer, nullable=False, default=0),
    Column("disagreements", Integer, nullable=False, default=0),
    Column("faults", Integer, nullable=False, default=0),
    Column("gold_checked", Integer, nullable=False, default=0),
    Column("gold_missed", Integer, nullable=False, default=0),
    Column("credit", BigInteger, nullable=False, default=0),
    Column("updated_ms", BigInteger, nullable=False, default=0),
)

# Rows whose answer is known: accepted by a quorum of distinct volunteers, or computed by
# the coordinator. A few are hidden in each composed unit.
gold = Table(
    "gold",
    metadata,
    Column("gold_id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("jobs.job_id"), nullable=False),
    Column("text", Text, nullable=False),
    Column("answer", LargeBinary, nullable=False),  # float32 row, little-endian
    Column("source", String(16), nullable=False),  # quorum, coordinator
    Column("unit_id", String(96), nullable=False, default=""),  # the unit it came from
    Column("created_ms", BigInteger, nullable=False),
    # Image kinds: the row's image file, beside its text (b'' for text kinds). Migration 0009.
    Column("image", LargeBinary, nullable=False, default=b"", server_default=""),
)
Index("ix_gold_job", gold.c.job_id, gold.c.gold_id)

# Nonces of signed volunteer requests already used (protocol/requests.py), kept until the
# request's timestamp would be refused anyway. In the store, not in one process, so that a
# request replayed after a restart, or to another replica, is refused.
nonces = Table(
    "nonces",
    metadata,
    Column("volunteer_id", String(64), primary_key=True),
    Column("nonce", String(32), primary_key=True),
    Column("expires_ms", BigInteger, nullable=False),
)
Index("ix_nonces_expires", nonces.c.expires_ms)

events = Table(
    "events",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("job_id", String(64), nullable=False, default=""),
    Column("unit_id", String(96), nullable=False, default=""),
    Column("volunteer_id", String(64), nullable=False, default=""),
    Column("message", Text, nullable=False),
)

# Models served by the coordinator (domain/models.py): the manifest exactly as signed, and
# its signature; the files are in the data folder under models/NAME/ (migration 0009).
models = Table(
    "models",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("pin", String(64), nullable=False, unique=True),
    Column("manifest", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)
