"""Nonces of signed requests in the SQL store: claiming one (recording it, or finding it
taken) and forgetting expired ones.

A mixin of `SqlStore` (see sql.py).

- PostgreSQL: a claim is one statement, insert-or-nothing, in autocommit mode (one round
  trip, its own transaction). Replicas claiming the same nonce at once meet on the primary
  key, and exactly one of them inserts it.
- SQLite: a claim is a read (is it written?) and an entry in the store's pending claims,
  which the next write transaction writes first (sql_base.py, `_tx`); the request's own
  writes follow in that same transaction, so whatever a request changed is committed
  together with its nonce, and a crash cannot make it replayable. A commit of its own for
  each nonce cost a third of a small call's time. The coordinator's in-process window
  (domain/nonces.py) settles races between threads; the housekeeper writes claims that no
  transaction took within half a second (`flush_nonces`), and closing the store writes the
  rest. Another process on the same file sees a claim once it is written.
"""

from __future__ import annotations

from allmende.coordinator.store.fastsql import Conn
from allmende.coordinator.store.nonce_statements import NONCE_CLAIM, NONCE_PRUNE, NONCE_SEEN
from allmende.coordinator.store.sql_base import SqlBase


class NonceQueries(SqlBase):
    def claim_nonce(self, volunteer_id: str, nonce: str, expires_ms: int) -> bool:
        """Record a request's nonce until `expires_ms`; False when it was already recorded
        (the request is a replay)."""
        params = {"volunteer_id": volunteer_id, "nonce": nonce, "expires_ms": expires_ms}
        if self.postgres:
            with self._own() as sa:
                return Conn(sa).execute(NONCE_CLAIM, params).first() is not None
        key = (volunteer_id, nonce)
        with self._read() as conn:
            seen = conn.execute(
                NONCE_SEEN, {"volunteer_id": volunteer_id, "nonce": nonce}
            ).first()
        with self._nonce_lock:
            if seen is not None or key in self._pending_nonces:
                return False
            self._pending_nonces[key] = expires_ms
        return True

    def flush_nonces(self) -> None:
        """Write the claims no write transaction has taken yet (SQLite; elsewhere nothing)."""
        if self._pending_nonces:
            with self._tx():
                pass  # _tx writes them first

    def prune_nonces(self, now_ms: int) -> int:
        """Forget nonces that expired before `now_ms`; returns how many."""
        with self._tx() as conn:
            return int(conn.execute(NONCE_PRUNE, {"now_ms": now_ms}).rowcount)
