"""A volunteer engine given a unit with URL rows, by a real gRPC server that plays the
coordinator (it signs the unit and records what it is asked): without --fetch-urls the unit
is handed back unfetched, saying why; with it the rows are fetched from a loopback HTTP
server and the result carries their statuses (the engine builds its own computer, with the
tiny CLIP, from its settings)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from allmende.client.engine import EngineConfig, VolunteerEngine
from allmende.client.engine import events as ev
from allmende.protocol.codec import decode_columns
from allmende.protocol.kinds.clip_filter import CLIP_FILTER
from allmende.protocol.models import ModelRegistry, ModelSpec
from allmende.protocol.signing import SigningKey
from allmende.protocol.wire import WorkUnit, decode_envelope, sign_unit
from allmende.v1 import allmende_pb2 as pb
from allmende.v1 import allmende_pb2_grpc as pb_grpc
from tests.urlserver import UrlServer, url_server

pytest.importorskip("transformers")


class OneUnitCoordinator(pb_grpc.VolunteerServiceServicer):  # type: ignore[misc]
    """Hands out one signed unit, then no more work; records leases, hand-backs, results."""

    def __init__(self, key: SigningKey, unit: WorkUnit) -> None:
        self.key = key
        self.unit = unit
        self.lock = threading.Lock()
        self.leases: list[pb.LeaseWorkRequest] = []
        self.released: list[str] = []
        self.results: list[pb.SubmitResultRequest] = []

    def GetCoordinatorInfo(self, request: Any, context: Any) -> Any:
        return pb.GetCoordinatorInfoResponse(public_key=self.key.public_key)

    def RegisterVolunteer(self, request: Any, context: Any) -> Any:
        return pb.RegisterVolunteerResponse(volunteer_id="v" * 64)

    def LeaseWork(self, request: pb.LeaseWorkRequest, context: Any) -> Any:
        with self.lock:
            self.leases.append(request)
            if len(self.leases) > 1:
                return pb.LeaseWorkResponse(work_remaining=False)
        blob, signature = sign_unit(self.key, self.unit)
        lease = pb.Lease(
            lease_id="lease-1",
            deadline_unix_ms=2**50,
            unit=pb.SignedWorkUnit(unit=blob, signature=signature),
        )
        return pb.LeaseWorkResponse(lease=lease, work_remaining=True)

    def ReleaseWork(self, request: pb.ReleaseWorkRequest, context: Any) -> Any:
        self.released.append(request.reason)
        return pb.ReleaseWorkResponse()

    def SubmitResult(self, request: pb.SubmitResultRequest, context: Any) -> Any:
        self.results.append(request)
        return pb.SubmitResultResponse(status="pending")


@pytest.fixture
def images() -> Iterator[UrlServer]:
    with url_server() as running:
        yield running


def serve(servicer: OneUnitCoordinator) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb_grpc.add_VolunteerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def url_unit(spec: ModelSpec, images: UrlServer) -> WorkUnit:
    return WorkUnit(
        unit_id="unit-1",
        job_id="job-1",
        kind="clip-filter",
        model=spec.name,
        model_sha256=spec.weights_sha256,
        texts=("a photograph", "a missing page", "sent as bytes"),
        dims=CLIP_FILTER.vector_dims(spec),
        result_dtype="float16",
        created_ms=1,
        lease_id="lease-1",
        images=(b"", b"", images.images[1]),
        urls=(images.url("/img/0"), images.url("/status/404"), ""),
    )


def run_engine(
    tmp_path: Path, address: str, key: SigningKey, registry: ModelRegistry, **fields: Any
) -> tuple[int, list[ev.Event]]:
    events: list[ev.Event] = []
    config = EngineConfig(
        coordinator=address,
        fingerprint=key.fingerprint,
        home=tmp_path / "volunteer",
        device="cpu",
        batch_size=4,
        exit_when_idle=True,
        give_up_after_s=10,
        **fields,
    )
    code = VolunteerEngine(config, on_event=events.append, registry=registry).run()
    return code, events


def test_without_opting_in_the_unit_goes_back_unfetched(
    tmp_path: Path, tiny_clip: ModelSpec, clip_registry: ModelRegistry, images: UrlServer
) -> None:
    key = SigningKey.generate()
    coordinator = OneUnitCoordinator(key, url_unit(tiny_clip, images))
    server, address = serve(coordinator)
    try:
        code, events = run_engine(tmp_path, address, key, clip_registry)
    finally:
        server.stop(0)
    assert code == 0
    assert [r.fetch_urls for r in coordinator.leases] == [False, False]
    [reason] = coordinator.released
    assert "did not opt in" in reason and "--fetch-urls" in reason
    assert any(isinstance(e, ev.UnitRefused) for e in events)
    assert coordinator.results == [] and images.requests == []


@pytest.mark.slow
def test_an_opted_in_volunteer_fetches_and_reports_each_row(
    tmp_path: Path, tiny_clip: ModelSpec, clip_registry: ModelRegistry, images: UrlServer
) -> None:
    key = SigningKey.generate()
    coordinator = OneUnitCoordinator(key, url_unit(tiny_clip, images))
    server, address = serve(coordinator)
    try:
        code, events = run_engine(
            tmp_path, address, key, clip_registry, fetch_urls=True, allow_private_addresses=True
        )
    finally:
        server.stop(0)
    assert code == 0, [e for e in events if isinstance(e, ev.Stopped)]
    assert coordinator.leases[0].fetch_urls
    assert coordinator.released == []
    [result] = coordinator.results
    envelope = decode_envelope(result.envelope)
    assert envelope.rows == 3
    columns = [(c.name, c.dtype, c.width) for c in envelope.columns]
    matrix = decode_columns(result.payload, columns, envelope.rows)
    values = CLIP_FILTER.shape(tiny_clip, "float16").split(matrix)
    statuses = CLIP_FILTER.results[-1].show(values["status"], tiny_clip)
    assert statuses == ["ok", "unreachable", "ok"]
    assert not values["image_sha256"][1].any() and values["image_sha256"][0].any()
    assert sorted(images.requests) == ["/img/0", "/status/404"]
