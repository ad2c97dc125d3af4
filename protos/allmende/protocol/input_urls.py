"""Which URLs a job may give: a row's fetch URL (volunteers that opted in fetch it) or an
image's source URL (recorded in the dataset, never fetched). Both are checked the same way
before anything is stored, by the CLI and again by the coordinator.

Only the URL's form is checked here: http or https, a host, at most MAX_URL_CHARS, no
whitespace or control characters. Whether its address is public is the fetching
volunteer's to judge at fetch time (a name can resolve differently by then), within the
limits in protocol/limits.py.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from allmende.protocol.limits import MAX_URL_CHARS

SCHEMES = ("http", "https")


def url_problem(url: str) -> str:
    """What is wrong with `url` as an input URL ('' when nothing is)."""
    if not url:
        return "a non-empty URL"
    if len(url) > MAX_URL_CHARS:
        return f"at most {MAX_URL_CHARS} characters, got {len(url)}"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "no whitespace or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"a well-formed URL ({exc})"
    if parts.scheme.lower() not in SCHEMES:
        return f"an http or https URL, got scheme {parts.scheme!r}"
    if not host:
        return "a URL with a host"
    return ""
