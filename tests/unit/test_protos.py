"""The checked-in generated protobuf code matches what `protos/regen.py` generates now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_has_not_drifted() -> None:
    done = subprocess.run(
        [sys.executable, "protos/regen.py", "--check"], cwd=ROOT, capture_output=True,
        text=True, timeout=120,
    )
    assert done.returncode == 0, f"run `python protos/regen.py`:\n{done.stdout}{done.stderr}"


def test_generated_stubs_are_checked_in() -> None:
    v1 = ROOT / "protos" / "allmende" / "v1"
    for proto in v1.glob("*.proto"):
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert (v1 / f"{proto.stem}{suffix}").is_file(), f"{proto.stem}{suffix} missing"
    assert list(v1.glob("*.proto")), "no .proto files found"
