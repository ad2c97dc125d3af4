"""The wheel as a user installs it: built from this tree, installed into a fresh virtual
environment without touching the network, and run from there (`allmende --version`,
`allmende volunteer --help`, the demo's corpus and photographs in place, the clip-filter
demo). Slow: it builds and installs a package."""

from __future__ import annotations

import importlib.util
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    # Without this tree on the path: only what the wheel installed may answer.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels]
    if importlib.util.find_spec("hatchling") is not None:
        build.append("--no-build-isolation")  # the backend is here: nothing to fetch
    run(*build, ROOT, env=env)
    [wheel] = wheels.glob("allmende-*-py3-none-any.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, env=env)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        wheel, env=env)
    # The dependencies come from the environment running this test (as
    # --system-site-packages would bring a system's): a .pth file lists its site-packages.
    # Its own .pth files are not processed, so its editable install of allmende is not seen.
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                       env=env).stdout.strip())
    deps = [p for p in site.getsitepackages() if Path(p) != purelib]
    (purelib / "zz-test-dependencies.pth").write_text("\n".join(deps) + "\n")

    located = run(python, "-c", "import allmende.cli, allmende.client, allmende.coordinator, "
                  "allmende.protocol as p; print(allmende.cli.__file__); print(p.__file__)",
                  env=env).stdout.split()
    assert all(path.startswith(str(purelib)) for path in located), located
    # The demo's bundled corpus travels with its package (allmende.demo, data files included).
    corpus = run(python, "-c", "import importlib.resources as r; print(r.files('allmende.demo')"
                 ".joinpath('data', 'demo-corpus.jsonl'))", env=env).stdout.strip()
    assert corpus.startswith(str(purelib)) and Path(corpus).is_file(), corpus
    # So do the clip-filter demo's photographs, their captions and their licences' README.
    bundled = ROOT / "coordinator" / "allmende" / "demo" / "data" / "images"
    installed = Path(corpus).parent / "images"
    assert sorted(p.name for p in installed.iterdir()) == sorted(p.name for p in bundled.iterdir())
    command = venv / "bin" / "allmende"
    assert command.exists()  # the console script
    version = run(command, "--version", env=env).stdout
    assert version.startswith(f"allmende {wheel.name.split('-')[1]} (Python ")
    help_text = run(command, "volunteer", "--help", env=env).stdout
    assert help_text.startswith("usage: allmende volunteer")
    for flag in ("--headless", "--coordinator", "--fingerprint", "--exit-when-idle"):
        assert flag in help_text
    assert sysconfig.get_path("purelib") != str(purelib)  # it really was another environment
    # The installed clip-filter demo runs on what the wheel holds: photographs, tiny CLIP.
    demo = run(command, "demo", "--kind", "clip-filter", "--headless", "--dir", tmp_path / "demo",
               env=env).stdout
    assert "dataset pulled and verified: 16 rows" in demo, demo
