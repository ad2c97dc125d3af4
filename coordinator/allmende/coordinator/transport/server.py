"""Starting and stopping a coordinator: the gRPC server plus its assimilator thread.

`serve()` is a context manager that yields the running server with its bound port, so tests
listen on port 0 and never collide.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from allmende.coordinator.domain.coordinator import Coordinator
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.store import open_store
from allmende.coordinator.transport.servicers import (
    DatasetServicer,
    JobServicer,
    VolunteerServicer,
)
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.limits import MAX_MESSAGE_BYTES
from allmende.v1 import allmende_pb2_grpc as rpc

log = logging.getLogger("allmende.coordinator")

ASSIMILATE_POLL_S = 5.0


@dataclass
class RunningCoordinator:
    port: int
    address: str
    coordinator: Coordinator
    server: grpc.Server


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument("--listen", f"HOST:PORT with a port from 0 to 65535, got {listen!r}")
    return host, int(port)


def _assimilator(coordinator: Coordinator, stop: threading.Event) -> None:
    while not stop.is_set():
        coordinator.assimilation_wanted.wait(ASSIMILATE_POLL_S)
        coordinator.assimilation_wanted.clear()
        if stop.is_set():
            return
        try:
            coordinator.assimilate_pending()
        except Exception:  # keep serving; the job stays 'assimilating' and is retried
            log.exception("assimilation failed; will retry")


@contextmanager
def serve(
    data_dir: Path,
    listen: str = "127.0.0.1:0",
    db_url: str | None = None,
    workers: int = 16,
) -> Iterator[RunningCoordinator]:
    """Run a coordinator on the data folder until the block exits."""
    host, port = parse_listen(listen)
    home = CoordinatorHome(data_dir)
    key = home.load_key()
    token = home.load_token()
    store = open_store(db_url or home.db_url)
    coordinator = Coordinator(store, key, home.datasets)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    rpc.add_VolunteerServiceServicer_to_server(VolunteerServicer(coordinator), server)
    rpc.add_JobServiceServicer_to_server(JobServicer(coordinator, token), server)
    rpc.add_DatasetServiceServicer_to_server(DatasetServicer(coordinator), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        store.close()
        raise InvalidArgument("--listen", f"an address this machine can bind, got {listen!r}")
    server.start()
    stop = threading.Event()
    assimilator = threading.Thread(
        target=_assimilator, args=(coordinator, stop), name="assimilator", daemon=True
    )
    assimilator.start()
    coordinator.assimilation_wanted.set()  # finish any job a previous run left half-written
    log.info("coordinator listening on %s:%d fingerprint=%s", host, bound, key.fingerprint)
    try:
        yield RunningCoordinator(bound, f"{host}:{bound}", coordinator, server)
    finally:
        stop.set()
        coordinator.assimilation_wanted.set()
        server.stop(grace=2).wait()
        assimilator.join(timeout=30)
        store.close()
