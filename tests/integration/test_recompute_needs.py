"""What `dataset verify --recompute` needs on the researcher's machine, said plainly when it
is missing: the volunteer extra (the compute code and its model runtime). A signed dataset
folder is written here directly, as the assimilator writes one, and the command runs in a
subprocess in which torch cannot be imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.research_data import make_dataset

ROOT = Path(__file__).resolve().parents[2]
NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, NoTorch())
from allmende.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_the_volunteer_extra_recompute_says_what_to_install(
    tmp_path: Path, shared_computer: object
) -> None:
    texts = ["one sentence", "another sentence"]
    folder, key = make_dataset(tmp_path, shared_computer, texts, ["a", "b"], unit_size=2)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        str(ROOT / part) for part in ("client", "coordinator", "protos", "")
    )
    args = ["dataset", "verify", str(folder), "--fingerprint", key.fingerprint]
    plain = subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True,
                           text=True, env=env, timeout=120)
    assert plain.returncode == 0, plain.stderr  # checking signatures needs no torch
    done = subprocess.run([sys.executable, "-c", NO_TORCH, *args, "--recompute", "1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "computing embed-text needs the volunteer's compute code" in done.stderr
    assert "pip install 'allmende[volunteer]'" in done.stderr
    assert "Traceback" not in done.stderr
