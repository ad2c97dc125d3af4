"""CLI error paths, in-process through `allmende.cli.main.main`: exit code and message.

Each bad input must give the documented exit code (1 refused or failed, 2 bad flags or
input, 3 volunteer refused the work, 4 unreachable), a message on stderr that names what is
wrong (the line, the flag, the status), and leave the coordinator unchanged.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from allmende.cli.main import main
from allmende.client.engine import EngineConfig, VolunteerEngine
from allmende.coordinator.app import RunningCoordinator, serve
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol.signing import SigningKey
from allmende.v1 import allmende_pb2 as pb
from tests.integration.rawclient import FakeComputer, RawAdmin, job_stream

TEXTS = [f"line of text number {i}" for i in range(6)]


@pytest.fixture
def raw_admin(coordinator: RunningCoordinator,
              coordinator_home: CoordinatorHome) -> Iterator[RawAdmin]:
    admin = RawAdmin(coordinator.address, coordinator_home.load_token())
    yield admin
    admin.close()


def free_port() -> int:
    """A port nothing listens on (bound and released; nobody else asked for it since)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def create_args(address: str, token_file: Path, input_file: Path, *extra: str) -> list[str]:
    return ["job", "create", "--coordinator", address, "--admin-token-file", str(token_file),
            "--input", str(input_file), *extra]


def jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def good_lines() -> list[str]:
    return [json.dumps({"id": f"t{i}", "text": text}) for i, text in enumerate(TEXTS)]


# ---------------------------------------------------------------- job create: the input file


BAD_FILES = [
    pytest.param(
        "bad.jsonl",
        "\n".join([json.dumps({"id": "a", "text": "x"}), '{"id": "b", "text": ',
                   json.dumps({"id": "c", "text": "z"})]) + "\n",
        ("line 2 of bad.jsonl", "JSON"), id="malformed-jsonl-line",
    ),
    pytest.param(
        "bad.jsonl", json.dumps({"id": "a", "text": "x"}) + "\n[1, 2]\n",
        ("line 2 of bad.jsonl", "object"), id="jsonl-line-not-an-object",
    ),
    pytest.param(
        "bad.jsonl", json.dumps({"id": "a", "text": "x"}) + "\n\n" + json.dumps({"id": "b"}),
        ("line 3 of bad.jsonl", '"text"'), id="jsonl-line-without-text",
    ),
    pytest.param(
        "bad.jsonl", json.dumps({"id": "a", "text": 5}) + "\n",
        ("text", "line 1 of bad.jsonl"), id="jsonl-text-not-a-string",
    ),
    pytest.param(
        "bad.jsonl", json.dumps({"id": None, "text": "x"}) + "\n",
        ("id", "line 1 of bad.jsonl"), id="jsonl-null-id",
    ),
    pytest.param(
        "dup.csv", "id,text\na,first\nb,second\na,third\n",
        ("unique ids", "'a'", "line 4 of dup.csv", "repeats line 2"), id="duplicate-ids-csv",
    ),
    pytest.param(
        "dup.jsonl",
        "\n".join(json.dumps({"id": i, "text": i}) for i in ("x", "y", "z", "y")) + "\n",
        ("'y'", "line 4 of dup.jsonl", "repeats line 2"), id="duplicate-ids-jsonl",
    ),
    pytest.param(
        "cols.csv", "name,body\na,b\n", ("'id' and 'text'", "cols.csv"), id="csv-without-header",
    ),
    pytest.param(
        "extra.tsv", "id\ttext\nstsb-48x\tbar\nstsb-49x\tfoo\textra column\n",
        ("line 3 of extra.tsv has 3", "2 columns"), id="tsv-line-with-an-extra-column",
    ),
    pytest.param("blank.txt", "first\n\nthird\n", ("line 2 of blank.txt is blank",),
                 id="txt-blank-line"),
    pytest.param("empty.jsonl", "", ("at least one item", "empty.jsonl"), id="empty-file"),
    pytest.param("blank.jsonl", "\n  \n\n", ("at least one item",), id="only-blank-lines"),
    pytest.param("header.csv", "id,text\n", ("at least one item",), id="csv-header-only"),
    pytest.param("input.xlsx", "id,text\na,b\n", ("--input", ".jsonl", "input.xlsx"),
                 id="unknown-suffix"),
    pytest.param("latin1.txt", b"caf\xe9\n", ("UTF-8", "latin1.txt"), id="not-utf8"),
]


