"""The repository stands on its own: nothing in it reads a path outside the checkout.

A fresh clone with nothing beside it must pass its tests (`.ci/run` proves it by cloning into
an empty folder); this catches the habit early, on every run, with a message naming the line.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("client", "coordinator", "protos", "tests", "bench", "packaging", ".ci")
SIBLING = "shared"  # the team's reference folder beside the checkout
# Ways code reaches beside the checkout: a relative path out of it, a folder above the root
# ("ROOT.parent / ...", "parents[3] / ...") or the sibling folder by name.
OUTSIDE = [
    re.compile(r"\.\./" + SIBLING),
    re.compile(r"""(ROOT|root)\.parent\s*/"""),
    re.compile(r"""parent\s*/\s*["']""" + SIBLING),
    re.compile(r"""["']""" + SIBLING + r"""["']\s*/\s*["']data["']"""),
]


def tracked_sources() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "--", *FOLDERS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    keep = (".py", ".sh", ".toml", ".cfg", ".ini", "run")
    this = Path(__file__).resolve()  # names the patterns, so it is left out of its own scan
    paths = [ROOT / name for name in listed if name.endswith(keep) and (ROOT / name).is_file()]
    return [path for path in paths if path.resolve() != this]


def offending_lines(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(pattern.search(line) for pattern in OUTSIDE):
                shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                found.append(f"{shown}:{number}: {line.strip()}")
    return found


def test_no_source_reads_a_path_outside_the_repository() -> None:
    paths = tracked_sources()
    assert any(p.name == "conftest.py" for p in paths)  # the listing found the sources
    assert offending_lines(paths) == []


def test_the_check_sees_each_way_out(tmp_path: Path) -> None:
    # Guards the patterns: each of these reads outside the checkout and must be caught.
    sample = tmp_path / "sample.py"
    lines = [
        f'STSB = ROOT.parent / "{SIBLING}" / "data" / "stsb"',
        f'open("../{SIBLING}/data/stsb/sts-dev.csv")',
        f'Path(__file__).resolve().parents[2].parent / "{SIBLING}" / "data"',
        "CORPUS = root.parent / 'corpora'",
    ]
    sample.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert len(offending_lines([sample])) == len(lines)


def test_the_corpus_the_tests_read_is_in_the_repository() -> None:
    stsb = ROOT / "tests" / "data" / "stsb"
    for name in ("sts-dev.csv", "sts-train.csv", "LICENSE.txt", "readme.txt"):
        assert (stsb / name).is_file(), f"tests/data/stsb/{name} is missing"
