"""Trust: gold rows, per-lease composition, reputation, quarantine, quotas and credit.

Units are now composed and signed for each lease (rows in a per-lease order, gold rows
mixed in), so a lease records what it was given; volunteers carry a reputation per task
kind, a quarantine flag and a daily lease count; results carry claimed and granted credit.
Existing units keep their job's redundancy as their quorum; existing jobs get no gold rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("jobs", sa.Column("gold_fraction", sa.Float, nullable=False, server_default="0")),
    ("units", sa.Column("quorum", sa.Integer, nullable=False, server_default="0")),
    ("volunteers", sa.Column("quarantined", sa.Integer, nullable=False, server_default="0")),
    ("volunteers", sa.Column("quarantine_reason", sa.Text, nullable=False, server_default="")),
    ("volunteers", sa.Column("quota_day", sa.Integer, nullable=False, server_default="0")),
    ("volunteers", sa.Column("leased_today", sa.Integer, nullable=False, server_default="0")),
    ("leases", sa.Column("address", sa.String(64), nullable=False, server_default="")),
    ("leases", sa.Column("unit_sha256", sa.LargeBinary, nullable=True)),
    ("leases", sa.Column("composition", sa.LargeBinary, nullable=True)),
    ("leases", sa.Column("gold_ids", sa.Text, nullable=False, server_default="")),
    ("results", sa.Column("claimed_tokens", sa.BigInteger, nullable=False, server_default="0")),
    ("results", sa.Column("credit", sa.BigInteger, nullable=False, server_default="0")),
)


def upgrade() -> None:
    for table, column in _COLUMNS:
        op.add_column(table, column)
    op.execute(
        "UPDATE units SET quorum = (SELECT redundancy FROM jobs WHERE jobs.job_id = units.job_id)"
    )
    op.create_index("ix_results_volunteer", "results", ["volunteer_id", "state"])
    op.create_table(
        "reputation",
        sa.Column(
            "volunteer_id",
            sa.String(64),
            sa.ForeignKey("volunteers.volunteer_id"),
            primary_key=True,
        ),
        sa.Column("kind", sa.String(64), primary_key=True),
        sa.Column("consecutive_valid", sa.Integer, nullable=False),
        sa.Column("valid", sa.Integer, nullable=False),
        sa.Column("disagreements", sa.Integer, nullable=False),
        sa.Column("faults", sa.Integer, nullable=False),
        sa.Column("gold_checked", sa.Integer, nullable=False),
        sa.Column("gold_missed", sa.Integer, nullable=False),
        sa.Column("credit", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "gold",
        sa.Column("gold_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.job_id"), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("answer", sa.LargeBinary, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("unit_id", sa.String(96), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_gold_job", "gold", ["job_id", "gold_id"])
    op.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")


def downgrade() -> None:
    op.drop_index("ix_gold_job", table_name="gold")
    op.drop_table("gold")
    op.drop_table("reputation")
    op.drop_index("ix_results_volunteer", table_name="results")
    # Plain ALTER TABLE (SQLite >= 3.35 has DROP COLUMN): batch mode would rebuild the
    # tables on SQLite and lose the busy triggers of migration 0002.
    for table, column in reversed(_COLUMNS):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column.name}")
    op.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
