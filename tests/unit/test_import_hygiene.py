"""Layer rules that imports must keep (DESIGN.md): checked in a fresh interpreter each.

The engine never imports the UI or torch at import time; the shared protocol never imports
torch, textual, SQLAlchemy or the coordinator.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def loaded_after(imports: str) -> set[str]:
    """Top-level names of every module loaded after running `imports` in a fresh Python."""
    code = (
        f"import sys, json\n{imports}\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def roots(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_the_check_itself_sees_a_loaded_module() -> None:
    # Guards the helper: if it saw nothing, the tests below could never fail.
    assert "allmende.protocol.codec" in loaded_after("import allmende.protocol.codec")
    assert "sqlalchemy" in roots(loaded_after("import sqlalchemy"))


def test_engine_imports_neither_textual_nor_torch() -> None:
    loaded = loaded_after("import allmende.client.engine")
    assert "allmende.client.engine" in loaded
    assert "textual" not in roots(loaded)
    assert "torch" not in roots(loaded)


@pytest.mark.parametrize(
    "forbidden", ["torch", "textual", "sqlalchemy", "allmende.coordinator"]
)
def test_protocol_imports_none_of_the_heavy_or_server_side_packages(forbidden: str) -> None:
    loaded = loaded_after(
        "import allmende.protocol.codec, allmende.protocol.signing, allmende.protocol.manifest"
    )
    assert not {m for m in loaded if m == forbidden or m.startswith(forbidden + ".")}
