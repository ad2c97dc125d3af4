"""Address blocks: `ix_leases_block`, live leases by address block.

Leases already record the volunteer's address; from now on it holds the address block (an
IPv4 /32 or IPv6 /64 by default), and a lease counts the block's unexpired leases in the
job before it takes a slot. The partial index makes that count a range scan of the block's
own live leases. No data changes: an older coordinator runs unchanged beside it, so the
schema number in `meta` stays.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_LIVE = sa.text("state = 'active'")


def upgrade() -> None:
    op.create_index(
        "ix_leases_block",
        "leases",
        ["address", "deadline_ms"],
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )


def downgrade() -> None:
    op.drop_index("ix_leases_block", table_name="leases")
