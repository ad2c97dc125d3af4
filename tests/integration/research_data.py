"""Real datasets for the researcher's tools: a coordinator in-process on port 0, real
volunteer engines with the real models, the dataset pulled as a researcher pulls it; and a
way to publish an edited copy signed by the same coordinator key (a forged row that every
checksum and the signature vouch for, which only recomputing can catch)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from allmende.api.dataset import pull
from allmende.client.connection import CoordinatorClient
from allmende.client.engine import EngineConfig, VolunteerEngine
from allmende.coordinator.app import serve
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol.manifest import (
    SIGNATURE_NAME,
    encode_manifest,
    merkle_root,
    sha256_file,
    sign_manifest,
)
from allmende.protocol.models import ModelRegistry
from allmende.protocol.signing import SigningKey
from allmende.research.folder import manifest_path, shard_path
from allmende.v1 import allmende_pb2 as pb
from tests.conditions import wait_until
from tests.conftest import job_requests


def make_dataset(
    root: Path, computer: object, texts: list[str], ids: list[str], **spec: object
) -> tuple[Path, SigningKey]:
    """Run a whole job with two real volunteers; return the pulled folder and the
    coordinator's signing key."""
    return run_job(root, job_requests(texts, ids, redundancy=2, **spec), computer)


def run_job(
    root: Path,
    requests: list[pb.CreateJobRequest],
    computer: object,
    registry: ModelRegistry | None = None,
) -> tuple[Path, SigningKey]:
    """Create the job `requests` describe on a fresh coordinator (with `registry`'s models),
    run two real volunteers until it completes, and pull its dataset; return the folder and
    the coordinator's signing key."""
    home = CoordinatorHome(root / "coordinator")
    home.init()
    with serve(home.root, "127.0.0.1:0", drain_s=0.2, registry=registry) as running:
        key = running.coordinator.key
        with CoordinatorClient(running.address, admin_token=home.load_token()) as admin:
            created = admin.create_job(requests)

            def volunteer(index: int) -> None:
                config = EngineConfig(
                    coordinator=running.address,
                    fingerprint=key.fingerprint,
                    home=root / f"volunteer-{index}",
                    device="cpu",
                    exit_when_idle=True,
                    give_up_after_s=30,
                )
                engine = VolunteerEngine(config, computer=computer, registry=registry)  # type: ignore[arg-type]
                engine.run()

            threads = [threading.Thread(target=volunteer, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=600)
            wait_until(
                lambda: admin.get_job(created.job_id).state == "complete",
                "the job to complete",
                timeout_s=120,
            )
            folder = root / "dataset"
            pull(admin, created.job_id, key.fingerprint, folder)
    return folder, key


def republish(
    folder: Path, key: SigningKey, edit: Callable[[dict[str, list[object]]], None]
) -> None:
    """Edit the rows of `folder`'s first shard in place (`edit` gets them as columns) and
    sign a manifest that vouches for the edited shard, with the coordinator's own key."""
    path = manifest_path(folder)
    manifest = json.loads(path.read_bytes())
    entry = manifest["shards"][0]
    shard = shard_path(folder, entry["name"])
    table = pq.read_table(shard)
    columns = table.to_pydict()
    edit(columns)
    edited = pa.Table.from_pydict(columns, schema=table.schema)
    pq.write_table(edited, shard, compression="zstd")
    entry |= {"bytes": shard.stat().st_size, "sha256": sha256_file(shard), "rows": edited.num_rows}
    manifest["rows"] = sum(s["rows"] for s in manifest["shards"])
    manifest["merkle_root"] = merkle_root([s["sha256"] for s in manifest["shards"]])
    encoded = encode_manifest(manifest)
    path.write_bytes(encoded)
    path.with_name(SIGNATURE_NAME).write_bytes(sign_manifest(key, encoded))
