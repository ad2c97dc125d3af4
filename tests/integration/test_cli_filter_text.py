"""`job create --kind filter-text` and its rule flags through the CLI, in-process: the flags
come from the kind's declaration, bad values exit 2 naming the flag and create nothing, and
`job status` shows the rule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from allmende.cli.main import main
from allmende.coordinator.app import RunningCoordinator
from allmende.coordinator.home import CoordinatorHome
from tests.integration.rawclient import RawAdmin

TEXTS = ["Guten Morgen, wie geht es dir?", "Good morning, how are you?", "Bonjour à tous"]


@pytest.fixture
def raw_admin(coordinator: RunningCoordinator,
              coordinator_home: CoordinatorHome) -> Iterator[RawAdmin]:
    admin = RawAdmin(coordinator.address, coordinator_home.load_token())
    yield admin
    admin.close()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": f"t{i}", "text": t}) for i, t in enumerate(TEXTS)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def create(coordinator: RunningCoordinator, home: CoordinatorHome, corpus: Path,
           *extra: str) -> list[str]:
    return ["job", "create", "--coordinator", coordinator.address, "--admin-token-file",
            str(home.token_path), "--input", str(corpus), *extra]


def test_a_filter_text_job_with_its_rule_and_its_status(
    capsys: pytest.CaptureFixture[str], coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome, corpus: Path,
) -> None:
    code, out, err = run_cli(capsys, *create(
        coordinator, coordinator_home, corpus, "--kind", "filter-text",
        "--keep-languages", "de,en", "--min-language-score", "0.5", "--max-chars", "200"))
    assert code == 0, err
    job_id = out.strip().splitlines()[-1]
    code, out, err = run_cli(capsys, "job", "status", job_id, "--coordinator",
                             coordinator.address, "--token-file", str(coordinator_home.token_path))
    assert code == 0, err
    assert "task      filter-text with lid-176" in out  # the kind's own model by default
    assert "keep      rows with keep_languages de,en, max_chars 200, min_language_score 0.5" in out
    code, out, _ = run_cli(capsys, "job", "status", job_id, "--json", "--coordinator",
                           coordinator.address, "--token-file", str(coordinator_home.token_path))
    assert json.loads(out)["rule"] == {
        "keep_languages": "de,en", "max_chars": "200", "min_language_score": "0.5"
    }


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (("--kind", "filter-text", "--keep-languages", "de,klingon"),
         ("--keep-languages", "'klingon'", "lid-176")),
        (("--kind", "filter-text", "--min-language-score", "1.01"),
         ("--min-language-score", "0 to 1", "'1.01'")),
        (("--kind", "filter-text", "--min-chars", "ten"), ("--min-chars", "whole number")),
        (("--kind", "filter-text", "--min-chars", "9", "--max-chars", "3"),
         ("--max-chars", "at least min_chars")),
        (("--keep-languages", "de"), ("--keep-languages", "filter-text jobs", "embed-text")),
        (("--kind", "filter-text", "--model", "all-MiniLM-L6-v2"),
         ("INVALID_ARGUMENT", "model", "filter-text")),
    ],
)
def test_bad_rule_flags_exit_2_naming_the_flag_and_create_nothing(
    capsys: pytest.CaptureFixture[str], coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome, raw_admin: RawAdmin, corpus: Path,
    extra: tuple[str, ...], needles: tuple[str, ...],
) -> None:
    code, _, err = run_cli(capsys, *create(coordinator, coordinator_home, corpus, *extra))
    assert code == 2, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert raw_admin.job_ids() == []
