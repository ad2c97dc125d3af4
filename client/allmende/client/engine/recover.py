"""BOINC's "resend lost results": the leases a volunteer still holds, asked for at start.

A volunteer that lost its local state (a crash, a wiped home, a restart while its spool had
no record of a lease) would otherwise leave its units waiting for their leases to expire
while it leases new work. After the handshake the engine asks the coordinator for the
unexpired leases it holds (ListLeases) and computes them first. Each comes back as the very
unit it was given, so it goes through the same checks as a fresh lease (signature, model),
and its result is accepted as if nothing had happened. Leases whose results are already in
the spool, waiting to be sent, are not computed again. A coordinator without ListLeases (an
older release) answers UNIMPLEMENTED: nothing is recovered, and work goes on as before.
"""

from __future__ import annotations

import logging

from allmende.client.connection import RemoteError
from allmende.client.engine.link import CoordinatorLink
from allmende.client.engine.spool import Spool
from allmende.protocol.errors import AllmendeError
from allmende.protocol.wire import decode_envelope
from allmende.v1 import allmende_pb2 as pb

log = logging.getLogger("allmende.volunteer")


def spooled_lease_ids(spool: Spool) -> set[str]:
    """Leases whose results are in the spool, computed and waiting to be sent."""
    ids: set[str] = set()
    for item in spool.pending():
        try:
            ids.add(decode_envelope(item.envelope).lease_id)
        except AllmendeError:  # pending() already read it; a bad one is simply not skipped
            continue
    return ids


def recover_leases(link: CoordinatorLink, spool: Spool) -> list[pb.Lease]:
    """The leases this volunteer holds that it has no result for, oldest first; [] when the
    coordinator cannot say (an older coordinator, or a refusal: the next lease call
    reports a refusal that matters)."""
    try:
        held = link.held_leases()
    except RemoteError as exc:
        if exc.code == "UNIMPLEMENTED":
            log.info("coordinator has no ListLeases (an older release); nothing recovered")
        else:
            log.warning("could not ask for the leases held: %s: %s", exc.code, exc.details)
        return []
    done = spooled_lease_ids(spool)
    recovered = [lease for lease in held if lease.lease_id not in done]
    if held:
        log.info(
            "leases held at start: %d, %d recovered to compute, %d already computed",
            len(held),
            len(recovered),
            len(held) - len(recovered),
        )
    return recovered
