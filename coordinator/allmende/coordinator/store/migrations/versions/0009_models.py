"""Models served by the coordinator: one row per model, its signed manifest.

`models` holds each model an operator added (`allmende model add`): its name, its pin (the
sha256 of the manifest's file list, what work units name), the manifest exactly as signed and
its signature. The files themselves live in the data folder (models/NAME/). A new table that
older coordinators never read: the schema number stays.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("pin", sa.String(64), nullable=False, unique=True),
        sa.Column("manifest", sa.LargeBinary, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("models")
