"""The trust handshake with the coordinator, once per run and before any work.

The engine trusts nothing it receives: the coordinator's key must match the pinned
fingerprint, or be reached from it through the coordinator's chain of key rotations, each
signed by the key before it; and over TLS the certificate must be the one the current key
vouches for. Only then does the volunteer register its own key, with which every later call
is signed.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable

from allmende.client.engine import events as ev
from allmende.client.engine.config import EngineConfig
from allmende.client.engine.exits import EXIT_REFUSED, Stop
from allmende.client.engine.identity import load_identity
from allmende.client.engine.link import CoordinatorLink
from allmende.protocol.errors import IntegrityError
from allmende.protocol.rotation import follow_chain
from allmende.protocol.signing import CTX_REGISTER, fingerprint
from allmende.protocol.tls import check_binding
from allmende.v1 import allmende_pb2 as pb

CLIENT_VERSION = "allmende/0.1.0"

log = logging.getLogger("allmende.volunteer")


def connect(
    link: CoordinatorLink,
    config: EngineConfig,
    pinned: str,
    on_event: Callable[[ev.Event], None],
) -> bytes:
    """Check the coordinator against the `pinned` fingerprint, register the volunteer, and
    return the coordinator's current public key (units must be signed with it)."""
    client = link.client
    started = time.perf_counter()
    info = link.retrying(client.info)
    assert isinstance(info, pb.GetCoordinatorInfoResponse)
    rtt = (time.perf_counter() - started) * 1000
    actual = fingerprint(info.public_key) if len(info.public_key) == 32 else "(no key)"
    if actual != pinned:
        chain = [(r.rotation, r.signature) for r in info.key_chain]
        try:
            follow_chain(pinned, chain, info.public_key)
        except IntegrityError as exc:
            raise Stop(
                EXIT_REFUSED,
                f"refusing all work: coordinator key fingerprint {actual} does not match the "
                f"pinned fingerprint {pinned}"
                + (f", and its key chain does not lead there: {exc.message}" if chain else ""),
            ) from None
    if client.tls_cert_sha256:  # the TLS certificate must be the one the key vouches for
        try:
            check_binding(
                info.public_key,
                client.tls_cert_sha256,
                info.tls_cert_sha256,
                info.tls_cert_signature,
            )
        except IntegrityError as exc:
            raise Stop(EXIT_REFUSED, f"refusing all work: {exc.message}") from None
    key = load_identity(config.home)
    request = pb.RegisterVolunteerRequest(
        public_key=key.public_key,
        display_name=config.display_name,
        client_version=CLIENT_VERSION,
        hardware=_hardware(),
        signature=key.sign(CTX_REGISTER, key.public_key),
    )
    volunteer_id = link.retrying(lambda: client.register(request))
    assert isinstance(volunteer_id, str)
    link.registered(volunteer_id, key)
    on_event(ev.Connected(config.coordinator, actual, rtt, volunteer_id))
    if actual != pinned:
        log.warning("coordinator key rotated pinned=%s current=%s", pinned, actual)
        on_event(ev.KeyRotated(pinned, actual))
    return bytes(info.public_key)


def _hardware() -> str:
    return f"{platform.machine()} {platform.system()}"[:256]
