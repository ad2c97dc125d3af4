"""The composition root: one place that wires a running coordinator together.

`serve()` opens the data folder and the store, builds the domain (Coordinator, Admin) with
the trust policy in force, hands it to the gRPC server (transport/server.py), binds it with
or without TLS, and runs the housekeeping threads beside it (housekeeping.py). The CLI, the
demo, the tests and the benchmarks all start coordinators through it, with other parts
where they need them (a policy, a gold computer, a shared database).

It is a context manager that yields the running server with its bound port, so tests listen
on port 0 and never collide. The environment is read here, never in the domain:
ALLMENDE_TRUST_LOCAL gives `trust_local` to a policy that does not say.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from allmende.coordinator.domain.admin import Admin
from allmende.coordinator.domain.coordinator import Coordinator, GoldComputer
from allmende.coordinator.domain.gold_model import ModelGold
from allmende.coordinator.domain.keys import adopt_rotation
from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.housekeeping import Housekeeping
from allmende.coordinator.memory import keep_large_buffers_mapped
from allmende.coordinator.metrics import Metrics
from allmende.coordinator.store import open_store
from allmende.coordinator.transport.ports import bind_problem
from allmende.coordinator.transport.ports import reason as port_reason
from allmende.coordinator.transport.runtime import Runtime
from allmende.coordinator.transport.server import GrpcServer
from allmende.protocol.errors import FailedPrecondition, InvalidArgument
from allmende.protocol.models import ModelRegistry
from allmende.protocol.signing import CTX_TLS
from allmende.protocol.tls import cert_sha256, is_loopback

log = logging.getLogger("allmende.coordinator")

TRUST_LOCAL_ENV = "ALLMENDE_TRUST_LOCAL"


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


def trust_local_from(env: Mapping[str, str] = os.environ) -> bool:
    """ALLMENDE_TRUST_LOCAL: 1/true/yes/on or 0/false/no/off (unset: off)."""
    value = env.get(TRUST_LOCAL_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise InvalidArgument(TRUST_LOCAL_ENV, f"1 or 0 (true or false), got {value[:20]!r}")


def policy_in_force(
    policy: TrustPolicy | None, env: Mapping[str, str] = os.environ
) -> TrustPolicy:
    """The policy given (or the default one), with ALLMENDE_TRUST_LOCAL deciding
    `trust_local` where the policy does not say."""
    policy = policy or TrustPolicy()
    if policy.trust_local_unsaid:
        return replace(policy, trust_local=trust_local_from(env))
    return policy


def claim_database(data_dir: Path, db_url: str) -> None:
    """Bind a shared database to this coordinator's key before serving from it: a database
    bound to a key before a rotation follows the chain to this one, and one that another
    coordinator's key owns is refused."""
    home = CoordinatorHome(data_dir)
    key = home.load_key()
    chain = home.load_chain(key)
    store = open_store(db_url)
    try:
        adopt_rotation(store, key, chain, int(time.time() * 1000))
        store.bind_coordinator(key.fingerprint)
    finally:
        store.close()


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
    registry: ModelRegistry | None = None,
) -> Iterator[RunningCoordinator]:
    """Run a coordinator on the data folder until the block exits.

    TLS: on a loopback address only when `tls` is true; on any other address always, unless
    `insecure` is given explicitly (plaintext would expose the admin token and the traffic).

    On exit it drains: no new leases, the health service says NOT_SERVING, and results of
    units already leased may still arrive for up to `drain_s` seconds before the server stops.
    """
    host, port = parse_listen(listen)
    policy = policy_in_force(policy)
    keep_large_buffers_mapped()
    home = CoordinatorHome(data_dir)
    key = home.load_key()
    chain = home.load_chain(key)
    token = home.load_token()
    store = open_store(db_url or home.db_url)
    coordinator = Coordinator(
        store,
        key,
        home.datasets,
        policy=policy,
        gold_computer=gold_computer,
        models_dir=home.models,
        registry=registry,
    )
    coordinator.key_chain = chain
    if isinstance(gold_computer, ModelGold):  # gold rows of served models too
        gold_computer.share_registry(coordinator.registry)
    try:  # a database of the key before a rotation follows the chain to this key
        adopt_rotation(store, key, chain, coordinator.clock())
    except BaseException:
        store.close()
        raise
    metrics = Metrics()
    metrics.watch_active_volunteers(coordinator.volunteers_online)
    # Researcher calls are open unless `private`: then the reader or the admin token.
    readers = (home.reader_token(), token) if private else ()
    server = GrpcServer(
        coordinator, Admin(coordinator), metrics, token, readers, workers, store.postgres
    )

    def give_up() -> None:
        server.stop(0)
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
        bound = server.bind(f"{host}:{port}", (tls_key, tls_cert))
    else:
        bound = server.bind(f"{host}:{port}", None)
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
    server.start()
    housekeeping = Housekeeping(coordinator)
    housekeeping.start()
    log.info("coordinator listening on %s:%d fingerprint=%s", host, bound, key.fingerprint)
    try:
        yield RunningCoordinator(
            bound, f"{host}:{bound}", coordinator, server.runtime, metrics_port, use_tls
        )
    finally:
        coordinator.draining.set()
        server.not_serving()
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline and store.count_active_leases(coordinator.clock()):
            time.sleep(0.1)
        housekeeping.stop()
        server.stop(2)
        housekeeping.join(timeout_s=30)
        metrics.close()
        store.close()
