"""Leases in hand: how many units to ask for at once, and handing back those not started."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

from allmende.client.connection import RemoteError
from allmende.client.engine import events as ev
from allmende.client.engine.exits import Stop
from allmende.client.engine.link import CoordinatorLink
from allmende.client.engine.verify import unit_id_hint
from allmende.v1 import allmende_pb2 as pb

# Units in hand: about this many seconds of compute, at most MAX_BUFFER units (BOINC's work
# buffer, kept short: a unit in hand is a unit nobody else can compute).
BUFFER_S = 5.0
MAX_BUFFER = 8


def hand_back(
    link: CoordinatorLink,
    held: deque[pb.Lease],
    ahead: Future[object] | None,
    why: str,
    emit: Callable[[ev.Event], None],
) -> None:
    """Hand back the leases in hand and those of a lease call still under way."""
    if ahead is not None:
        try:
            response = ahead.result()
        except (RemoteError, Stop):
            response = None
        if isinstance(response, pb.LeaseWorkResponse) and response.HasField("lease"):
            held.extend([response.lease, *response.more_leases])
    while held:
        lease = held.popleft()
        link.release_quietly(lease.lease_id, why)
        emit(ev.UnitReleased(unit_id_hint(lease), why))


def units_wanted(unit_seconds: float) -> int:
    """Units to lease per call for a volunteer whose last unit took `unit_seconds`."""
    if unit_seconds <= 0:
        return MAX_BUFFER
    return max(1, min(MAX_BUFFER, int(BUFFER_S / unit_seconds)))
