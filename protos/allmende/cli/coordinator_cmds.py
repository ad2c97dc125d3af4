"""`allmende coordinator init|serve|fingerprint`."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from allmende.cli.common import EXIT_OK, EXIT_USAGE, CliError, out


def init(args: argparse.Namespace) -> int:
    from allmende.coordinator.home import CoordinatorHome
    from allmende.coordinator.store import open_store

    home = CoordinatorHome(Path(args.data))
    key = home.init()
    open_store(home.db_url).close()
    out(f"initialised coordinator in {home.root}")
    out(f"admin token: {home.token_path} (keep it secret)")
    out("fingerprint (give this to volunteers and researchers):")
    out(key.fingerprint)
    return EXIT_OK


def show_fingerprint(args: argparse.Namespace) -> int:
    from allmende.coordinator.home import CoordinatorHome

    out(CoordinatorHome(Path(args.data)).load_key().fingerprint)
    return EXIT_OK


def serve(args: argparse.Namespace) -> int:
    from allmende.coordinator.transport.server import serve as run_server

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with run_server(
        Path(args.data), args.listen, metrics_listen=args.metrics, drain_s=args.drain_seconds
    ) as running:
        out(f"coordinator listening on {running.address}")
        out(f"fingerprint {running.coordinator.key.fingerprint}")
        if running.metrics_port:
            host = args.metrics.rpartition(":")[0]
            out(f"metrics on http://{host}:{running.metrics_port}/metrics")
        stop.wait()
        out("shutting down")
    return EXIT_OK


def top(args: argparse.Namespace) -> int:
    from allmende.cli.admin_cmds import read_token
    from allmende.client.connection import CoordinatorClient
    from allmende.coordinator.top.app import TopApp
    from allmende.coordinator.top.remote import RemoteTop

    if not 0.1 <= args.interval <= 3600:
        raise CliError(f"--interval: 0.1 to 3600 seconds, got {args.interval}", EXIT_USAGE)
    with CoordinatorClient(
        args.coordinator, admin_token=read_token(args.admin_token_file), timeout_s=5
    ) as client:
        remote = RemoteTop(client)
        TopApp(remote.fetch, remote.act, args.coordinator, args.interval).run()
    return EXIT_OK
