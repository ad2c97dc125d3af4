"""Which signed requests were already made: the replay check behind every volunteer call.

The store decides (its `nonces` table), so a request replayed after a coordinator restart,
or sent to another replica on the same database, is refused. A window in this process
answers first: a replay it has seen costs no round trip, and a fresh nonce, which must be
recorded in the store anyway, costs one insert.

On SQLite the store writes a claim with the next write transaction, normally the request's
own (store/nonces_sql.py); the housekeeper writes any left over twice a second.

A nonce is kept until its request's timestamp is refused by itself (SKEW_MS after it), and
as long again as a margin for replicas whose clocks differ; the housekeeper deletes the
expired ones.
"""

from __future__ import annotations

from allmende.coordinator.store.base import Store
from allmende.protocol.requests import SKEW_MS, NonceWindow

# How long after its timestamp a nonce is kept.
KEEP_MS = 2 * SKEW_MS


class RequestNonces:
    def __init__(self, store: Store, window_ms: int = SKEW_MS) -> None:
        self.store = store
        self.local = NonceWindow(window_ms)

    def claim(self, key_id: str, nonce: str, ts_ms: int, now_ms: int) -> bool:
        """Record a request's nonce; False when it was used before (here or anywhere)."""
        if not self.local.claim(key_id, nonce, ts_ms, now_ms):
            return False
        return self.store.claim_nonce(key_id, nonce, ts_ms + KEEP_MS)

    def flush(self) -> None:
        """Write claims the store holds back (SQLite: until the next write transaction)."""
        self.store.flush_nonces()

    def prune(self, now_ms: int) -> int:
        """Forget nonces whose requests would be refused for their age anyway."""
        return self.store.prune_nonces(now_ms)
