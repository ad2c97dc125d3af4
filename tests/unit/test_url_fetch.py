"""Fetching URL rows (client/allmende/client/fetch/): a real HTTP server on loopback serves
the bundled images and every way a fetch can fail; each failure is the status every
volunteer reports for it."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from allmende.client.fetch.addresses import ALLOW_ALL, parse_networks
from allmende.client.fetch.http import FetchLimits, fetch_url
from allmende.client.fetch.pool import UrlFetcher
from allmende.protocol.kinds.image_inputs import STATUS_LABELS
from allmende.protocol.limits import MAX_FETCH_BYTES, MAX_FETCH_REDIRECTS, MAX_FETCH_SECONDS
from tests.urlserver import UrlServer, url_server

LOOPBACK = parse_networks(["127.0.0.1/32"])


@pytest.fixture
def server() -> Iterator[UrlServer]:
    with url_server() as running:
        yield running


def status(url: str, **kwargs: object) -> str:
    kwargs.setdefault("allowed", LOOPBACK)
    return STATUS_LABELS[fetch_url(url, **kwargs).status]  # type: ignore[arg-type]


def test_images_come_whole_with_their_bytes(server: UrlServer) -> None:
    for index, data in enumerate(server.images):
        fetched = fetch_url(server.url(f"/img/{index}"), LOOPBACK)
        assert STATUS_LABELS[fetched.status] == "ok"
        assert hashlib.sha256(fetched.data).digest() == hashlib.sha256(data).digest()


def test_the_limits_default_to_the_protocols() -> None:
    limits = FetchLimits()
    assert (limits.max_bytes, limits.seconds, limits.redirects) == (
        MAX_FETCH_BYTES,
        MAX_FETCH_SECONDS,
        MAX_FETCH_REDIRECTS,
    )


def test_redirects_are_followed_up_to_the_limit_and_no_further(server: UrlServer) -> None:
    fetched = fetch_url(server.url(f"/hops/{MAX_FETCH_REDIRECTS}"), LOOPBACK)
    assert STATUS_LABELS[fetched.status] == "ok" and fetched.data == server.images[0]
    assert status(server.url(f"/hops/{MAX_FETCH_REDIRECTS + 1}")) == "unreachable"
    two = FetchLimits(redirects=2)
    assert status(server.url("/hops/2"), limits=two) == "ok"
    server.requests.clear()
    assert status(server.url("/hops/3"), limits=two) == "unreachable"
    assert server.requests == ["/hops/3", "/hops/2", "/hops/1"]  # the last hop not asked


def test_http_errors_are_unreachable(server: UrlServer) -> None:
    assert status(server.url("/status/404")) == "unreachable"
    assert status(server.url("/status/500")) == "unreachable"
    assert status(server.url("/status/204")) == "unreachable"
    assert status(server.url("/no-such-route")) == "unreachable"


def test_a_body_that_is_not_an_image_is_wrong_type(server: UrlServer) -> None:
    assert status(server.url("/html")) == "wrong-type"
    assert status(server.url("/untyped")) == "wrong-type"


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("noai", "opted-out"),
        ("noindex, nofollow", "opted-out"),
        ("NoImageAI", "opted-out"),
        ("allmende: noimageindex", "opted-out"),
        ("noimageindex, unavailable_after: 25 Jun 2030 15:00:00 PST", "opted-out"),
        ("otherbot: noai, noindex", "ok"),  # addressed to another robot
        ("nofollow, max-image-preview: large", "ok"),
        ("unavailable_after: 25 Jun 2030 15:00:00 PST", "ok"),
    ],
)
def test_a_site_that_opts_its_images_out_is_not_read(
    server: UrlServer, tag: str, expected: str
) -> None:
    fetched = fetch_url(server.url(f"/robots?tag={quote(tag)}"), LOOPBACK)
    assert STATUS_LABELS[fetched.status] == expected, fetched.detail
    assert (fetched.data == server.images[0]) is (expected == "ok")


def test_bodies_over_the_limit_are_too_large(server: UrlServer) -> None:
    assert status(server.url("/huge-length")) == "too-large"
    assert status(server.url("/huge-body")) == "too-large"  # no length: counted while read
    small = FetchLimits(max_bytes=len(server.images[0]) - 1)
    assert status(server.url("/img/0"), limits=small) == "too-large"
    exact = FetchLimits(max_bytes=len(server.images[0]))
    assert status(server.url("/img/0"), limits=exact) == "ok"


def test_a_body_cut_short_is_unreachable(server: UrlServer) -> None:
    assert status(server.url("/cut")) == "unreachable"


def test_a_fetch_that_outlasts_its_budget_is_unreachable(server: UrlServer) -> None:
    quick = FetchLimits(seconds=0.5)
    assert status(server.url("/stall"), limits=quick) == "unreachable"
    assert status(server.url("/img/1"), limits=quick) == "ok"


def test_not_http_or_no_server_is_unreachable(server: UrlServer) -> None:
    for url in ("ftp://127.0.0.1/x", "file:///etc/passwd", "http://", "not a url", "http://[::1"):
        assert status(url) == "unreachable", url
    closed = server.base.rsplit(":", 1)[0] + ":1/x"  # nothing listens on port 1
    assert status(closed) == "unreachable"
    assert status("http://name-that-does-not-exist.invalid/x.jpg", allowed=ALLOW_ALL) == (
        "unreachable"
    )
    assert server.requests == []


def test_loopback_is_refused_unless_allowed_and_nothing_is_sent(server: UrlServer) -> None:
    url = server.url("/img/0")
    assert status(url, allowed=()) == "private-address"
    assert status(url.replace("127.0.0.1", "localhost"), allowed=()) == "private-address"
    assert server.requests == []  # no connection was made
    assert status(url, allowed=ALLOW_ALL) == "ok"


def test_a_redirect_hop_to_a_private_address_is_refused(server: UrlServer) -> None:
    """127.0.0.1 is allowed, 127.0.0.2 (loopback too, on Linux) is not."""
    port = server.base.rsplit(":", 1)[1]
    target = f"http://127.0.0.2:{port}/img/0"
    assert status(server.url(f"/to?url={target}")) == "private-address"
    assert server.requests == [f"/to?url={target}"]
    wide = parse_networks(["127.0.0.0/8"])
    assert status(server.url(f"/to?url={target}"), allowed=wide) == "unreachable"  # not bound


def test_a_unit_s_urls_are_fetched_in_order_concurrently(server: UrlServer) -> None:
    urls = [server.url(f"/img/{i}") for i in range(len(server.images))]
    urls += ["", server.url("/status/404"), server.url("/html")]
    fetcher = UrlFetcher(LOOPBACK, workers=4)
    try:
        found = fetcher.fetch_all(urls)
    finally:
        fetcher.close()
    assert found[-3] is None
    labels = [STATUS_LABELS[f.status] if f else "" for f in found]
    assert labels == ["ok"] * len(server.images) + ["", "unreachable", "wrong-type"]
    assert [f.data for f in found[: len(server.images)] if f] == server.images


def test_a_unit_s_fetches_run_at_the_same_time(server: UrlServer) -> None:
    """/together answers only when four requests wait at once: one at a time, they fail."""
    fetcher = UrlFetcher(LOOPBACK, workers=4)
    try:
        found = fetcher.fetch_all([server.url("/together")] * 4)
    finally:
        fetcher.close()
    assert [STATUS_LABELS[f.status] if f else "" for f in found] == ["ok"] * 4


def test_addresses_in_allowed_networks_need_their_family() -> None:
    assert parse_networks([" 10.0.0.0/8 "]) == (ipaddress.ip_network("10.0.0.0/8"),)
    with pytest.raises(ValueError):
        parse_networks(["not a network"])
