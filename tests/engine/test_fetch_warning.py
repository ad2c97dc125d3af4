"""A headless volunteer that fetches URL rows says once, first, what that means; one that
does not fetch says nothing of it (against a coordinator address nobody answers on)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from allmende.client.cli.volunteer_cmds import run_headless
from allmende.client.engine import EngineConfig
from allmende.client.settings import FETCH_WARNING


def unanswered(tmp_path: Path, **fields: object) -> EngineConfig:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    return EngineConfig(
        coordinator=f"127.0.0.1:{port}",
        fingerprint="a" * 64,
        home=tmp_path,
        device="cpu",
        exit_when_idle=True,
        give_up_after_s=0.3,
        max_backoff_s=0.1,
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("json_lines", [False, True])
def test_the_warning_comes_once_before_anything_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], json_lines: bool
) -> None:
    assert run_headless(unanswered(tmp_path, fetch_urls=True), json_lines) != 0
    lines = capsys.readouterr().out.splitlines()
    warnings = [line for line in lines if "Fetching URLs" in line]
    assert warnings == lines[:1]
    if json_lines:
        record = json.loads(lines[0])
        assert (record["event"], record["message"]) == ("warning", FETCH_WARNING)
    else:
        assert lines[0].split(" ", 1)[1] == f"event=warning {FETCH_WARNING}"


def test_private_addresses_are_named_when_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = unanswered(tmp_path, fetch_urls=True, allow_private_addresses=True)
    run_headless(config, False)
    first = capsys.readouterr().out.splitlines()[0]
    assert FETCH_WARNING in first and "--allow-private-addresses" in first


def test_no_warning_without_fetching(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_headless(unanswered(tmp_path), False)
    assert "Fetching URLs" not in capsys.readouterr().out
