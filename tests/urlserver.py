"""A real HTTP(S) server on loopback for the URL-row tests: serves the bundled test images
and every way a fetch can go wrong (client/allmende/client/fetch/http.py).

Routes: /img/N (the Nth bundled image, its own Content-Type), /hops/N (N redirects, then
an image), /to?url=U (a redirect to U), /html (text/html), /untyped (no Content-Type),
/huge-body (an endless image/png body, no Content-Length), /huge-length (Content-Length
of a gigabyte), /cut (Content-Length 1000, 100 bytes, then closed), /stall (headers and
half the body, then nothing until the test ends), /together (an image, once 4 requests
wait at once: 503 for fetches made one at a time), /status/N (HTTP N, empty body),
/changing (a different bundled image at each request: a page that changed between two
volunteers' fetches), /robots?tag=T (an image with the header X-Robots-Tag: T).
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.conftest import read_images


@dataclass
class UrlServer:
    base: str  # e.g. http://127.0.0.1:PORT
    images: list[bytes]
    requests: list[str] = field(default_factory=list)  # paths asked for, in order
    release: threading.Event = field(default_factory=threading.Event)
    # /together answers only once this many requests are waiting at the same time.
    together: threading.Barrier = field(default_factory=lambda: threading.Barrier(4, timeout=20))

    def url(self, path: str) -> str:
        return self.base + path


def _content_type(data: bytes) -> str:
    return "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"


def _handler(server: UrlServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            server.requests.append(self.path)
            parts = urlsplit(self.path)
            path = parts.path
            self.close_connection = True
            if path.startswith("/img/"):
                data = server.images[int(path.removeprefix("/img/"))]
                self._send(200, data, {"Content-Type": _content_type(data)})
            elif path.startswith("/hops/"):
                left = int(path.removeprefix("/hops/"))
                if left == 0:
                    self._send(200, server.images[0], {"Content-Type": "image/jpeg"})
                else:
                    self._send(302, b"", {"Location": f"/hops/{left - 1}"})
            elif path == "/to":
                self._send(307, b"", {"Location": parse_qs(parts.query)["url"][0]})
            elif path == "/html":
                self._send(200, b"<html>not an image</html>", {"Content-Type": "text/html"})
            elif path == "/untyped":
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.images[0])))
                self.end_headers()
                self.wfile.write(server.images[0])
            elif path == "/huge-body":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()  # no length: the body runs until the connection closes
                try:
                    for _ in range(4096):  # 256 MiB at most, should nobody stop reading
                        self.wfile.write(b"\0" * 65536)
                except OSError:
                    pass
            elif path == "/huge-length":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(10**9))
                self.end_headers()
                with suppress(OSError):
                    self.wfile.write(b"\0" * 1000)
            elif path == "/cut":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(server.images[0][:100])
            elif path == "/stall":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(server.images[0])))
                self.end_headers()
                self.wfile.write(server.images[0][:1000])
                self.wfile.flush()
                server.release.wait(30)  # until the test ends
            elif path == "/together":
                try:
                    server.together.wait()
                except threading.BrokenBarrierError:
                    self._send(503, b"", {})
                    return
                self._send(200, server.images[0], {"Content-Type": "image/jpeg"})
            elif path == "/robots":
                tag = parse_qs(parts.query)["tag"][0]
                data = server.images[0]
                self._send(200, data, {"Content-Type": "image/jpeg", "X-Robots-Tag": tag})
            elif path == "/changing":
                data = server.images[server.requests.count(path) % len(server.images)]
                self._send(200, data, {"Content-Type": _content_type(data)})
            elif path.startswith("/status/"):
                self._send(int(path.removeprefix("/status/")), b"", {})
            else:
                self._send(404, b"", {})

    return Handler


@contextmanager
def url_server(tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> Iterator[UrlServer]:
    """The server on `host`, port 0, in a thread (https with `tls`: a server context)."""
    httpd = ThreadingHTTPServer((host, 0), BaseHTTPRequestHandler)
    httpd.daemon_threads = True
    scheme = "https" if tls is not None else "http"
    server = UrlServer(
        f"{scheme}://{host}:{httpd.server_address[1]}", [i for _, i, _ in read_images()]
    )
    httpd.RequestHandlerClass = _handler(server)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, name="url-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        httpd.shutdown()
        httpd.server_close()
