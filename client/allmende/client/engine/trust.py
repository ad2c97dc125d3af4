"""First contact with a coordinator: fetch the fingerprint of its key for the volunteer to
confirm. Nothing is trusted here; the engine pins whatever fingerprint the volunteer accepts
and refuses all work when the coordinator's key does not match it later."""

from __future__ import annotations

from allmende.client.connection import CoordinatorClient, RemoteError
from allmende.protocol.errors import FailedPrecondition
from allmende.protocol.signing import fingerprint

LOOKUP_TIMEOUT_S = 5.0


def lookup_fingerprint(address: str, timeout_s: float = LOOKUP_TIMEOUT_S) -> str:
    """The fingerprint of the key the coordinator at `address` presents now."""
    try:
        with CoordinatorClient(address, timeout_s=timeout_s) as client:
            info = client.info()
    except ValueError as exc:
        raise FailedPrecondition(str(exc)) from None
    except RemoteError as exc:
        raise FailedPrecondition(f"no answer from {address}: {exc.details}") from None
    if len(info.public_key) != 32:
        raise FailedPrecondition(f"{address} presented no valid coordinator key")
    return fingerprint(bytes(info.public_key))
