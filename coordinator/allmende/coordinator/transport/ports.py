"""Why an address cannot be listened on, in words, before gRPC tries it.

gRPC's own bind failure is a C-core log line on stderr and a port number of 0, with no
reason; an operator needs "address already in use" and the address. So the server tries a
plain socket first and reports what the operating system said.
"""

from __future__ import annotations

import errno
import socket

_REASONS = {
    errno.EADDRINUSE: "address already in use (another process listens there)",
    errno.EADDRNOTAVAIL: "cannot assign requested address (not an address of this machine)",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
}


def reason(exc: OSError) -> str:
    """An OSError from bind, as a phrase an operator can act on."""
    if exc.errno in _REASONS:
        return _REASONS[exc.errno]
    return (exc.strerror or str(exc)).lower()


def bind_problem(host: str, port: int) -> str | None:
    """None where `host:port` can be listened on now; otherwise why not. Port 0 always can.

    SO_REUSEADDR as gRPC sets it: a port whose last connection is still in TIME_WAIT is
    free, one that another socket listens on is not."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"unknown host {host!r} ({exc.strerror})"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return reason(exc)
    return None
