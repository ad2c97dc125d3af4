"""URL rows: jobs whose images volunteers fetch, and each item's URL for the dataset.

`jobs.fetch_rows` counts the items volunteers fetch from a URL: a job with any is leased
only to volunteers that opted in (LeaseWorkRequest.fetch_urls). `jobs.url_items` counts the
items with any URL (fetched, or an image's source URL from img2dataset's KEY.json), and
`items.url` holds it ('' for none): the dataset's `url` column. Coordinators from before
would hand such units to every volunteer, so the schema number goes to 8.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("fetch_rows", sa.BigInteger, nullable=False, server_default="0")
    )
    op.add_column("jobs", sa.Column("url_items", sa.BigInteger, nullable=False, server_default="0"))
    op.add_column("items", sa.Column("url", sa.Text, nullable=False, server_default=""))
    op.execute("UPDATE meta SET value = '8' WHERE key = 'schema'")


def downgrade() -> None:
    # Plain ALTER TABLE (SQLite >= 3.35 has DROP COLUMN), as 0008 does.
    op.execute("ALTER TABLE items DROP COLUMN url")
    op.execute("ALTER TABLE jobs DROP COLUMN url_items")
    op.execute("ALTER TABLE jobs DROP COLUMN fetch_rows")
    op.execute("UPDATE meta SET value = '7' WHERE key = 'schema'")
