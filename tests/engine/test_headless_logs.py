"""Headless logs a fleet operator can read: ISO timestamps on every line, idle lines that
say nothing new rate-limited, a display name given as a flag saved like the TUI's, and
`--exit-when-idle` against a coordinator that never answers giving up with a reason."""

from __future__ import annotations

import json
import socket
import threading
from datetime import datetime
from pathlib import Path

import pytest

from allmende.cli.logs import JsonFormatter, resolve_level
from allmende.cli.main import main
from allmende.client.cli.volunteer_cmds import HeadlessLog
from allmende.client.connection import CoordinatorClient
from allmende.client.engine import EngineConfig, VolunteerEngine
from allmende.client.engine import events as ev
from allmende.client.probes import GpuSample, HardwareSample
from allmende.coordinator.app import RunningCoordinator
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol.errors import InvalidArgument
from tests.conftest import job_requests


def parse_iso(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_every_line_has_an_iso_timestamp_and_idle_lines_are_rate_limited(
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = [0.0]
    log = HeadlessLog(json_lines=False, clock=lambda: now[0])
    for second in range(0, 30, 2):  # the engine asks every 2 s while idle
        now[0] = second
        log(ev.Idle(True, 2.0))
    log(ev.RoundTrip(3.0))  # telemetry: never a line
    now[0] = 40
    log(ev.Idle(False, 2.0))  # something new: logged at once
    now[0] = 50
    log(ev.Idle(False, 2.0))
    now[0] = 101
    log(ev.Idle(False, 2.0))  # a minute on: logged again, so the log shows it is alive
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    for line in lines:
        stamp, rest = line.split(" ", 1)
        parse_iso(stamp)
        assert rest.startswith("event=idle")

    # the machine's sensors, once; "none" where there are none
    bare = HardwareSample(at=0, cpu_count=2)
    hot = HardwareSample(
        at=2, cpu_count=2, cpu_temperature_c=71.0, gpus=(GpuSample(0, "G", temperature_c=66),)
    )
    log(ev.HardwareSampled(bare))
    log(ev.HardwareSampled(hot))
    [said] = capsys.readouterr().out.splitlines()
    assert said.split(" ", 1)[1] == "event=hardware cpus=2 cpu_temperature=none gpus=none"
    sensors = HeadlessLog(json_lines=True)
    sensors(ev.HardwareSampled(hot))
    record = json.loads(capsys.readouterr().out)
    assert (record["cpu_temperature"], record["gpus"]) == ("71C", "cuda:0:66C:energy-estimated")

    # quitting mid-unit: the stop line, and a sentence on what went back to the coordinator
    log(ev.Stopped(0, "stopped", 1, 600, 0, 2, 384, 44.9))
    captured = capsys.readouterr()
    assert "handed_back=2 handed_back_rows=384" in captured.out
    assert captured.err == (
        "allmende volunteer: 2 unit(s) handed back to the coordinator "
        "(384 rows computed in 44.9 s, given up)\n"
    )

    json_log = HeadlessLog(json_lines=True)
    json_log(ev.Paused("outside the schedule (03:00-04:00); resuming at 03:00"))
    [line] = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    parse_iso(record["ts"])
    assert record["event"] == "paused"


def test_log_level_and_json_log_lines() -> None:
    import logging

    assert resolve_level(None, False, {}) == "warning"
    assert resolve_level(None, True, {}) == "debug"
    assert resolve_level(None, False, {"ALLMENDE_LOG_LEVEL": "INFO"}) == "info"
    assert resolve_level("error", True, {"ALLMENDE_LOG_LEVEL": "info"}) == "error"
    with pytest.raises(InvalidArgument, match="ALLMENDE_LOG_LEVEL"):
        resolve_level(None, False, {"ALLMENDE_LOG_LEVEL": "loud"})
    record = logging.LogRecord(
        "allmende.coordinator", logging.INFO, "x", 1, "served %d", (3,), None
    )
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["logger"], line["message"]) == (
        "info",
        "allmende.coordinator",
        "served 3",
    )
    parse_iso(line["ts"])


def test_a_bad_log_level_variable_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ALLMENDE_LOG_LEVEL", "loud")
    assert main(["coordinator", "fingerprint", "--data", str(tmp_path)]) == 2
    assert "ALLMENDE_LOG_LEVEL" in capsys.readouterr().err


def test_a_name_given_as_a_flag_is_saved_like_the_tui_does(
    capsys: pytest.CaptureFixture[str], coordinator: RunningCoordinator, tmp_path: Path
) -> None:
    fingerprint = coordinator.coordinator.key.fingerprint
    code = main(
        [
            "volunteer", "--headless", "--json", "--exit-when-idle", "--home", str(tmp_path),
            "--coordinator", coordinator.address, "--fingerprint", fingerprint,
            "--name", "rack-7 node 3", "--device", "cpu",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    saved = (tmp_path / "volunteer.toml").read_text()
    assert 'display_name = "rack-7 node 3"' in saved
    assert "coordinator" not in saved  # only the name: other flags stay one-off
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(parse_iso(line["ts"]) for line in lines)


def test_exit_when_idle_gives_up_on_a_coordinator_that_never_answers(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    events: list[ev.Event] = []
    config = EngineConfig(
        coordinator=f"127.0.0.1:{silent.getsockname()[1]}",
        fingerprint="a" * 64,
        home=tmp_path,
        device="cpu",
        exit_when_idle=True,
        give_up_after_s=1.0,
        max_backoff_s=0.2,
    )
    try:
        code = VolunteerEngine(config, on_event=events.append).run()
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        silent.close()
    stopped = events[-1]
    assert isinstance(stopped, ev.Stopped)
    assert code == stopped.exit_code == 4
    assert "unreachable; gave up after 1 s of retrying" in stopped.reason


@pytest.mark.slow
def test_headless_json_after_a_completed_job_matches_volunteers_list(
    capsys: pytest.CaptureFixture[str],
    coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome,
    admin: CoordinatorClient,
    tmp_path: Path,
) -> None:
    """The check a new user makes: the volunteer's own --json lines report the valid count
    and credit that `allmende volunteers list` shows for it."""
    texts = [f"a sentence for the acceptance check, number {i}" for i in range(60)]
    admin.create_job(job_requests(texts, redundancy=1, unit_size=20, gold_fraction=0.0))
    fingerprint = coordinator.coordinator.key.fingerprint
    code = main(
        [
            "volunteer", "--headless", "--json", "--exit-when-idle", "--home", str(tmp_path),
            "--coordinator", coordinator.address, "--fingerprint", fingerprint, "--device", "cpu",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines()]
    verdicts = [line for line in lines if line["event"] == "result.verdict"]
    assert [v["verdict"] for v in verdicts] == ["valid"] * 3
    totals = [line for line in lines if line["event"] == "credit"][-1]
    token = str(coordinator_home.root / "admin.token")
    assert main(
        ["volunteers", "list", "--json", "--coordinator", coordinator.address,
         "--admin-token-file", token]
    ) == 0  # fmt: skip
    [listed] = json.loads(capsys.readouterr().out)
    assert (totals["results_valid"], totals["credit"]) == (
        listed["results_valid"],
        listed["credit"],
    ) == (3, sum(v["credit"] for v in verdicts))
    assert totals["credit"] > 0
