"""Proven quorums and published consensus rows.

A result records whether it may vouch for its quorum (it passed gold rows, or came from a
volunteer the operator trusts), and an accepted unit keeps the rows it publishes: the
normalised mean of its agreeing results. Existing results vouch for nothing; existing
accepted units publish their canonical result's rows, as before.

Revision ID: 0005
Revises: 0004 (re-chained after 0004 on merge)
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("results", sa.Column("vouched", sa.Integer, nullable=False, server_default="0")),
    ("units", sa.Column("canonical_payload", sa.LargeBinary, nullable=True)),
)


def upgrade() -> None:
    for table, column in _COLUMNS:
        op.add_column(table, column)
    op.execute("UPDATE meta SET value = '5' WHERE key = 'schema'")


def downgrade() -> None:
    # Plain ALTER TABLE (SQLite >= 3.35 has DROP COLUMN): batch mode would rebuild the
    # tables on SQLite and lose the busy triggers of migration 0002.
    for table, column in reversed(_COLUMNS):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column.name}")
    op.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