@pytest.mark.parametrize(("name", "content", "needles"), BAD_FILES)
def test_job_create_bad_input_file_exits_2_and_names_the_problem(
    capsys: pytest.CaptureFixture[str], coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome, raw_admin: RawAdmin, tmp_path: Path, name: str,
    content: str | bytes, needles: tuple[str, ...],
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    code, out, err = run_cli(capsys, *create_args(coordinator.address,
                                                  coordinator_home.token_path, path))
    assert code == 2, err
    assert out == ""
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert err.startswith("allmende: ")
    assert "Traceback" not in err
    assert raw_admin.job_ids() == []  # nothing was sent


def test_job_create_missing_input_file(capsys: pytest.CaptureFixture[str],
                                       coordinator: RunningCoordinator,
                                       coordinator_home: CoordinatorHome,
                                       raw_admin: RawAdmin, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.jsonl"
    code, _, err = run_cli(capsys, *create_args(coordinator.address,
                                                coordinator_home.token_path, missing))
    assert code == 2
    assert "--input" in err and "not found" in err
    assert raw_admin.job_ids() == []


def test_job_create_missing_or_empty_token_file(capsys: pytest.CaptureFixture[str],
                                                coordinator: RunningCoordinator,
                                                raw_admin: RawAdmin, tmp_path: Path) -> None:
    corpus = jsonl(tmp_path / "in.jsonl", good_lines())
    code, _, err = run_cli(capsys, *create_args(coordinator.address, tmp_path / "no.token",
                                                corpus))
    assert code == 2
    assert "--admin-token-file" in err and "no.token" in err
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    code, _, err = run_cli(capsys, *create_args(coordinator.address, empty, corpus))
    assert code == 2
    assert "--admin-token-file" in err and "empty" in err
    assert raw_admin.job_ids() == []


def test_job_create_wrong_admin_token(capsys: pytest.CaptureFixture[str],
                                      coordinator: RunningCoordinator,
                                      coordinator_home: CoordinatorHome, raw_admin: RawAdmin,
                                      tmp_path: Path) -> None:
    corpus = jsonl(tmp_path / "in.jsonl", good_lines())
    wrong = tmp_path / "wrong.token"
    wrong.write_text("definitely-not-the-token\n")
    code, out, err = run_cli(capsys, *create_args(coordinator.address, wrong, corpus))
    assert code == 1
    assert "UNAUTHENTICATED" in err and "admin token" in err
    assert "definitely-not-the-token" not in err
    assert out == ""
    assert raw_admin.job_ids() == []
    # The same command with the right token works: the server kept serving.
    code, out, err = run_cli(capsys, *create_args(coordinator.address,
                                                  coordinator_home.token_path, corpus))
    assert code == 0, err
    assert raw_admin.job_ids() == [out.strip()]


def test_job_create_rejected_by_the_coordinator_exits_2(
    capsys: pytest.CaptureFixture[str], coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome, raw_admin: RawAdmin, tmp_path: Path,
) -> None:
    corpus = jsonl(tmp_path / "in.jsonl", good_lines())
    for extra, needles in (
        (("--model", "no-such-model"), ("INVALID_ARGUMENT", "model", "no-such-model")),
        (("--kind", "embed-video"), ("INVALID_ARGUMENT", "kind", "embed-video")),
        (("--redundancy", "99"), ("INVALID_ARGUMENT", "redundancy", "99")),
        (("--license", "CC BY 4.0"), ("INVALID_ARGUMENT", "license", "'CC BY 4.0'", "cc-by-4.0")),
    ):
        code, _, err = run_cli(capsys, *create_args(coordinator.address,
                                                    coordinator_home.token_path, corpus, *extra))
        assert code == 2, err
        for needle in needles:
            assert needle in err, f"{needle!r} not in {err!r}"
    assert raw_admin.job_ids() == []


def test_job_create_text_over_the_per_text_limit_names_the_line(
    capsys: pytest.CaptureFixture[str], coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome, raw_admin: RawAdmin, tmp_path: Path,
) -> None:
    corpus = jsonl(tmp_path / "long.jsonl", [json.dumps({"id": "a", "text": "ok"}),
                                             json.dumps({"id": "b", "text": "x" * (300 << 10)})])
    code, _, err = run_cli(capsys, *create_args(coordinator.address,
                                                coordinator_home.token_path, corpus))
    assert code == 2, err
    assert "text" in err and "line 2" in err
    assert raw_admin.job_ids() == []


def test_job_create_text_over_the_message_limit_is_an_input_error(
    capsys: pytest.CaptureFixture[str], coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome, raw_admin: RawAdmin, tmp_path: Path,
) -> None:
    corpus = jsonl(tmp_path / "huge.jsonl", [json.dumps({"id": "a", "text": "x" * (17 << 20)})])
    code, _, err = run_cli(capsys, *create_args(coordinator.address,
                                                coordinator_home.token_path, corpus))
    assert raw_admin.job_ids() == []
    assert "line 1" in err
    assert code == 2, err


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--tau", "1.5", "(0, 1]"),
        ("--tau", "abc", "expected a number"),
        ("--redundancy", "0", ">= 1"),
        ("--unit-size", "-3", ">= 1"),
        ("--dtype", "float64", "invalid choice"),
        ("--gold-fraction", "0.9", "0 to 0.5"),
        ("--gold-fraction", "-0.1", "0 to 0.5"),
        ("--gold-fraction", "some", "expected a number"),
    ],
)
def test_job_create_bad_flag_values_exit_2(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path, flag: str, value: str,
                                           needle: str) -> None:
    corpus = jsonl(tmp_path / "in.jsonl", good_lines())
    with pytest.raises(SystemExit) as info:
        main(create_args("127.0.0.1:1", tmp_path / "t", corpus, flag, value))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and needle in err


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--daily-quota", "0", ">= 1"),
        ("--quota-per-valid", "-1", ">= 0"),
        ("--adaptive-after", "x", "whole number"),
        ("--replication-floor", "0", "(0, 1]"),
        ("--replication-floor", "1.5", "(0, 1]"),
        ("--ipv4-prefix", "33", "1 to 32"),
        ("--ipv6-prefix", "0", "1 to 128"),
        ("--registrations-per-minute", "0", "above 0"),
        ("--leases-per-second", "x", "a number"),
        ("--block-share", "1.5", "(0, 1]"),
        ("--unproven-leases", "0", "1 to"),
    ],
)
def test_serve_bad_trust_flags_exit_2_before_anything_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str, value: str, needle: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["coordinator", "serve", "--data", str(tmp_path / "none"), flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and needle in err
    assert not (tmp_path / "none").exists()


# ---------------------------------------------------------------- job status and the address


def test_job_status_of_an_unknown_job(capsys: pytest.CaptureFixture[str],
                                      coordinator: RunningCoordinator,
                                      raw_admin: RawAdmin) -> None:
    code, out, err = run_cli(capsys, "job", "status", "job-000000000000", "--coordinator",
                             coordinator.address)
    assert code == 1
    assert "NOT_FOUND" in err and "job-000000000000" in err
    assert out == ""
    code, out, err = run_cli(capsys, "job", "list", "--coordinator", coordinator.address,
                             "--json")
    assert code == 0, err
    assert json.loads(out) == []


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["job", "status", "job-000000000000", "--coordinator", "{addr}"],
                     id="job-status"),
        pytest.param(["job", "list", "--coordinator", "{addr}"], id="job-list"),
        pytest.param(["job", "create", "--coordinator", "{addr}", "--admin-token-file",
                      "{token}", "--input", "{input}"], id="job-create"),
        pytest.param(["dataset", "pull", "job-000000000000", "--coordinator", "{addr}",
                      "--fingerprint", "0" * 64, "--out", "{out}"], id="dataset-pull"),
    ],
)
def test_unreachable_coordinator_exits_4(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         argv: list[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    token = tmp_path / "admin.token"
    token.write_text("token\n")
    corpus = jsonl(tmp_path / "in.jsonl", good_lines())
    values = {"addr": address, "token": str(token), "input": str(corpus),
              "out": str(tmp_path / "out")}
    started = time.monotonic()
    code, _, err = run_cli(capsys, *[arg.format(**values) for arg in argv])
    assert code == 4, err
    assert "unreachable" in err and address in err
    assert time.monotonic() - started < 20
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["localhost", "localhost:", ":50051", "host:99999",
                                   "host:port"])
def test_bad_coordinator_address_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                                  value: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["job", "status", "job-1", "--coordinator", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--coordinator" in err and "HOST:PORT" in err


# ---------------------------------------------------------------- coordinator commands


def test_coordinator_fingerprint_on_an_uninitialised_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    folder = tmp_path / "empty-coordinator"
    code, out, err = run_cli(capsys, "coordinator", "fingerprint", "--data", str(folder))
    assert code == 1
    assert out == ""
    assert "coordinator.key" in err and "not found" in err
    assert f"allmende coordinator init --data {folder}" in err
    assert not folder.exists()  # reading a fingerprint creates nothing


def test_coordinator_init_twice_refuses_to_overwrite_the_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    folder = tmp_path / "coord"
    code, out, _ = run_cli(capsys, "coordinator", "init", "--data", str(folder))
    assert code == 0
    fingerprint = out.strip().splitlines()[-1]
    key_bytes = (folder / "coordinator.key").read_bytes()
    code, _, err = run_cli(capsys, "coordinator", "init", "--data", str(folder))
    assert code == 1
    assert "already initialised" in err
    assert (folder / "coordinator.key").read_bytes() == key_bytes
    code, out, _ = run_cli(capsys, "coordinator", "fingerprint", "--data", str(folder))
    assert (code, out.strip()) == (0, fingerprint)


def test_coordinator_key_readable_by_others_is_refused(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    folder = tmp_path / "coord"
    CoordinatorHome(folder).init()
    (folder / "coordinator.key").chmod(0o644)
    code, out, err = run_cli(capsys, "coordinator", "fingerprint", "--data", str(folder))
    assert code == 1
    assert out == ""
    assert "readable by others" in err and "chmod 600" in err


# ---------------------------------------------------------------- volunteer


def test_volunteer_with_the_wrong_fingerprint_exits_3(
    capsys: pytest.CaptureFixture[str], coordinator: RunningCoordinator, raw_admin: RawAdmin,
    coordinator_home: CoordinatorHome, tmp_path: Path,
) -> None:
    raw_admin.create_job(job_stream(TEXTS))
    wrong = SigningKey.generate().fingerprint
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code, out, err = run_cli(capsys, "volunteer", "--headless", "--exit-when-idle",
                                 "--coordinator", coordinator.address, "--fingerprint", wrong,
                                 "--home", str(tmp_path / "volunteer"), "--device", "cpu")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 3
    assert "does not match the pinned fingerprint" in err and wrong in err
    assert "event=stopped" in out and "exit_code=3" in out
    assert "unit.leased" not in out
    [job] = raw_admin.jobs.ListJobs(pb.ListJobsRequest(), timeout=10).jobs
    assert (job.units_in_progress, job.results_received) == (0, 0)


# ---------------------------------------------------------------- datasets


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str, Path]]:
    """A real finished job, computed by two engines with a cheap fake model.

    Yields (address, fingerprint, job id, folder pulled by `allmende dataset pull`).
    """
    root = tmp_path_factory.mktemp("finished")
    home = CoordinatorHome(root / "coordinator")
    home.init()
    with serve(home.root, "127.0.0.1:0") as running:
        admin = RawAdmin(running.address, home.load_token())
        try:
            job_id = admin.create_job(job_stream(TEXTS, unit_size=3)).job_id
            fingerprint = running.coordinator.key.fingerprint
            for n in range(2):
                config = EngineConfig(coordinator=running.address, fingerprint=fingerprint,
                                      home=root / f"volunteer-{n}", device="cpu",
                                      exit_when_idle=True, give_up_after_s=10)
                assert VolunteerEngine(config, computer=FakeComputer()).run() == 0
            deadline = time.monotonic() + 30
            while admin.get_job(job_id).state != "complete":
                assert time.monotonic() < deadline, admin.get_job(job_id)
                time.sleep(0.05)
            folder = root / "pulled"
            assert main(["dataset", "pull", job_id, "--coordinator", running.address,
                         "--fingerprint", fingerprint, "--out", str(folder)]) == 0
            yield running.address, fingerprint, job_id, folder
        finally:
            admin.close()


def _copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    return copy


def _shard(folder: Path) -> Path:
    return sorted(folder.glob("data/*.parquet"))[0]


def test_dataset_verify_of_the_intact_folder_passes(
    capsys: pytest.CaptureFixture[str], finished: tuple[str, str, str, Path],
) -> None:
    """The control case for the tampering tests below."""
    _, fingerprint, job_id, folder = finished
    code, out, err = run_cli(capsys, "dataset", "verify", str(folder), "--fingerprint",
                             fingerprint, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["ok"], report["job_id"], report["rows"]) == (True, job_id, len(TEXTS))


def _flip_shard_byte(folder: Path) -> str:
    shard = _shard(folder)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    return shard.name


def _truncate_shard(folder: Path) -> str:
    shard = _shard(folder)
    shard.write_bytes(shard.read_bytes()[:-10])
    return shard.name


def _delete_shard(folder: Path) -> str:
    shard = _shard(folder)
    shard.unlink()
    return shard.name


def _extra_shard(folder: Path) -> str:
    pq.write_table(pa.table({"id": ["x"]}), folder / "data" / "zz-extra.parquet")
    return "data/zz-extra.parquet"


def _extra_shard_at_the_root(folder: Path) -> str:
    # Tools that open the folder by its path would read it as part of the dataset.
    pq.write_table(pa.table({"id": ["x"]}), folder / "stray.parquet")
    return "stray.parquet"


def _contradicting_card(folder: Path) -> str:
    card = folder / "_allmende" / "README.md"
    card.write_text(card.read_text().replace("license: unknown", "license: cc0-1.0"))
    return "_allmende/README.md"


def _edit_manifest(folder: Path) -> str:
    path = folder / "_allmende" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["rows"] += 1
    path.write_text(json.dumps(manifest, sort_keys=True, indent=2) + "\n")
    return "manifest.json"


def _drop_signature(folder: Path) -> str:
    (folder / "_allmende" / "manifest.sig").unlink()
    return "manifest.sig"


def _resign_with_another_key(folder: Path) -> str:
    # A valid signature, by a key that is not the pinned coordinator's.
    from allmende.protocol.manifest import sign_manifest

    manifest = (folder / "_allmende" / "manifest.json").read_bytes()
    (folder / "_allmende" / "manifest.sig").write_bytes(
        sign_manifest(SigningKey.generate(), manifest)
    )
    return "does not match the pinned"


@pytest.mark.parametrize(
    ("tamper", "needle"),
    [
        pytest.param(_flip_shard_byte, "sha256", id="shard-bit-flipped"),
        pytest.param(_truncate_shard, "bytes", id="shard-truncated"),
        pytest.param(_delete_shard, "missing", id="shard-deleted"),
        pytest.param(_extra_shard, "not in the manifest", id="extra-shard"),
        pytest.param(_extra_shard_at_the_root, "not in the manifest", id="extra-root-shard"),
        pytest.param(_contradicting_card, "does not match the manifest", id="card-edited"),
        pytest.param(_edit_manifest, "bad signature", id="manifest-edited"),
        pytest.param(_drop_signature, "missing", id="signature-deleted"),
        pytest.param(_resign_with_another_key, "fingerprint", id="signed-by-another-key"),
    ],
)
def test_dataset_verify_of_a_tampered_folder_fails_with_the_reason(
    capsys: pytest.CaptureFixture[str], finished: tuple[str, str, str, Path], tmp_path: Path,
    tamper: object, needle: str,
) -> None:
    _, fingerprint, _, folder = finished
    copy = _copy(folder, tmp_path)
    named = tamper(copy)  # type: ignore[operator]
    code, out, err = run_cli(capsys, "dataset", "verify", str(copy), "--fingerprint",
                             fingerprint)
    assert code == 1, err
    assert out == ""
    assert "verification failed" in err
    assert named in err and needle in err, err


def test_dataset_verify_with_the_wrong_or_malformed_fingerprint(
    capsys: pytest.CaptureFixture[str], finished: tuple[str, str, str, Path],
) -> None:
    _, _, _, folder = finished
    other = SigningKey.generate().fingerprint
    code, _, err = run_cli(capsys, "dataset", "verify", str(folder), "--fingerprint", other)
    assert code == 1
    assert "does not match the pinned" in err and other in err
    code, _, err = run_cli(capsys, "dataset", "verify", str(folder), "--fingerprint", "abc")
    assert code == 2
    assert "fingerprint" in err and "64 hex digits" in err


def test_dataset_verify_of_a_folder_that_is_not_a_dataset(
    capsys: pytest.CaptureFixture[str], finished: tuple[str, str, str, Path], tmp_path: Path,
) -> None:
    _, fingerprint, _, _ = finished
    code, _, err = run_cli(capsys, "dataset", "verify", str(tmp_path / "nothing"),
                           "--fingerprint", fingerprint)
    assert code == 1
    assert "manifest.json" in err and "missing" in err


def test_dataset_pull_errors(capsys: pytest.CaptureFixture[str],
                             finished: tuple[str, str, str, Path], tmp_path: Path) -> None:
    address, fingerprint, job_id, _ = finished
    out_dir = tmp_path / "pulled"
    code, _, err = run_cli(capsys, "dataset", "pull", "job-000000000000", "--coordinator",
                           address, "--fingerprint", fingerprint, "--out", str(out_dir))
    assert code == 1
    assert "NOT_FOUND" in err and "job-000000000000" in err
    other = SigningKey.generate().fingerprint
    code, _, err = run_cli(capsys, "dataset", "pull", job_id, "--coordinator", address,
                           "--fingerprint", other, "--out", str(out_dir))
    assert code == 1
    assert "verification failed" in err and "does not match the pinned" in err
    assert not out_dir.exists()  # nothing is written before the manifest verifies


def test_dataset_pull_of_a_running_job(capsys: pytest.CaptureFixture[str],
                                       coordinator: RunningCoordinator, raw_admin: RawAdmin,
                                       tmp_path: Path) -> None:
    job_id = raw_admin.create_job(job_stream(TEXTS)).job_id
    out_dir = tmp_path / "pulled"
    code, _, err = run_cli(capsys, "dataset", "pull", job_id, "--coordinator",
                           coordinator.address, "--fingerprint",
                           coordinator.coordinator.key.fingerprint, "--out", str(out_dir))
    assert code == 1
    assert "FAILED_PRECONDITION" in err and "not ready" in err
    assert not out_dir.exists()
