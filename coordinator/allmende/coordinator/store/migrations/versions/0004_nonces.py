"""Nonces: the seen-nonce record of signed requests moves from one process into the store.

A request replayed after a coordinator restart, or sent to another replica on the same
database, is now refused. The table starts empty: nonces a running coordinator held in
memory expire within minutes anyway.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nonces",
        sa.Column("volunteer_id", sa.String(64), primary_key=True),
        sa.Column("nonce", sa.String(32), primary_key=True),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_nonces_expires", "nonces", ["expires_ms"])


def downgrade() -> None:
    op.drop_index("ix_nonces_expires", table_name="nonces")
    op.drop_table("nonces")
