"""Leases keep the unit as signed for them, so a volunteer that lost its state gets it back.

`leases.unit_blob` and `leases.unit_signature` hold the exact bytes a lease handed out
(ListLeases returns them; their sha256 is `leases.unit_sha256`). A unit cannot be rebuilt
from `composition` and `gold_ids` alone: a lease's decoy texts are not stored, and a gold row
may have left the pool since. Both columns are nullable and new: an older coordinator runs
unchanged beside this one (its leases have no stored unit and are not returned), so the
schema number in `meta` stays.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_COLUMNS = ("unit_blob", "unit_signature")


def upgrade() -> None:
    for name in _COLUMNS:
        op.add_column("leases", sa.Column(name, sa.LargeBinary, nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE (SQLite >= 3.35 has DROP COLUMN): batch mode would rebuild the
    # table on SQLite and lose the busy triggers of migration 0002.
    for name in reversed(_COLUMNS):
        op.execute(f"ALTER TABLE leases DROP COLUMN {name}")
