"""`allmende volunteer` without a terminal: settings from file, environment and flags; one
line per state change (no telemetry); JSON with --json; usage errors name what is missing."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from allmende.cli.main import main
from allmende.coordinator.app import RunningCoordinator
from allmende.protocol.signing import SigningKey


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = main(["volunteer", *argv])
    finally:
        for signum, handler in previous.items():
            assert signal.getsignal(signum) == handler  # the handlers are put back
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_without_a_coordinator_it_says_how_to_set_one_up(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ALLMENDE_COORDINATOR", raising=False)
    code, out, err = run(capsys, "--headless", "--home", str(tmp_path))
    assert code == 2 and out == ""
    assert "--coordinator" in err and "ALLMENDE_COORDINATOR" in err


def test_a_bad_variable_is_named(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALLMENDE_BATCH_SIZE", "many")
    code, _, err = run(capsys, "--headless", "--home", str(tmp_path))
    assert code == 2 and "ALLMENDE_BATCH_SIZE: expected a whole number, got 'many'" in err


def test_settings_from_the_environment_and_the_home_file_json_lines_without_telemetry(
    capsys: pytest.CaptureFixture[str],
    coordinator: RunningCoordinator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = SigningKey.generate().fingerprint
    (tmp_path / "volunteer.toml").write_text(f'fingerprint = "{wrong}"\n')
    monkeypatch.setenv("ALLMENDE_COORDINATOR", coordinator.address)
    code, out, err = run(capsys, "--home", str(tmp_path), "--json", "--exit-when-idle")
    assert code == 3
    assert "not a terminal; running headless" in err
    events = [json.loads(line) for line in out.splitlines()]
    # the machine's sensors once, then no hardware samples and no rtt lines
    assert [e["event"] for e in events] == ["hardware", "stopped"]
    assert wrong in events[-1]["reason"] and events[-1]["spooled"] == 0
