"""A TCP forwarder that connects to the coordinator from another loopback address, so that a
test can present volunteers from distinct addresses to a real coordinator: on Linux every
address in 127.0.0.0/8 is loopback, and the coordinator sees the forwarder's source address
(e.g. 'ipv4:127.0.0.2:PORT') as the peer. gRPC's HTTP/2 passes through unchanged."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class SourceProxy:
    """Listens on 127.0.0.1 at a free port (`address`) and forwards each connection to
    127.0.0.1:`target_port`, from `source`."""

    def __init__(self, target_port: int, source: str) -> None:
        self.target_port = target_port
        self.source = source
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = [self._listener]
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="source-proxy").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.bind((self.source, 0))
            try:
                upstream.connect(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> SourceProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
