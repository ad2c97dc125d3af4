"""What `dataset verify --recompute` needs on the researcher's machine, said plainly when it
is missing: the volunteer extra (the compute code and its model runtime). A signed dataset
folder is written here directly, as the assimilator writes one, and the command runs in a
subprocess in which torch cannot be imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from allmende.protocol.manifest import (
    FORMAT,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    encode_manifest,
    merkle_root,
    sha256_file,
    sign_manifest,
)
from allmende.protocol.models import DEFAULT_MODEL, ModelRegistry
from allmende.protocol.signing import SigningKey

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


def signed_folder(folder: Path, key: SigningKey) -> None:
    model = ModelRegistry().get(DEFAULT_MODEL)
    folder.mkdir()
    vector = [1.0] + [0.0] * (model.dims - 1)
    table = pa.table({
        "id": ["a", "b"],
        "text": ["one", "two"],
        "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(vector * 2, pa.float32()), model.dims
        ),
    })
    shard = folder / "part-00000.parquet"
    pq.write_table(table, shard)
    shards = [{"name": shard.name, "rows": 2, "bytes": shard.stat().st_size,
               "sha256": sha256_file(shard)}]
    manifest = encode_manifest({
        "format": FORMAT,
        "job": {"id": "job-test", "kind": "embed-text", "tau": 0.999, "result_dtype": "float16"},
        "model": {"name": model.name, "weights_sha256": model.weights_sha256,
                  "dims": model.dims},
        "rows": 2,
        "shards": shards,
        "merkle_root": merkle_root([s["sha256"] for s in shards]),
        "coordinator_fingerprint": key.fingerprint,
    })
    (folder / MANIFEST_NAME).write_bytes(manifest)
    (folder / SIGNATURE_NAME).write_bytes(sign_manifest(key, manifest))


def test_without_the_volunteer_extra_recompute_says_what_to_install(tmp_path: Path) -> None:
    key = SigningKey.generate()
    folder = tmp_path / "dataset"
    signed_folder(folder, key)
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
