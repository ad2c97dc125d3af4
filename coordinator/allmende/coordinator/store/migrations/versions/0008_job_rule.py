"""Jobs keep their task kind's keep rule.

`jobs.rule` holds the rule a filtering job was created with (canonical JSON of its parsed
parameters; '' for kinds without one, and for every existing job). Coordinators from before
task kinds could not read a filtering job's results, so the schema number goes to 6.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("rule", sa.Text, nullable=False, server_default=""))
    op.execute("UPDATE meta SET value = '6' WHERE key = 'schema'")


def downgrade() -> None:
    # Plain ALTER TABLE (SQLite >= 3.35 has DROP COLUMN): batch mode would rebuild the
    # table on SQLite and lose the busy triggers of migration 0002.
    op.execute("ALTER TABLE jobs DROP COLUMN rule")
    op.execute("UPDATE meta SET value = '5' WHERE key = 'schema'")
