"""The systemd units and environment files in packaging/systemd: `systemd-analyze verify`
accepts them, they are hardened as the README says, the stop waits for the coordinator's
drain, and every setting their environment files set is one the program accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from allmende.cli.main import build_parser
from allmende.client.settings import KEYS, load_settings

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "packaging" / "systemd"
INSTALLED = "/opt/allmende/bin/allmende"  # where the units expect the command (README)
SERVICES = ["allmende-coordinator.service", "allmende-volunteer.service"]


def directives(unit: Path) -> dict[str, list[str]]:
    """Key -> every value it is given in the unit (comments and sections dropped)."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pairs[key] = value
    return pairs


@pytest.mark.parametrize("service", SERVICES)
def test_systemd_analyze_verify_accepts_the_unit(service: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not found: install Debian's systemd package "
                    "(packaging/test.sh does, as root with apt-get)")
    # verify checks that ExecStart's program exists; this machine has no /opt/allmende, so
    # a copy of the unit names a stand-in. Every other line is verified as shipped.
    stand_in = tmp_path / "allmende"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    text = (UNITS / service).read_text()
    assert INSTALLED in text
    copy = tmp_path / service
    copy.write_text(text.replace(INSTALLED, str(stand_in)))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    # Unknown or misspelt directives are only warned about; they must not be there either.
    assert done.stdout + done.stderr == "", done.stdout + done.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_the_unit_is_hardened_and_restarts_on_failure(service: str) -> None:
    d = directives(UNITS / service)
    assert d["User"] == ["allmende"] and d["Group"] == ["allmende"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["ProtectHome"] == ["yes"]
    assert d["CapabilityBoundingSet"] == [""]
    assert d["Restart"] == ["on-failure"]
    assert d["KillSignal"] == ["SIGTERM"]
    assert "StateDirectory" in d  # the one place it may write
    [start] = d["ExecStart"]
    assert start.startswith(INSTALLED + " ")


def test_the_coordinator_stop_outlasts_its_drain() -> None:
    d = directives(UNITS / "allmende-coordinator.service")
    [start] = d["ExecStart"]
    match = re.search(r"--drain-seconds (\d+)", start)
    assert match, start
    drain = int(match.group(1))
    [timeout] = d["TimeoutStopSec"]
    assert int(timeout) >= drain + 10  # the drain, then the last transactions


def test_the_coordinator_command_line_parses_with_the_shipped_settings() -> None:
    d = directives(UNITS / "allmende-coordinator.service")
    env = env_file(UNITS / "allmende-coordinator.env")
    [env_path] = d["EnvironmentFile"]
    assert env_path == "/etc/allmende/coordinator.env"
    for start in (d["ExecStart"][0], d["ExecStartPre"][0].split("exec ", 1)[1].rstrip("'")):
        line = start.replace("%S", "/var/lib")
        for name in re.findall(r"\$\{?(\w+)\}?", line):
            assert name in env, f"{name} is used but not in allmende-coordinator.env"
            line = re.sub(r"\$\{?" + name + r"\}?", env[name], line)
        args = build_parser().parse_args(line.split()[1:])
        assert args.data == "/var/lib/allmende-coordinator"
    assert env["ALLMENDE_LISTEN"].endswith(":50051")


def test_the_volunteer_environment_file_holds_settings_the_volunteer_accepts(
    tmp_path: Path,
) -> None:
    env = env_file(UNITS / "allmende-volunteer.env")
    known = {key.env for key in KEYS}
    assert set(env) <= known, set(env) - known
    commented = re.findall(r"^#(ALLMENDE_\w+)=(.*)$", (UNITS / "allmende-volunteer.env")
                           .read_text(), flags=re.M)
    assert {name for name, _ in commented} <= known
    env |= dict(commented)  # the commented examples must be valid values too
    env["ALLMENDE_FINGERPRINT"] = "ab" * 32  # the one value an operator must fill in
    settings = load_settings(tmp_path / "volunteer.toml", env).settings
    assert settings.configured
    d = directives(UNITS / "allmende-volunteer.service")
    assert d["EnvironmentFile"] == ["/etc/allmende/volunteer.env"]
    assert "--headless" in d["ExecStart"][0]
    assert "3" in d["RestartPreventExitStatus"][0].split()  # a wrong fingerprint: no loop
