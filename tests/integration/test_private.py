"""`coordinator serve --private`: researcher calls (job status, datasets) need a token.

Open by default (the other tests); private, they take the data folder's reader.token or
the admin token, and anything else is refused with a message saying why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from allmende.cli.main import main
from allmende.client.connection import CoordinatorClient
from allmende.coordinator.app import RunningCoordinator, serve
from allmende.coordinator.home import CoordinatorHome
from allmende.v1 import allmende_pb2 as pb
from tests.conftest import job_requests
from tests.integration.rawclient import channel, expect_error
from tests.integration.volunteers import HashComputer, RawVolunteer


@pytest.fixture
def private(coordinator_home: CoordinatorHome) -> Iterator[RunningCoordinator]:
    with serve(coordinator_home.root, "127.0.0.1:0", drain_s=0.2, private=True) as running:
        yield running


def finished_job(running: RunningCoordinator, home: CoordinatorHome) -> str:
    with CoordinatorClient(running.address, admin_token=home.load_token()) as admin:
        job_id = admin.create_job(job_requests(["one", "two", "three"], redundancy=1)).job_id
        volunteer = RawVolunteer(admin)
        volunteer.register()
        found = volunteer.lease()
        assert found is not None
        lease, unit = found
        assert volunteer.submit(lease, unit, HashComputer().compute(unit)).status == "accepted"
        deadline = time.monotonic() + 30
        while admin.get_job(job_id).state != "complete":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    return job_id


def researcher_calls(address: str, job_id: str, token: str | None) -> list[object]:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    ch = channel(address)
    calls = [
        lambda: ch.unary_unary(
            "/allmende.v1.JobService/GetJob",
            request_serializer=pb.GetJobRequest.SerializeToString,
            response_deserializer=pb.GetJobResponse.FromString,
        )(pb.GetJobRequest(job_id=job_id), metadata=metadata, timeout=10),
        lambda: ch.unary_unary(
            "/allmende.v1.JobService/ListJobs",
            request_serializer=pb.ListJobsRequest.SerializeToString,
            response_deserializer=pb.ListJobsResponse.FromString,
        )(pb.ListJobsRequest(), metadata=metadata, timeout=10),
        lambda: ch.unary_unary(
            "/allmende.v1.DatasetService/GetManifest",
            request_serializer=pb.GetManifestRequest.SerializeToString,
            response_deserializer=pb.GetManifestResponse.FromString,
        )(pb.GetManifestRequest(job_id=job_id), metadata=metadata, timeout=10),
        lambda: list(
            ch.unary_stream(
                "/allmende.v1.DatasetService/DownloadFile",
                request_serializer=pb.DownloadFileRequest.SerializeToString,
                response_deserializer=pb.FileChunk.FromString,
            )(pb.DownloadFileRequest(job_id=job_id, name="nope"), metadata=metadata, timeout=10)
        ),
    ]
    return calls  # type: ignore[return-value]


def test_researcher_calls_need_a_token_when_private(
    private: RunningCoordinator, coordinator_home: CoordinatorHome
) -> None:
    job_id = finished_job(private, coordinator_home)
    for call in researcher_calls(private.address, job_id, None):
        expect_error(call, grpc.StatusCode.UNAUTHENTICATED, "private", "reader.token")
    for call in researcher_calls(private.address, job_id, "not-the-token"):
        expect_error(call, grpc.StatusCode.UNAUTHENTICATED, "reader", "admin token")
    reader = coordinator_home.reader_token_path
    assert reader.stat().st_mode & 0o777 == 0o600
    for token in (reader.read_text().strip(), coordinator_home.load_token()):
        get_job, list_jobs, manifest, download = researcher_calls(private.address, job_id, token)
        assert get_job().job.state == "complete"  # type: ignore[operator]
        assert [j.job_id for j in list_jobs().jobs] == [job_id]  # type: ignore[operator]
        assert manifest().manifest  # type: ignore[operator]
        # past the token check: the shard name is judged on its own
        expect_error(download, grpc.StatusCode.NOT_FOUND, "nope")  # type: ignore[arg-type]


def test_the_cli_passes_the_reader_token(
    capsys: pytest.CaptureFixture[str],
    private: RunningCoordinator,
    coordinator_home: CoordinatorHome,
    tmp_path: Path,
) -> None:
    job_id = finished_job(private, coordinator_home)
    fingerprint = private.coordinator.key.fingerprint
    pull = ["dataset", "pull", job_id, "--coordinator", private.address]
    pull += ["--fingerprint", fingerprint, "--out", str(tmp_path / "out")]
    assert main(pull) != 0
    assert "private" in capsys.readouterr().err
    assert not (tmp_path / "out" / "_allmende" / "manifest.json").exists()
    token = str(coordinator_home.reader_token_path)
    assert main([*pull, "--token-file", token]) == 0
    assert (tmp_path / "out" / "_allmende" / "manifest.json").exists()
    assert main(["job", "status", job_id, "--coordinator", private.address]) != 0
    capsys.readouterr()
    assert main(["job", "status", job_id, "--coordinator", private.address,
                 "--token-file", token]) == 0
    assert "complete" in capsys.readouterr().out
    assert main(["job", "list", "--coordinator", private.address, "--token-file",
                 str(tmp_path / "missing.token")]) == 2
    assert "--token-file" in capsys.readouterr().err
