"""The statements on the `nonces` table, built once: claiming (insert-or-nothing, answering
whether the row was new), writing claims held back on SQLite, and deleting expired rows.

Apart from nonces_sql.py because sql_base.py writes held-back claims too (see `_tx`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BindParameter, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.fastsql import prebuilt

_n = t.nonces
_KEY = [_n.c.volunteer_id, _n.c.nonce]
_VALUES: dict[str, BindParameter[Any]] = {
    "volunteer_id": bindparam("volunteer_id"),
    "nonce": bindparam("nonce"),
    "expires_ms": bindparam("expires_ms"),
}
# PostgreSQL: one statement decides, atomically (the primary key settles races).
NONCE_CLAIM = prebuilt(
    postgresql.insert(_n).values(**_VALUES).on_conflict_do_nothing(index_elements=_KEY)
    .returning(_n.c.nonce)
)
# SQLite: whether a claim was already written.
NONCE_SEEN = prebuilt(
    select(_n.c.nonce).where(
        _n.c.volunteer_id == bindparam("volunteer_id"), _n.c.nonce == bindparam("nonce")
    )
)
# SQLite: writing held-back claims (executemany).
NONCE_INSERT = sqlite.insert(_n).on_conflict_do_nothing(index_elements=_KEY)
NONCE_PRUNE = prebuilt(delete(_n).where(_n.c.expires_ms < bindparam("now_ms")))
