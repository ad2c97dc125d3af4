"""The CLI's own errors, as an operator meets them: a mistyped flag, a taken port, a wrong
token for `coordinator top`, and `--version`. In-process through `main` where the message
is all that matters; in a subprocess where gRPC's C core could write to stderr itself."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from allmende.cli.main import main
from allmende.coordinator.app import RunningCoordinator
from allmende.coordinator.home import CoordinatorHome
from tests.integration.test_cli_errors import free_port

ALLMENDE = [sys.executable, "-m", "allmende.cli"]


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run argv, which must be refused as usage (exit 2); return stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another socket listens on, for as long as the test runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


# ---------------------------------------------------------------- mistyped flags

ADMIN = ["--coordinator", "127.0.0.1:1", "--admin-token-file", "t"]


@pytest.mark.parametrize(
    ("argv", "usage", "needles"),
    [
        pytest.param(
            ["job", "create", *ADMIN, "--input", "x.jsonl", "--redundnacy", "3"],
            "usage: allmende job create", ("unknown flag --redundnacy",
                                           "did you mean --redundancy?"), id="redundnacy"),
        pytest.param(
            # --input is missing *because* of the typo: the typo is what is reported.
            ["job", "create", *ADMIN, "--inptu", "x.jsonl"],
            "usage: allmende job create", ("unknown flag --inptu", "did you mean --input?"),
            id="inptu-hides-no-more"),
        pytest.param(
            ["volunteers", "ban", "1a2b3c", *ADMIN, "--reasn=copied"],
            "usage: allmende volunteers ban", ("unknown flag --reasn", "did you mean --reason?"),
            id="flag-with-equals"),
        pytest.param(
            ["coordinator", "serve", "--data", "d", "--drain-second", "5", "--lisen", "x:1"],
            "usage: allmende coordinator serve", ("unknown flag --lisen", "--listen"),
            id="abbreviation-kept-typo-named"),
        pytest.param(
            ["dataset", "verify", "folder", "--fingerprint", "f", "--jsno"],
            "usage: allmende dataset verify", ("unknown flag --jsno", "did you mean --json?"),
            id="dataset-verify"),
    ],
)
def test_a_mistyped_flag_is_named_with_its_subcommands_usage(
    capsys: pytest.CaptureFixture[str], argv: list[str], usage: str, needles: tuple[str, ...]
) -> None:
    err = usage_error(capsys, *argv)
    assert err.startswith(usage), err
    assert "usage: allmende [-h]" not in err  # not the top-level usage
    assert "required" not in err
    for needle in needles:
        assert needle in err, err


def test_flags_argparse_accepts_are_not_called_unknown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An unambiguous abbreviation is a known flag; a missing required flag is still said."""
    err = usage_error(capsys, "job", "create", "--coordinator", "127.0.0.1:1", "--inp", "x")
    assert "the following arguments are required: --admin-token-file" in err
    assert "unknown flag" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert re.fullmatch(r"allmende \S+ \(Python 3\.\d+\.\d+\)\n", capsys.readouterr().out)


# ---------------------------------------------------------------- a taken port


def test_serve_on_a_taken_port_says_address_already_in_use(
    coordinator_home: CoordinatorHome, taken_port: int
) -> None:
    address = f"127.0.0.1:{taken_port}"
    done = subprocess.run(
        [*ALLMENDE, "coordinator", "serve", "--data", str(coordinator_home.root), "--listen",
         address],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("allmende: --listen"), done.stderr
    assert "address already in use" in done.stderr and address in done.stderr
    assert "add_port" not in done.stderr  # no raw gRPC log line before it
    assert len(done.stderr.strip().splitlines()) == 1


def test_metrics_on_a_taken_port_says_address_already_in_use(
    capsys: pytest.CaptureFixture[str], coordinator_home: CoordinatorHome, taken_port: int
) -> None:
    address = f"127.0.0.1:{taken_port}"
    code = main(["coordinator", "serve", "--data", str(coordinator_home.root), "--listen",
                 "127.0.0.1:0", "--metrics", address])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--metrics" in err and "address already in use" in err and address in err


# ---------------------------------------------------------------- coordinator top


def test_top_with_a_wrong_token_exits_1_with_the_reason(
    capsys: pytest.CaptureFixture[str], coordinator: RunningCoordinator, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n")
    code = main(["coordinator", "top", "--coordinator", coordinator.address,
                 "--admin-token-file", str(wrong)])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "UNAUTHENTICATED" in captured.err and "admin token" in captured.err
    assert "not-the-token" not in captured.err
    assert captured.out == ""  # no dashboard was drawn


def test_top_against_nothing_exits_4(capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text("token\n")
    address = f"127.0.0.1:{free_port()}"
    code = main(["coordinator", "top", "--coordinator", address, "--admin-token-file",
                 str(token)])
    err = capsys.readouterr().err
    assert code == 4, err
    assert "unreachable" in err and address in err
