"""Whose signatures the coordinator accepts on volunteer calls: a registered volunteer that is
not banned, by the public key it registered (transport/auth.py checks the signatures)."""

from __future__ import annotations

from allmende.coordinator.domain.coordinator import Coordinator
from allmende.protocol.errors import PermissionDenied, Unauthenticated


def signing_key(coordinator: Coordinator, volunteer_id: str) -> bytes:
    """The public key that must have signed this volunteer's calls.

    Unauthenticated for an unknown volunteer, PermissionDenied for a banned one."""
    record = coordinator.store.get_volunteer(volunteer_id)
    if record is None:
        raise Unauthenticated(f"unknown volunteer {volunteer_id[:16]!r}; register first")
    if record.banned:
        raise PermissionDenied(f"volunteer {volunteer_id[:16]} is banned: {record.ban_reason}")
    return record.public_key
