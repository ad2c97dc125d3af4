"""The CLI as a new user drives it: every command a separate process, real model, real files."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import read_stsb

ALLMENDE = [sys.executable, "-m", "allmende.cli"]


def run(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*ALLMENDE, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"allmende {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    data = tmp_path / "coord"
    init = run("coordinator", "init", "--data", str(data))
    fingerprint = init.stdout.strip().splitlines()[-1]
    assert run("coordinator", "fingerprint", "--data", str(data)).stdout.strip() == fingerprint
    assert (data / "coordinator.key").stat().st_mode & 0o777 == 0o600
    server = subprocess.Popen(
        [*ALLMENDE, "coordinator", "serve", "--data", str(data), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    match = re.search(r"listening on (\S+)", line)
    assert match, f"unexpected first line from serve: {line!r}"
    try:
        yield data, match.group(1), fingerprint
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0


@pytest.mark.slow
def test_the_cli_runs_a_job_end_to_end(served: tuple[Path, str, str], tmp_path: Path) -> None:
    data, address, fingerprint = served
    sentences = [s for pair in read_stsb("train")[:150] for s in pair[:2]]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"t{i}", "text": s}) + "\n"
                              for i, s in enumerate(sentences)))
    created = run("job", "create", "--coordinator", address, "--admin-token-file",
                  str(data / "admin.token"), "--kind", "embed-text", "--model",
                  "all-MiniLM-L6-v2", "--input", str(corpus), "--unit-size", "64",
                  "--name", "cli test")
    job_id = created.stdout.strip().splitlines()[-1]
    assert job_id.startswith("job-")

    env = {**os.environ, "ALLMENDE_TEST": "1"}
    volunteers = [
        subprocess.Popen(
            [*ALLMENDE, "volunteer", "--coordinator", address, "--fingerprint", fingerprint,
             "--headless", "--exit-when-idle", "--device", "cpu", "--json",
             "--home", str(tmp_path / f"v{n}"), "--threads", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for n in range(2)
    ]
    for volunteer in volunteers:
        out, err = volunteer.communicate(timeout=300)
        assert volunteer.returncode == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        # the machine's sensors, then the connection; every line stamped
        assert [e["event"] for e in events[:2]] == ["hardware", "connected"]
        assert all(e["ts"].endswith("Z") for e in events)
        assert events[-1]["event"] == "stopped" and events[-1]["exit_code"] == 0
        assert any(e["event"] == "result.submitted" for e in events)
        assert (tmp_path / f"v{volunteers.index(volunteer)}" / "volunteer.key").exists()

    status = json.loads(run("job", "status", job_id, "--coordinator", address, "--json").stdout)
    for _ in range(100):
        if status["state"] == "complete":
            break
        status = json.loads(run("job", "status", job_id, "--coordinator", address,
                                "--json").stdout)
    assert status["state"] == "complete"
    assert status["units"]["accepted"] == status["units"]["total"]
    listed = json.loads(run("job", "list", "--coordinator", address, "--json").stdout)
    assert [j["job_id"] for j in listed] == [job_id]

    out = tmp_path / "pulled"
    run("dataset", "pull", job_id, "--coordinator", address, "--fingerprint", fingerprint,
        "--out", str(out))
    assert (out / "_allmende" / "manifest.json").exists()
    assert run("dataset", "verify", str(out), "--fingerprint", fingerprint).returncode == 0
    table = pq.ParquetDataset(sorted(str(p) for p in out.glob("data/*.parquet"))).read()
    assert table.schema.field("id").type == "string"
    assert sorted(table.column("id").to_pylist()) == sorted(f"t{i}" for i in range(len(sentences)))
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)

    # A researcher with a copy that was tampered with is told, and the exit code says so.
    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    shard = next(tampered.glob("data/*.parquet"))
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    shard.write_bytes(bytes(raw))
    bad = run("dataset", "verify", str(tampered), "--fingerprint", fingerprint, check=False)
    assert bad.returncode == 1 and "sha256" in bad.stderr

    wrong = "0" * 64
    refused = run("dataset", "verify", str(out), "--fingerprint", wrong, check=False)
    assert refused.returncode == 1 and "does not match the pinned" in refused.stderr


def test_txt_input_gets_line_number_ids(served: tuple[Path, str, str], tmp_path: Path) -> None:
    data, address, _ = served
    corpus = tmp_path / "lines.txt"
    corpus.write_text("first line\nsecond line\nfirst line\n")
    created = run("job", "create", "--coordinator", address, "--admin-token-file",
                  str(data / "admin.token"), "--kind", "embed-text", "--model",
                  "all-MiniLM-L6-v2", "--input", str(corpus), "--redundancy", "1")
    job_id = created.stdout.strip().splitlines()[-1]
    assert "3 items (2 unique)" in created.stderr
    status = json.loads(run("job", "status", job_id, "--coordinator", address, "--json").stdout)
    assert (status["items"], status["unique_items"], status["redundancy"]) == (3, 2, 1)
    assert status["state"] == "running"
