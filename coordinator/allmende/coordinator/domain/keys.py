"""The database after a key rotation: it follows the key through the chain, or nothing.

A database is bound to the fingerprint of the coordinator key it serves. When the data
folder's key has been rotated, the database still names an earlier key; it is moved to the
current key only when the folder's rotation chain leads there from the bound one. (Units
need nothing: each is signed for its lease with the key current at that moment.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from allmende.coordinator.store.base import Store
from allmende.protocol.errors import FailedPrecondition, IntegrityError
from allmende.protocol.rotation import follow_chain
from allmende.protocol.signing import SigningKey

log = logging.getLogger("allmende.coordinator")


def adopt_rotation(
    store: Store, key: SigningKey, chain: Sequence[tuple[bytes, bytes]], now_ms: int
) -> bool:
    """Re-bind a database bound to an earlier key of `chain` to `key`. Returns whether it did.

    A database that is unbound, or bound to `key`, is left alone; one bound to a key the
    chain does not lead from is refused when there is a chain, and otherwise left to
    `bind_coordinator` to refuse.
    """
    bound = store.bound_coordinator()
    if bound is None or bound == key.fingerprint or not chain:
        return False
    try:
        follow_chain(bound, chain, key.public_key)
    except IntegrityError as exc:
        raise FailedPrecondition(
            f"this database serves the coordinator with key {bound[:16]}..., and this data "
            f"folder's key chain does not lead from it to {key.fingerprint[:16]}...: "
            f"{exc.message}"
        ) from None
    store.rebind_coordinator(bound, key.fingerprint, now_ms)
    log.warning(
        "database moved to the rotated coordinator key old=%s new=%s", bound, key.fingerprint
    )
    return True
