"""The layer rules of DESIGN.md ("Layout") are import-linter contracts in pyproject.toml:
this checkout keeps every one, and every one catches the import it exists to forbid.

Both run tests/importcheck.py in a subprocess, which analyses this checkout's sources only.
The companion test adds one forbidden import at a time to the real import graph (no file
is touched) and expects the named contract to break, so a contract that names the wrong
modules, or has been loosened until it checks nothing, fails here."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "importcheck.py"

# An import each contract forbids -> the start of the contract's name that must break.
VIOLATIONS = {
    "allmende.client.engine.runner:allmende.coordinator.domain.coordinator": (
        "client and coordinator never import each other: the client"
    ),
    "allmende.coordinator.top.remote:allmende.client.connection": (
        "client and coordinator never import each other: the coordinator"
    ),
    "allmende.api.client:allmende.client.connection": "protocol (protos/",
    "allmende.cli.main:allmende.coordinator.cli.commands": "protocol (protos/",
    "allmende.research.recompute:allmende.client.tasks.embed_text": "protocol (protos/",
    "allmende.research.folder:allmende.cli.common": "protos/ layers",
    "allmende.protocol.wire:allmende.api.client": "protos/ layers",
    "allmende.coordinator.cli.commands:allmende.demo.run": "the demo",
    "allmende.client.engine.runner:allmende.client.tui.state": "the volunteer: tui -> engine",
    # Through a module that is no part of the engine: indirect imports count here.
    "allmende.client.probes:textual": "the engine cannot reach the UI",
    "allmende.client.fetch.http:allmende.client.engine.config": "the URL fetcher",
    "allmende.coordinator.domain.admin:allmende.coordinator.transport.server": (
        "the coordinator: composition root"
    ),
    "allmende.coordinator.transport.auth:allmende.coordinator.store.sql": (
        "transport talks to the domain"
    ),
    "allmende.coordinator.transport.server:allmende.coordinator.home": (
        "transport talks to the domain"
    ),
    "allmende.coordinator.domain.trust:sqlalchemy": "the domain imports no gRPC",
    "allmende.coordinator.domain.admin:grpc": "the domain imports no gRPC",
    "allmende.coordinator.metrics:textual": "textual only",
    "allmende.client.engine.compute:torch": "torch, transformers and onnxruntime",
    "allmende.client.probes:onnxruntime": "torch, transformers and onnxruntime",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def contract_names() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [c["name"] for c in config["tool"]["importlinter"]["contracts"]]


def test_the_sources_keep_every_import_contract() -> None:
    done = run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Contracts: {len(contract_names())} kept, 0 broken." in done.stdout


def test_every_contract_catches_an_import_it_forbids() -> None:
    done = run(*VIOLATIONS)
    assert done.returncode == 0, done.stdout + done.stderr
    broken: dict[str, list[str]] = json.loads(done.stdout)
    assert broken["as it is"] == []  # so each break below is the added import's doing
    for violation, expected in VIOLATIONS.items():
        importer, imported = violation.split(":")
        names = broken[f"{importer} -> {imported}"]
        assert any(name.startswith(expected) for name in names), (violation, names)
    # and no contract goes untested here
    for name in contract_names():
        assert any(name.startswith(expected) for expected in VIOLATIONS.values()), name
