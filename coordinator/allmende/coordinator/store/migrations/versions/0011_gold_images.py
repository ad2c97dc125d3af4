"""Gold rows carry their image.

A gold row of an image kind (clip-filter, embed-image) is an image and its caption: it is
mixed into units as both, so `gold.image` holds the image file's bytes (b'' for text kinds
and for every existing row). Coordinators from before image kinds would hand out such rows
without their image, so the schema number goes to 7.

Revision ID: 0011
Revises: 0010 (re-chained after 0009_models and 0010_dataset_provenance on merge)
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("gold", sa.Column("image", sa.LargeBinary, nullable=False, server_default=""))
    op.execute("UPDATE meta SET value = '7' WHERE key = 'schema'")


def downgrade() -> None:
    # Plain ALTER TABLE (SQLite >= 3.35 has DROP COLUMN), as 0008 does.
    op.execute("ALTER TABLE gold DROP COLUMN image")
    op.execute("UPDATE meta SET value = '6' WHERE key = 'schema'")
