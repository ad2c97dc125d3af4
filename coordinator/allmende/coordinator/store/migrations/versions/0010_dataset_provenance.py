"""What a dataset's provenance needs: the tau a unit was decided under, every tau change of
a job with its time, and the job's licence.

`units.decided_tau` is NULL for units decided before this migration (their datasets say so rather
than guess); `tau_changes` starts empty; `jobs.license` is '' (unknown) for existing jobs.
Older coordinators can still run on the upgraded schema (they leave these empty), so the
schema number stays.

Revision ID: 0010
Revises: 0009 (re-chained after 0009_models on merge)
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("units", sa.Column("decided_tau", sa.Float, nullable=True))
    op.add_column("jobs", sa.Column("license", sa.Text, nullable=False, server_default=""))
    op.create_table(
        "tau_changes",
        sa.Column("change_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.job_id"), nullable=False),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("old_tau", sa.Float, nullable=False),
        sa.Column("new_tau", sa.Float, nullable=False),
    )
    op.create_index("ix_tau_changes_job", "tau_changes", ["job_id", "ts_ms"])


def downgrade() -> None:
    op.drop_index("ix_tau_changes_job", table_name="tau_changes")
    op.drop_table("tau_changes")
    # Plain ALTER TABLE (SQLite >= 3.35 has DROP COLUMN): batch mode would rebuild the
    # tables on SQLite and lose the busy triggers of migration 0002.
    op.execute("ALTER TABLE jobs DROP COLUMN license")
    op.execute("ALTER TABLE units DROP COLUMN decided_tau")
