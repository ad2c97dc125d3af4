"""Baseline: the tables of the first release (jobs, units, items, volunteers, leases,
results, events, meta), as the coordinator created them before it used migrations.

A frozen copy, not an import of schema.py: later revisions change schema.py, never this.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("dims", sa.Integer, nullable=False),
        sa.Column("redundancy", sa.Integer, nullable=False),
        sa.Column("unit_size", sa.Integer, nullable=False),
        sa.Column("tau", sa.Float, nullable=False),
        sa.Column("max_replicas", sa.Integer, nullable=False),
        sa.Column("lease_seconds", sa.Integer, nullable=False),
        sa.Column("result_dtype", sa.String(16), nullable=False),
        sa.Column("source_name", sa.Text, nullable=False),
        sa.Column("items", sa.BigInteger, nullable=False),
        sa.Column("unique_items", sa.BigInteger, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("completed_ms", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("manifest", sa.LargeBinary, nullable=True),
        sa.Column("manifest_sig", sa.LargeBinary, nullable=True),
    )
    op.create_table(
        "units",
        sa.Column("unit_id", sa.String(96), primary_key=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.job_id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("target", sa.Integer, nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.Column("canonical_result_id", sa.String(64), nullable=True),
        sa.Column("agreement", sa.Float, nullable=False),
        sa.Column("replicas", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("job_id", "seq"),
    )
    op.create_index("ix_units_open", "units", ["state", "job_id", "seq"])
    op.create_table(
        "items",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.job_id"), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("item_id", sa.Text, nullable=False),
        sa.Column("unit_seq", sa.Integer, nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("content_sha256", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "volunteers",
        sa.Column("volunteer_id", sa.String(64), primary_key=True),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("client_version", sa.Text, nullable=False),
        sa.Column("hardware", sa.Text, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger, nullable=False),
        sa.Column("banned", sa.Integer, nullable=False),
        sa.Column("ban_reason", sa.Text, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("lease_id", sa.String(64), primary_key=True),
        sa.Column("unit_id", sa.String(96), sa.ForeignKey("units.unit_id"), nullable=False),
        sa.Column(
            "volunteer_id",
            sa.String(64),
            sa.ForeignKey("volunteers.volunteer_id"),
            nullable=False,
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("deadline_ms", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_leases_unit", "leases", ["unit_id", "state"])
    op.create_index("ix_leases_volunteer", "leases", ["volunteer_id", "state"])
    op.create_table(
        "results",
        sa.Column("result_id", sa.String(64), primary_key=True),
        sa.Column("unit_id", sa.String(96), sa.ForeignKey("units.unit_id"), nullable=False),
        sa.Column("lease_id", sa.String(64), sa.ForeignKey("leases.lease_id"), nullable=False),
        sa.Column(
            "volunteer_id",
            sa.String(64),
            sa.ForeignKey("volunteers.volunteer_id"),
            nullable=False,
        ),
        sa.Column("envelope", sa.LargeBinary, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.UniqueConstraint("unit_id", "volunteer_id"),
    )
    op.create_index("ix_results_unit", "results", ["unit_id", "state"])
    op.create_table(
        "events",
        sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("unit_id", sa.String(96), nullable=False),
        sa.Column("volunteer_id", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.bulk_insert(meta, [{"key": "schema", "value": "1"}])


def downgrade() -> None:
    for table in ("events", "results", "leases", "volunteers", "items", "units", "jobs", "meta"):
        op.drop_table(table)
