"""Models served by the coordinator: `allmende model add/list` against an in-process
coordinator, every kind of bad upload refused with nothing stored, and a manifest the
volunteer must refuse. The end-to-end path (a volunteer without the model fetches it,
computes, the job completes) is in test_served_models_e2e.py."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from allmende.api.channel import RemoteError
from allmende.cli.main import main
from allmende.client.connection import CoordinatorClient
from allmende.client.engine import events as ev
from allmende.client.engine.config import EngineConfig
from allmende.client.engine.link import CoordinatorLink
from allmende.client.engine.model_cache import ModelCache
from allmende.coordinator.app import RunningCoordinator
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol.errors import IntegrityError
from allmende.protocol.models import ModelRegistry
from allmende.protocol.signing import SigningKey
from allmende.v1 import allmende_pb2 as pb
from tests.modelfolder import small_model


def files_of(folder: Path) -> list[tuple[str, bytes]]:
    return [
        (p.relative_to(folder).as_posix(), p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    ]


def upload(
    name: str,
    files: list[tuple[str, bytes]],
    declared: list[tuple[str, int, str]] | None = None,
    kinds: tuple[str, ...] = ("embed-text",),
    chunk: int = 1000,
) -> Iterator[pb.AddModelRequest]:
    listed = declared or [(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in files]
    yield pb.AddModelRequest(
        header=pb.AddModelHeader(
            name=name,
            task_kinds=list(kinds),
            dims=8,
            max_seq_length=32,
            files=[pb.ModelFileInfo(path=p, bytes=n, sha256=h) for p, n, h in listed],
        )
    )
    for path, data in files:
        for start in range(0, len(data), chunk):
            yield pb.AddModelRequest(
                chunk=pb.ModelFileChunk(path=path, data=data[start : start + chunk])
            )


def nothing_stored(coordinator: RunningCoordinator, home: CoordinatorHome) -> None:
    assert coordinator.coordinator.store.list_models() == []
    models = home.models
    assert not models.exists() or list(models.iterdir()) == []
    assert coordinator.coordinator.registry.names() == ModelRegistry().names()  # built-ins


def test_add_and_list_through_the_cli(
    coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = small_model(tmp_path / "tiny")
    token = str(coordinator_home.root / "admin.token")
    code = main(
        [
            "model",
            "add",
            "--coordinator",
            coordinator.address,
            "--admin-token-file",
            token,
            "--name",
            "tiny",
            "--path",
            str(folder),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    pin = captured.out.strip().splitlines()[-1]
    assert len(pin) == 64
    assert "skipping hidden .gitattributes" in captured.err
    stored = coordinator_home.models / "tiny"
    assert sorted(p.relative_to(stored).as_posix() for p in stored.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json",
        "README.md",
        "config.json",
        "model.safetensors",
        "vocab.txt",
    ]
    assert coordinator.coordinator.registry.get("tiny").weights_sha256 == pin
    assert main(["model", "list", "--coordinator", coordinator.address, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [
        {
            "name": "tiny",
            "pin": pin,
            "task_kinds": ["embed-text"],
            "dims": 8,
            "files": 5,
            "bytes": sum(len(d) for _, d in files_of(folder)),
            "created_unix_ms": listed[0]["created_unix_ms"],
        }
    ]
    with CoordinatorClient(coordinator.address) as client:
        assert "tiny" in client.info().models
    # the same name again is refused, and the first upload stays as it was
    code = main(
        [
            "model",
            "add",
            "--coordinator",
            coordinator.address,
            "--admin-token-file",
            token,
            "--name",
            "tiny",
            "--path",
            str(folder),
        ]
    )
    assert code != 0
    assert "ALREADY_EXISTS" in capsys.readouterr().err
    assert [m.name for m in coordinator.coordinator.store.list_models()] == ["tiny"]


def test_the_cli_refuses_a_pickle_folder_before_sending(
    coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = small_model(tmp_path / "tiny")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
    code = main(
        [
            "model",
            "add",
            "--coordinator",
            coordinator.address,
            "--admin-token-file",
            str(coordinator_home.root / "admin.token"),
            "--name",
            "tiny",
            "--path",
            str(folder),
        ]
    )
    assert code != 0
    assert "pytorch_model.bin" in capsys.readouterr().err
    nothing_stored(coordinator, coordinator_home)


def _evil_config() -> bytes:
    return json.dumps({"model_type": "bert", "auto_map": {"AutoModel": "evil.Model"}}).encode()


def _bad_uploads(folder: Path) -> dict[str, tuple[Iterator[pb.AddModelRequest], str]]:
    good = files_of(folder)
    real = dict(good)
    pickle_weights = [(p, b"\x80\x04" + d[2:] if p == "model.safetensors" else d) for p, d in good]
    wrong_hash = [(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in good]
    wrong_hash[-1] = (wrong_hash[-1][0], wrong_hash[-1][1], "0" * 64)
    evil = [(p, _evil_config() if p == "config.json" else d) for p, d in good]
    return {
        "bin": (
            upload("m", [*good, ("pytorch_model.bin", b"\x80\x02}q\x00.")]),
            "pytorch_model.bin",
        ),
        "pickle-bytes": (upload("m", pickle_weights), "pickle"),
        "undeclared": (
            upload(
                "m",
                [*good, ("extra.json", b"{}")],
                declared=[(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in good],
            ),
            "extra.json",
        ),
        "wrong-sha256": (upload("m", good, declared=wrong_hash), "sha256"),
        "dotdot": (upload("m", [*good, ("../escape.json", b"{}")]), "'..'"),
        "auto_map": (upload("m", evil), "remote code"),
        "empty": (upload("m", []), "empty"),
        "missing-bytes": (
            upload(
                "m",
                good[:-1],
                declared=[(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in good],
            ),
            "never arrived",
        ),
        "builtin-name": (upload("all-MiniLM-L6-v2", good), "exists"),
        "unknown-kind": (upload("m", good, kinds=("mine-bitcoin",)), "kind"),
        "bad-name": (upload("../m", good), "name"),
        "truncated": (
            upload(
                "m",
                [(p, d[:-1]) if p == "vocab.txt" else (p, d) for p, d in good],
                declared=[(p, len(real[p]), hashlib.sha256(real[p]).hexdigest()) for p, _ in good],
            ),
            "vocab.txt",
        ),
    }


CASES = [
    "bin",
    "pickle-bytes",
    "undeclared",
    "wrong-sha256",
    "dotdot",
    "auto_map",
    "empty",
    "missing-bytes",
    "builtin-name",
    "unknown-kind",
    "bad-name",
    "truncated",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_uploads_are_refused_and_nothing_is_stored(
    case: str,
    coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome,
    admin: CoordinatorClient,
    tmp_path: Path,
) -> None:
    requests, named = _bad_uploads(small_model(tmp_path / "tiny"))[case]
    with pytest.raises(RemoteError) as caught:
        admin.add_model(requests)
    assert caught.value.code in ("INVALID_ARGUMENT", "ALREADY_EXISTS"), caught.value.details
    assert named in caught.value.details
    nothing_stored(coordinator, coordinator_home)


def test_uploads_need_the_admin_token(
    coordinator: RunningCoordinator, coordinator_home: CoordinatorHome, tmp_path: Path
) -> None:
    good = files_of(small_model(tmp_path / "tiny"))
    with (
        CoordinatorClient(coordinator.address, admin_token="wrong") as client,
        pytest.raises(RemoteError) as caught,
    ):
        client.add_model(upload("m", good))
    assert caught.value.code == "UNAUTHENTICATED"
    nothing_stored(coordinator, coordinator_home)


def test_a_volunteer_refuses_a_manifest_another_key_signed_or_another_pin(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    info = admin.add_model(upload("tiny", files_of(small_model(tmp_path / "tiny"))))
    home = tmp_path / "volunteer"
    config = EngineConfig(coordinator=coordinator.address, fingerprint="0" * 64, home=home)
    link = CoordinatorLink(
        CoordinatorClient(coordinator.address), lambda: config, threading.Event(), lambda e: None
    )
    impostor = SigningKey.generate().public_key
    cache = ModelCache(home / "models", ModelRegistry(), link, impostor, lambda e: None)
    with pytest.raises(IntegrityError, match="bad signature"):
        cache.ensure("tiny", info.pin)
    genuine = ModelCache(
        home / "models",
        ModelRegistry(),
        link,
        coordinator.coordinator.key.public_key,
        lambda e: None,
    )
    with pytest.raises(IntegrityError, match="pins"):
        genuine.ensure("tiny", "f" * 64)
    assert not (home / "models").exists() or not any((home / "models").rglob("*.*"))
    genuine.ensure("tiny", info.pin)
    assert genuine.registry.get("tiny").weights_sha256 == info.pin
    link.close()


def test_downloads_serve_manifest_files_only_and_requests_have_limits(
    coordinator: RunningCoordinator, admin: CoordinatorClient, tmp_path: Path
) -> None:
    folder = small_model(tmp_path / "tiny")
    admin.add_model(upload("tiny", files_of(folder)))
    with CoordinatorClient(coordinator.address) as anyone:  # no token: volunteers need none
        vocab = (folder / "vocab.txt").read_bytes()
        assert b"".join(anyone.download_model_file("tiny", "vocab.txt")) == vocab
        assert b"".join(anyone.download_model_file("tiny", "vocab.txt", 6)) == vocab[6:]
        for name, path, offset, code in (
            ("tiny", "../admin.token", 0, "NOT_FOUND"),
            ("tiny", ".gitattributes", 0, "NOT_FOUND"),
            ("other", "vocab.txt", 0, "NOT_FOUND"),
            ("tiny", "vocab.txt", len(vocab) + 1, "INVALID_ARGUMENT"),
        ):
            with pytest.raises(RemoteError) as caught:
                list(anyone.download_model_file(name, path, offset))
            assert caught.value.code == code, (path, caught.value.details)
        with pytest.raises(RemoteError) as caught:
            anyone.model_manifest("x" * 70_000)
        assert caught.value.code == "RESOURCE_EXHAUSTED"
        assert "GetModelManifest" in caught.value.details


def test_a_volunteer_refuses_files_that_differ_from_the_signed_manifest(
    coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome,
    admin: CoordinatorClient,
    tmp_path: Path,
) -> None:
    info = admin.add_model(upload("tiny", files_of(small_model(tmp_path / "tiny"))))
    served = coordinator_home.models / "tiny" / "vocab.txt"
    served.write_bytes(served.read_bytes().replace(b"hello", b"HELLO"))  # changed after adding
    home = tmp_path / "volunteer"
    config = EngineConfig(coordinator=coordinator.address, fingerprint="0" * 64, home=home)
    events: list[object] = []
    link = CoordinatorLink(
        CoordinatorClient(coordinator.address), lambda: config, threading.Event(), events.append
    )
    registry = ModelRegistry()
    cache = ModelCache(
        home / "models", registry, link, coordinator.coordinator.key.public_key, events.append
    )
    with pytest.raises(IntegrityError, match=r"vocab\.txt.*sha256"):
        cache.ensure("tiny", info.pin)
    assert registry.find("tiny") is None
    folder = home / "models" / info.pin
    assert not (folder / "vocab.txt").exists() and not (folder / "vocab.txt.part").exists()
    # the next unit naming it is refused at once, without downloading the model again
    fetches = len([e for e in events if isinstance(e, ev.ModelFetching)])
    assert fetches == 1
    with pytest.raises(IntegrityError, match=r"vocab\.txt"):
        cache.ensure("tiny", info.pin)
    assert len([e for e in events if isinstance(e, ev.ModelFetching)]) == fetches
    link.close()
