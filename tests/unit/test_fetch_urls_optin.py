"""Opting in to fetching URL rows: off unless the volunteer says so (flag, environment,
settings file), and each lease call tells the coordinator (LeaseWorkRequest.fetch_urls),
checked on a real gRPC server that records what it is asked."""

from __future__ import annotations

import argparse
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from allmende.client.connection import CoordinatorClient
from allmende.client.engine.config import EngineConfig
from allmende.client.engine.link import CoordinatorLink
from allmende.client.settings import (
    FETCH_WARNING,
    VolunteerSettings,
    flags_from,
    load_settings,
)
from allmende.protocol.signing import SigningKey
from allmende.v1 import allmende_pb2 as pb
from allmende.v1 import allmende_pb2_grpc as pb_grpc


class Recorder(pb_grpc.VolunteerServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.leases: list[pb.LeaseWorkRequest] = []

    def GetCoordinatorInfo(self, request: object, context: object) -> pb.GetCoordinatorInfoResponse:
        return pb.GetCoordinatorInfoResponse()

    def LeaseWork(self, request: pb.LeaseWorkRequest, context: object) -> pb.LeaseWorkResponse:
        self.leases.append(request)
        return pb.LeaseWorkResponse(work_remaining=False)


def parsed(argv: list[str]) -> argparse.Namespace:
    """`allmende volunteer ARGV`, parsed by the command's own parser."""
    from allmende.cli.main import build_parser

    return build_parser().parse_args(["volunteer", *argv])


def test_fetching_is_off_unless_asked_for(tmp_path: Path) -> None:
    assert VolunteerSettings().fetch_urls is False
    assert VolunteerSettings().allow_private_addresses is False
    assert EngineConfig("a:1", "f").fetch_urls is False
    path = tmp_path / "volunteer.toml"
    config = load_settings(path, {}, flags_from(parsed([]))).settings.engine_config(tmp_path)
    assert (config.fetch_urls, config.allow_private_addresses) == (False, False)
    flags = flags_from(parsed(["--fetch-urls", "--allow-private-addresses"]))
    config = load_settings(path, {}, flags).settings.engine_config(tmp_path)
    assert (config.fetch_urls, config.allow_private_addresses) == (True, True)
    from_env = load_settings(path, {"ALLMENDE_FETCH_URLS": "yes"}, {}).settings
    assert from_env.fetch_urls and not from_env.allow_private_addresses
    path.write_text("fetch_urls = true\n")
    assert load_settings(path, {}, flags_from(parsed(["--no-fetch-urls"]))).settings == (
        VolunteerSettings()
    )


def test_a_bad_value_names_the_variable(tmp_path: Path) -> None:
    from allmende.protocol.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="ALLMENDE_FETCH_URLS"):
        load_settings(tmp_path / "v.toml", {"ALLMENDE_FETCH_URLS": "maybe"}, {})


def test_each_lease_call_says_whether_the_volunteer_fetches() -> None:
    recorder = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_VolunteerServiceServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    config = EngineConfig(f"127.0.0.1:{port}", "f")
    client = CoordinatorClient(config.coordinator, signer=SigningKey.generate())
    link = CoordinatorLink(client, lambda: config, threading.Event(), lambda e: None)
    link.volunteer_id = "v" * 64
    try:
        link.lease(1)
        assert not link.asked_for_urls
        config.fetch_urls = True  # as the settings screen applies it, live
        link.lease(2)
        config.fetch_urls = False
        link.lease(1)
    finally:
        link.close()
        server.stop(0)
    assert [r.fetch_urls for r in recorder.leases] == [False, True, False]
    assert link.asked_for_urls


def test_the_warning_says_what_fetching_means() -> None:
    for words in ("connects", "IP address", "job's owner chooses", "2 MiB", "10 s"):
        assert words in FETCH_WARNING
