"""Fetching one URL row's image, within the limits every volunteer shares.

What a volunteer does for a URL (protocol/limits.py has the numbers), in this order:

1. The URL must be http or https with a host name, else `unreachable` (nothing is sent).
2. The host is resolved here (or is an address literal); if ANY address it resolves to is
   not public (fetch/addresses.py) and not allowed, the row is `private-address` and no
   connection is made. The connection goes to an address that was checked, never through a
   second name lookup (so DNS rebinding cannot swap in another address); https verifies
   the server's certificate against the URL's host name (SNI too).
3. GET, with a User-Agent naming Allmende, `Accept-Encoding: identity` and no cookies,
   credentials or proxies (proxy environment variables are ignored: http.client never
   reads them).
4. 301, 302, 303, 307 and 308 with a Location are followed (GET again), each hop checked
   as in 1 and 2, at most MAX_FETCH_REDIRECTS of them; one more is `unreachable`.
5. Any status other than 200 is `unreachable`.
6. An X-Robots-Tag header with noai, noimageai, noindex or noimageindex, for every robot or
   for `allmende` (`allmende: noai`), is `opted-out`: the site asked that its images not be
   used this way, as img2dataset honours by default; the body is not read.
   A Content-Type whose media type is not image/* (or none) is `wrong-type`; the body is
   not read.
7. A Content-Length over MAX_FETCH_BYTES is `too-large` and the body is not read; a body
   that grows past MAX_FETCH_BYTES while it streams is `too-large` as soon as it does.
8. A body cut short (fewer bytes than its Content-Length, a broken chunk) is `unreachable`.

All of it, name lookups, connecting, TLS, redirects and the body, gets MAX_FETCH_SECONDS in
all; when it runs out the row is `unreachable` (a watchdog shuts the socket, so a server
that sends a byte at a time cannot stretch it). Failures of the network itself (no route,
refused, reset, TLS) are `unreachable` too.

Only a row whose body was fetched whole has bytes (`Fetched.data`), and only its status is
`ok` here; its bytes then go through the same decoding as uploaded images (so an empty
or broken body is `empty` or `undecodable` there, with the body's sha256).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from allmende.client.fetch.addresses import IPAddress, IPNetwork, is_allowed, parse_address
from allmende.protocol.kinds.image_inputs import (
    OK,
    OPTED_OUT,
    PRIVATE_ADDRESS,
    TOO_LARGE,
    UNREACHABLE,
    WRONG_TYPE,
)
from allmende.protocol.limits import (
    MAX_FETCH_BYTES,
    MAX_FETCH_REDIRECTS,
    MAX_FETCH_SECONDS,
    MAX_URL_CHARS,
)

# Names the software and what it does, so a site owner who sees it in a log knows.
USER_AGENT = "Allmende/0.1.0 (volunteer image fetcher for an open dataset)"
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# X-Robots-Tag directives by which a site opts its images out (img2dataset's default set),
# and the robot name a directive may be addressed to (`allmende: noai`).
OPT_OUT_DIRECTIVES = frozenset({"noai", "noimageai", "noindex", "noimageindex"})
ROBOT_NAME = "allmende"
_VALUED_DIRECTIVES = frozenset(
    {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
)
_CHUNK = 64 * 1024
# Characters left as they are when a request target is made ASCII (RFC 3986's reserved
# and unreserved ones, and % so that escapes stay escapes).
_SAFE = "!#$%&'()*+,/:;=?@[]~"


@dataclass(frozen=True)
class FetchLimits:
    """What one URL may cost; the protocol's numbers unless a test needs smaller ones."""

    max_bytes: int = MAX_FETCH_BYTES
    seconds: float = MAX_FETCH_SECONDS
    redirects: int = MAX_FETCH_REDIRECTS


DEFAULT_LIMITS = FetchLimits()


@dataclass(frozen=True)
class Fetched:
    """What became of one URL: `status` (OK when the body came whole, else the row's fetch
    status), the body when OK, and why in words (for logs; replicas compare statuses)."""

    status: int
    data: bytes = b""
    detail: str = ""


