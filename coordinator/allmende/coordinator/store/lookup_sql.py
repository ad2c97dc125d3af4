"""Finding job and volunteer ids by the prefix an operator typed.

A mixin of `SqlStore` (see sql.py). The domain (domain/admin.py) decides what a prefix must
look like and what an ambiguous one means; this only answers which ids start with it.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import select

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.sql_base import SqlBase

IdKind = Literal["job", "volunteer"]


class LookupQueries(SqlBase):
    def ids_with_prefix(self, kind: IdKind, prefix: str, limit: int) -> list[str]:
        """Up to `limit` ids of `kind` that start with `prefix`, in id order."""
        column = t.jobs.c.job_id if kind == "job" else t.volunteers.c.volunteer_id
        # LIKE escapes % and _ (autoescape), but SQLite's LIKE ignores ASCII case and
        # PostgreSQL's does not: the exact, case-sensitive test is made here, on both.
        query = (
            select(column)
            .where(column.startswith(prefix, autoescape=True))
            .order_by(column)
            .limit(limit * 4)
        )
        with self.engine.connect() as conn:
            found = [str(value) for value in conn.execute(query).scalars()]
        return [value for value in found if value.startswith(prefix)][:limit]
