"""`allmende coordinator init|serve|fingerprint|rotate-key`."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from allmende.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError, out
from allmende.cli.remote import call
from allmende.coordinator.cli.limit_flags import limit_settings
from allmende.protocol.signing import SigningKey


def init(args: argparse.Namespace) -> int:
    from allmende.coordinator.home import CoordinatorHome
    from allmende.coordinator.store import open_store
    from allmende.coordinator.store.sql import safe_url

    home = CoordinatorHome(Path(args.data))

    def create() -> SigningKey:
        return home.init(
            tls_cert=Path(args.tls_cert) if args.tls_cert else None,
            tls_key=Path(args.tls_key) if args.tls_key else None,
            tls_names=tuple(args.tls_name),
        )

    if args.db:  # a shared database first: if it is unreachable, the folder stays untouched
        store = open_store(args.db)
        try:
            owner = store.bound_coordinator()
            if owner is not None:
                raise CliError(
                    f"{safe_url(args.db)} already serves coordinator {owner[:16]}...; to run "
                    "another replica of it, serve from a copy of its data folder instead"
                )
            key = create()
        except BaseException:
            store.close()
            raise
    else:
        key = create()
        store = open_store(home.db_url)
    try:
        store.bind_coordinator(key.fingerprint)
        revision = store.revision
    finally:
        store.close()
    out(f"initialised coordinator in {home.root}")
    out(f"database: {safe_url(args.db or home.db_url)} (schema revision {revision})")
    out(f"admin token: {home.token_path} (keep it secret)")
    out("fingerprint (give this to volunteers and researchers):")
    out(key.fingerprint)
    return EXIT_OK


def show_fingerprint(args: argparse.Namespace) -> int:
    from allmende.coordinator.home import CoordinatorHome

    out(CoordinatorHome(Path(args.data)).load_key().fingerprint)
    return EXIT_OK


def rotate_key(args: argparse.Namespace) -> int:
    from allmende.coordinator.home import CoordinatorHome

    home = CoordinatorHome(Path(args.data))
    old, new = home.rotate_key(args.reason)
    out(f"rotated the coordinator key in {home.root}")
    out(f"old fingerprint: {old.fingerprint}")
    out(f"new fingerprint: {new.fingerprint}")
    out(
        "Volunteers and researchers who pinned the old fingerprint follow automatically: "
        f"the old key signed the rotation ({home.chain_path.name}). Restart `coordinator "
        "serve` (every replica, each from a copy of this folder) to use the new key. Give "
        "the new fingerprint to newcomers:"
    )
    out(new.fingerprint)
    return EXIT_OK


def serve(args: argparse.Namespace) -> int:
    from allmende.coordinator.app import claim_database, trust_local_from
    from allmende.coordinator.app import serve as run_server
    from allmende.coordinator.domain.gold_model import ModelGold
    from allmende.coordinator.domain.trust import TrustPolicy

    if args.db:  # a shared database: refuse one that another coordinator key owns
        claim_database(Path(args.data), args.db)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with run_server(
        Path(args.data),
        args.listen,
        db_url=args.db,
        metrics_listen=args.metrics,
        drain_s=args.drain_seconds,
        tls=True if args.tls else (False if args.insecure else None),
        insecure=args.insecure,
        policy=TrustPolicy(
            adaptive=not args.no_adaptive,
            adaptive_after=args.adaptive_after,
            replication_floor=args.replication_floor,
            daily_quota=args.daily_quota,
            quota_per_valid=args.quota_per_valid,
            distinct_addresses=not args.any_address,
            **limit_settings(args),
            trust_local=args.trust_local or trust_local_from(os.environ),
        ),
        gold_computer=ModelGold() if args.gold_compute else None,
        private=args.private,
    ) as running:
        scheme = "TLS" if running.tls else "plaintext"
        out(f"coordinator listening on {running.address} ({scheme})")
        out(f"fingerprint {running.coordinator.key.fingerprint}")
        if running.metrics_port:
            host = args.metrics.rpartition(":")[0]
            out(f"metrics on http://{host}:{running.metrics_port}/metrics")
        _long_running_gc()
        stop.wait()
        out("shutting down")
    return EXIT_OK


def _long_running_gc() -> None:
    """Garbage collection for a server: what startup loaded (modules, the model registry,
    the schema) is never garbage, so it leaves the collector's view, and young objects are
    collected less often. Every RPC allocates messages and rows; with the defaults a full
    collection every few seconds walked all of it, and each one stalled every call in flight
    (lease p99 at 1,000 simulated volunteers: about 43 ms before, 36 ms after)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)


def top(args: argparse.Namespace) -> int:
    from allmende.api.client import ApiClient
    from allmende.cli.tokens import read_token
    from allmende.coordinator.top.app import TopApp
    from allmende.coordinator.top.remote import RemoteTop

    if not 0.1 <= args.interval <= 3600:
        raise CliError(f"--interval: 0.1 to 3600 seconds, got {args.interval}", EXIT_USAGE)
    with ApiClient(
        args.coordinator, admin_token=read_token(args.admin_token_file), timeout_s=5
    ) as client:
        remote = RemoteTop(client)
        # One call first: a wrong token or address is an error with its exit code, not a
        # dashboard that starts empty and says "unreachable".
        call(remote.fetch, args.coordinator)
        app = TopApp(remote.fetch, remote.act, args.coordinator, args.interval)
        app.run()
    if app.refused:  # the token stopped working while it ran
        raise CliError(app.refused, EXIT_FAILED)
    return EXIT_OK