class _Failed(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Watchdog:
    """Shuts down every socket of one fetch when its time is up."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.fired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0 or self.fired:
            raise _Failed(UNREACHABLE, "timed out")
        return left

    def watch(self, sock: socket.socket) -> None:
        # A duplicate of the descriptor: shutting it down ends the connection even after
        # TLS took the original socket over.
        with self._lock:
            self._socks.append(sock.dup())
            if self.fired:
                raise _Failed(UNREACHABLE, "timed out")

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._socks:
                sock.close()
            self._socks.clear()


def _resolve(host: str, port: int, watchdog: _Watchdog) -> list[IPAddress]:
    """The host's addresses; getaddrinfo has no timeout, so it runs on a thread of its own
    that is left behind when the time is up."""
    try:
        return [parse_address(host)]
    except ValueError:
        pass
    found: list[list[IPAddress]] = []
    failed: list[str] = []
    done = threading.Event()

    def look_up() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found.append(list(dict.fromkeys(parse_address(str(info[4][0])) for info in infos)))
        except (OSError, UnicodeError, ValueError) as exc:
            failed.append(str(exc))
        finally:
            done.set()

    threading.Thread(target=look_up, name="allmende-resolve", daemon=True).start()
    if not done.wait(watchdog.remaining()):
        raise _Failed(UNREACHABLE, f"name lookup of {host} timed out")
    if failed or not found or not found[0]:
        raise _Failed(UNREACHABLE, f"name lookup of {host} failed: {failed[0] if failed else ''}")
    return found[0]


def _connect(addresses: Sequence[IPAddress], port: int, watchdog: _Watchdog) -> socket.socket:
    """A connection to the first of the checked addresses that answers."""
    error: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((str(address), port), timeout=watchdog.remaining())
        except OSError as exc:
            error = exc
            continue
        watchdog.watch(sock)
        return sock
    raise _Failed(UNREACHABLE, f"could not connect: {error}")


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP to an address checked beforehand; the Host header keeps the URL's host."""

    def __init__(
        self, host: str, port: int, addresses: Sequence[IPAddress], watchdog: _Watchdog
    ) -> None:
        super().__init__(host, port, timeout=watchdog.remaining())
        self.addresses = addresses
        self.watchdog = watchdog

    def connect(self) -> None:
        self.sock = _connect(self.addresses, self.port, self.watchdog)


class _PinnedTlsConnection(http.client.HTTPSConnection):
    """HTTPS to an address checked beforehand, its certificate verified for the URL's host."""

    def __init__(
        self,
        host: str,
        port: int,
        addresses: Sequence[IPAddress],
        watchdog: _Watchdog,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, timeout=watchdog.remaining(), context=context)
        self.addresses = addresses
        self.watchdog = watchdog
        self.tls = context

    def connect(self) -> None:
        sock = _connect(self.addresses, self.port, self.watchdog)
        sock.settimeout(self.watchdog.remaining())
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def _target(url: str) -> tuple[str, str, int, str]:
    """(scheme, ASCII host, port, request target) of an http(s) URL; _Failed otherwise."""
    if len(url) > MAX_URL_CHARS:
        raise _Failed(UNREACHABLE, f"URL longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        host = parts.hostname or ""
        if host and not host.isascii():
            host = host.encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as exc:
        raise _Failed(UNREACHABLE, f"not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        raise _Failed(UNREACHABLE, "not an http or https URL with a host")
    path = parts.path or "/"
    target = quote(path + (f"?{parts.query}" if parts.query else ""), safe=_SAFE)
    return scheme, host, port or (443 if scheme == "https" else 80), target


def _read_body(
    response: http.client.HTTPResponse, sock: socket.socket, limits: FetchLimits, dog: _Watchdog
) -> bytes:
    expected = response.length  # None when chunked or until the connection closes
    if expected is not None and expected > limits.max_bytes:
        raise _Failed(TOO_LARGE, f"Content-Length {expected} over {limits.max_bytes} bytes")
    chunks: list[bytes] = []
    total = 0
    while True:
        sock.settimeout(dog.remaining())
        chunk = response.read1(_CHUNK)
        dog.remaining()  # a shut-down socket reads as the end: was it the watchdog?
        if not chunk:
            break
        total += len(chunk)
        if total > limits.max_bytes:
            raise _Failed(TOO_LARGE, f"body over {limits.max_bytes} bytes")
        chunks.append(chunk)
    if expected is not None and total < expected:
        raise _Failed(UNREACHABLE, f"body cut short: {total} of {expected} bytes")
    return b"".join(chunks)


def _hop(
    url: str,
    allowed: Sequence[IPNetwork],
    limits: FetchLimits,
    dog: _Watchdog,
    tls: ssl.SSLContext,
) -> Fetched | str:
    """One request: the row's outcome, or the URL a redirect leads to."""
    scheme, host, port, target = _target(url)
    addresses = _resolve(host, port, dog)
    refused = [a for a in addresses if not is_allowed(a, allowed)]
    if refused:
        raise _Failed(PRIVATE_ADDRESS, f"{host} resolves to non-public {refused[0]}")
    connection: http.client.HTTPConnection = (
        _PinnedTlsConnection(host, port, addresses, dog, tls)
        if scheme == "https"
        else _PinnedConnection(host, port, addresses, dog)
    )
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.putheader("User-Agent", USER_AGENT)
        connection.putheader("Accept", "image/*")
        connection.putheader("Accept-Encoding", "identity")
        connection.putheader("Connection", "close")
        connection.endheaders()
        sock = connection.sock
        assert isinstance(sock, socket.socket)
        sock.settimeout(dog.remaining())
        response = connection.getresponse()  # (with Connection: close it lets go of sock)
        if response.status in REDIRECTS:
            location = response.getheader("Location")
            if not location:
                raise _Failed(UNREACHABLE, f"HTTP {response.status} without a Location")
            return urljoin(url, location.strip())
        if response.status != 200:
            raise _Failed(UNREACHABLE, f"HTTP {response.status}")
        opted_out = opt_out(response.msg.get_all("X-Robots-Tag") or [])
        if opted_out:
            raise _Failed(OPTED_OUT, f"X-Robots-Tag says {opted_out}")
        media = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
        if not media.startswith("image/"):
            raise _Failed(WRONG_TYPE, f"Content-Type {media or '(none)'!r}, not image/*")
        return Fetched(OK, _read_body(response, sock, limits, dog))
    finally:
        connection.close()


def opt_out(headers: Sequence[str]) -> str:
    """The opt-out directive among X-Robots-Tag header values ('' when none).

    A value is comma-separated directives, for every robot, or for one robot when the value
    starts with its name and a colon (`otherbot: noindex, nofollow`); only this one's name
    (ROBOT_NAME) counts then. Directives that carry a value (`unavailable_after: DATE`,
    `max-image-preview: large`) are not robot names."""
    for value in headers:
        first, colon, rest = value.partition(":")
        name = first.strip().lower()
        directives = value
        if colon and "," not in first and name not in _VALUED_DIRECTIVES:
            if name != ROBOT_NAME:
                continue  # addressed to another robot
            directives = rest
        for directive in directives.split(","):
            word = directive.split(":", 1)[0].strip().lower()
            if word in OPT_OUT_DIRECTIVES:
                return word
    return ""


def fetch_url(
    url: str,
    allowed: Sequence[IPNetwork] = (),
    limits: FetchLimits = DEFAULT_LIMITS,
    tls: ssl.SSLContext | None = None,
) -> Fetched:
    """Fetch one URL row (see the module's docstring for every rule). `allowed`: non-public
    networks this volunteer fetches from anyway; `tls`: the context https verifies with
    (default: the system's trusted certificates)."""
    dog = _Watchdog(limits.seconds)
    context = tls or ssl.create_default_context()
    try:
        for hop in range(limits.redirects + 1):
            outcome = _hop(url, allowed, limits, dog, context)
            if isinstance(outcome, Fetched):
                return outcome
            url = outcome
            if hop == limits.redirects:
                return Fetched(UNREACHABLE, detail=f"more than {limits.redirects} redirects")
        raise AssertionError("unreachable")  # pragma: no cover
    except _Failed as failed:
        return Fetched(failed.status, detail=failed.detail)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        why = "timed out" if dog.fired or isinstance(exc, TimeoutError) else repr(exc)
        return Fetched(UNREACHABLE, detail=why)
    finally:
        dog.close()
