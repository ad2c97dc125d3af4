"""Starting and stopping a coordinator: the gRPC server plus its assimilator thread.

`serve()` is a context manager that yields the running server with its bound port, so tests
listen on port 0 and never collide.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from allmende.coordinator.domain.admin import Admin
from allmende.coordinator.domain.coordinator import Coordinator, GoldComputer
from allmende.coordinator.domain.keys import adopt_rotation
from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.memory import keep_large_buffers_mapped, trim_if_due
from allmende.coordinator.metrics import Metrics
from allmende.coordinator.store import open_store
from allmende.coordinator.transport.admin_servicer import AdminServicer
from allmende.coordinator.transport.auth import VolunteerAuthInterceptor
from allmende.coordinator.transport.bridge import collect
from allmende.coordinator.transport.guard import ParseGuardInterceptor
from allmende.coordinator.transport.ports import bind_problem
from allmende.coordinator.transport.ports import reason as port_reason
from allmende.coordinator.transport.runtime import LoopRuntime, Runtime, ThreadedRuntime
from allmende.coordinator.transport.servicers import (
    DatasetServicer,
    JobServicer,
    VolunteerServicer,
)
from allmende.protocol.errors import FailedPrecondition, InvalidArgument
from allmende.protocol.limits import MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES
from allmende.protocol.signing import CTX_TLS
from allmende.protocol.tls import cert_sha256, is_loopback
from allmende.v1 import allmende_pb2 as pb
from allmende.v1 import allmende_pb2_grpc as rpc

log = logging.getLogger("allmende.coordinator")

ASSIMILATE_POLL_S = 5.0
SEEN_FLUSH_S = 2.0  # last-seen times are written this often
GOLD_CHECK_S = 0.5  # and the gold pool checked this often (it reloads when due)
NONCE_PRUNE_S = 60.0  # expired nonces of signed requests are deleted this often


@dataclass
class RunningCoordinator:
    port: int
    address: str
    coordinator: Coordinator
    server: Runtime
    metrics_port: int = 0
    tls: bool = False


def parse_listen(listen: str, flag: str = "--listen") -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(flag, f"HOST:PORT with a port from 0 to 65535, got {listen!r}")
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


def _housekeeper(coordinator: Coordinator, stop: threading.Event) -> None:
    """Keep the gold pool fresh (checked every GOLD_CHECK_S), hand the memory of large
    requests back (memory.py), write claimed nonces the store holds back and delete expired
    ones every NONCE_PRUNE_S, and write the volunteers' last-seen times every SEEN_FLUSH_S,
    and once more at the end."""
    flushed = pruned = time.monotonic()
    while True:
        stopping = stop.wait(GOLD_CHECK_S)
        trim_if_due()
        try:
            coordinator.nonces.flush()
        except Exception:  # they stay pending; the next write transaction takes them
            log.exception("writing claimed nonces failed; will retry")
        if not stopping and time.monotonic() - pruned >= NONCE_PRUNE_S:
            pruned = time.monotonic()
            try:
                coordinator.nonces.prune(coordinator.clock())
            except Exception:  # expired rows only take space; the next round deletes them
                log.exception("deleting expired nonces failed; will retry")
        if not stopping:
            try:
                coordinator.gold.keep()
            except Exception:  # the pool in hand serves; leases reload it if it is expired
                log.exception("reloading gold rows failed; will retry")
        if not stopping and time.monotonic() - flushed < SEEN_FLUSH_S:
            continue
        flushed = time.monotonic()
        try:
            coordinator.flush_seen()
        except Exception:  # the times stay queued for the next round
            log.exception("writing last-seen times failed; will retry")
        if stopping:
            return


# Calls that run on the event loop itself on SQLite (see bridge.py).
INLINE_ON_SQLITE = frozenset(
    f"/allmende.v1.VolunteerService/{m}"
    for m in ("LeaseWork", "SubmitResult", "SubmitResults", "ReleaseWork", "GetCoordinatorInfo")
)


@contextmanager
def serve(
    data_dir: Path,
    listen: str = "127.0.0.1:0",
    db_url: str | None = None,
    workers: int = 16,
    metrics_listen: str | None = None,
    drain_s: float = 10.0,
    tls: bool | None = None,
    insecure: bool = False,
    policy: TrustPolicy | None = None,
    gold_computer: GoldComputer | None = None,
    private: bool = False,
) -> Iterator[RunningCoordinator]:
    """Run a coordinator on the data folder until the block exits.

    TLS: on a loopback address only when `tls` is true; on any other address always, unless
    `insecure` is given explicitly (plaintext would expose the admin token and the traffic).

    On exit it drains: no new leases, the health service says NOT_SERVING, and results of
    units already leased may still arrive for up to `drain_s` seconds before the server stops.
    """
    host, port = parse_listen(listen)
    keep_large_buffers_mapped()
    home = CoordinatorHome(data_dir)
    key = home.load_key()
    chain = home.load_chain(key)
    token = home.load_token()
    store = open_store(db_url or home.db_url)
    coordinator = Coordinator(store, key, home.datasets, policy=policy, gold_computer=gold_computer)
    coordinator.key_chain = chain
    try:  # a database of the key before a rotation follows the chain to this key
        adopt_rotation(store, key, chain, coordinator.clock())
    except BaseException:
        store.close()
        raise
    metrics = Metrics()
    metrics.watch_active_volunteers(coordinator.volunteers_online)
    health_servicer = health.HealthServicer()
    services = [s.full_name for s in pb.DESCRIPTOR.services_by_name.values()]
    for name in ["", *services]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    # Researcher calls are open unless `private`: then the reader or the admin token.
    readers = (home.reader_token(), token) if private else ()
    handlers = collect(
        lambda s: health_pb2_grpc.add_HealthServicer_to_server(health_servicer, s),
        lambda s: rpc.add_VolunteerServiceServicer_to_server(
            VolunteerServicer(coordinator, metrics), s
        ),
        lambda s: rpc.add_JobServiceServicer_to_server(
            JobServicer(coordinator, token, metrics, readers), s
        ),
        lambda s: rpc.add_DatasetServiceServicer_to_server(
            DatasetServicer(coordinator, metrics, readers), s
        ),
        lambda s: rpc.add_AdminServiceServicer_to_server(
            AdminServicer(Admin(coordinator), token, metrics), s
        ),
    )
    # Order matters: oversized, overfull or unparseable requests are refused (guard.py)
    # before authentication looks at them.
    interceptors = [ParseGuardInterceptor(), VolunteerAuthInterceptor(coordinator, metrics)]
    options = [
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
    ]
    runtime: Runtime = (
        ThreadedRuntime(handlers, interceptors, workers, options)
        if store.postgres
        else LoopRuntime(handlers, interceptors, workers, options, INLINE_ON_SQLITE)
    )

    def give_up() -> None:
        runtime.stop(0)
        store.close()

    use_tls = bool(tls) if is_loopback(host) else tls is not False and not insecure
    if not is_loopback(host) and not use_tls and not insecure:
        give_up()
        raise InvalidArgument(
            "--insecure", f"explicit consent to serve {host} without TLS (or drop --no-tls)"
        )
    problem = bind_problem(host, port)
    if problem is not None:
        give_up()
        raise InvalidArgument(
            "--listen", f"an address this machine can listen on; {host}:{port}: {problem}"
        )
    if use_tls:
        material = home.load_tls()
        if material is None:
            give_up()
            raise FailedPrecondition(
                f"no TLS certificate in {data_dir} (tls.crt, tls.key); run `allmende "
                "coordinator init` or copy a certificate and key there"
            )
        tls_key, tls_cert = material
        digest = cert_sha256(tls_cert)
        coordinator.tls_binding = (digest, key.sign(CTX_TLS, digest))
        credentials = grpc.ssl_server_credentials([(tls_key, tls_cert)])
        bound = runtime.bind(f"{host}:{port}", credentials)
    else:
        bound = runtime.bind(f"{host}:{port}", None)
    if bound == 0:
        give_up()
        raise InvalidArgument("--listen", f"an address this machine can bind, got {listen!r}")
    metrics_port = 0
    if metrics_listen is not None:
        metrics_host, wanted = parse_listen(metrics_listen, flag="--metrics")
        try:
            metrics_port = metrics.serve(metrics_host, wanted)
        except OSError as exc:
            give_up()
            raise InvalidArgument(
                "--metrics",
                f"an address this machine can listen on; {metrics_listen}: {port_reason(exc)}",
            ) from None
    runtime.start()
    stop = threading.Event()
    assimilator = threading.Thread(
        target=_assimilator, args=(coordinator, stop), name="assimilator", daemon=True
    )
    assimilator.start()
    housekeeper = threading.Thread(
        target=_housekeeper, args=(coordinator, stop), name="housekeeper", daemon=True
    )
    housekeeper.start()
    coordinator.assimilation_wanted.set()  # finish any job a previous run left half-written
    log.info("coordinator listening on %s:%d fingerprint=%s", host, bound, key.fingerprint)
    try:
        yield RunningCoordinator(
            bound, f"{host}:{bound}", coordinator, runtime, metrics_port, use_tls
        )
    finally:
        coordinator.draining.set()
        for name in ["", *services]:
            health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline and store.count_active_leases(coordinator.clock()):
            time.sleep(0.1)
        stop.set()
        coordinator.assimilation_wanted.set()
        runtime.stop(2)
        assimilator.join(timeout=30)
        housekeeper.join(timeout=30)
        metrics.close()
        store.close()
