"""The served-model manifest: which files may travel, the pin, the signature."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from allmende.protocol.errors import IntegrityError, InvalidArgument
from allmende.protocol.model_manifest import (
    FileCheck,
    ModelManifest,
    check_json,
    check_path,
    model_pin,
    new_manifest,
    open_manifest,
    parse_manifest,
    scan_folder,
    sign_manifest,
    spec_hints,
)
from allmende.protocol.models import ModelFile
from allmende.protocol.signing import CTX_MANIFEST, SigningKey
from allmende.protocol.weights import verify_model
from tests.modelfolder import small_model


def entry(path: str, data: bytes) -> ModelFile:
    return ModelFile(path, len(data), hashlib.sha256(data).hexdigest())


def manifest_of(folder: Path, name: str = "tiny") -> object:
    found, _ = scan_folder(folder)
    files = [entry(rel, p.read_bytes()) for rel, p in found]
    return new_manifest(name, ["embed-text"], files, 8, 32, 1_700_000_000_000)


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("pytorch_model.bin", "pickle"),
        ("model.pt", "pickle"),
        ("model.pth", "pickle"),
        ("model.ckpt", "pickle"),
        ("data.pkl", "pickle"),
        ("data.pickle", "pickle"),
        ("modeling_evil.py", "code"),
        ("spiece.model", "sentencepiece"),
        ("../config.json", "'..'"),
        ("a/../../x.json", "'..'"),
        ("/etc/passwd.json", "absolute"),
        (".hidden.json", "hidden"),
        ("sub/.git/config.json", "hidden"),
        ("weights.onnx", "ending in"),
        ("a\\b.json", "absolute"),
        ("", "1 to"),
    ],
)
def test_paths_refused_name_the_file(path: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_path(path)
    assert why in caught.value.message
    assert "file" in caught.value.message


def test_allowed_paths() -> None:
    for path in (
        "model.safetensors",
        "config.json",
        "vocab.txt",
        "merges.txt",
        "README.md",
        "1_Pooling/config.json",
    ):
        assert check_path(path) == path


@pytest.mark.parametrize(
    ("path", "data", "why"),
    [
        ("model.safetensors", b"\x80\x04\x95" + b"\x00" * 30, "pickle"),
        ("config.json", b"\x80\x02}q\x00.", "pickle"),
        ("model.safetensors", b"PK\x03\x04" + b"\x00" * 30, "zip"),
        ("model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00[not a header]", "safetensors"),
        ("config.json", b'{"auto_map": {"AutoModel": "evil.Model"}}', "remote code"),
        ("tokenizer_config.json", b'{"trust_remote_code": true}', "remote code"),
        ("config.json", b"{not json", "valid JSON"),
    ],
)
def test_contents_refused_while_they_arrive(path: str, data: bytes, why: str) -> None:
    check = FileCheck(entry(path, data))
    with pytest.raises(InvalidArgument) as caught:
        check.feed(data)
        check.finish()
    assert why in caught.value.message


def test_a_file_other_than_declared_is_refused() -> None:
    declared = entry("vocab.txt", b"hello\n")
    check = FileCheck(declared)
    check.feed(b"HELLO\n")
    with pytest.raises(InvalidArgument, match="sha256"):
        check.finish()
    longer = FileCheck(declared)
    with pytest.raises(InvalidArgument, match="declared 6 bytes"):
        longer.feed(b"hello\nworld\n")


def test_json_checks() -> None:
    check_json("config.json", b'{"model_type": "bert"}')
    with pytest.raises(InvalidArgument, match="auto_map"):
        check_json("config.json", json.dumps({"auto_map": {}}).encode())


def test_pin_covers_every_file_and_ignores_order(tmp_path: Path) -> None:
    a, b = entry("config.json", b"{}"), entry("vocab.txt", b"x\n")
    assert model_pin([a, b]) == model_pin([b, a])
    assert model_pin([a, b]) != model_pin([a, entry("vocab.txt", b"y\n")])
    assert model_pin([a, b]) != model_pin([a])


def test_manifest_signs_round_trips_and_refuses_another_key(tmp_path: Path) -> None:
    folder = small_model(tmp_path / "tiny")
    manifest = manifest_of(folder)
    key = SigningKey.generate()
    data, signature = sign_manifest(manifest, key)  # type: ignore[arg-type]
    opened = open_manifest(data, signature, key.public_key)
    assert opened == manifest
    assert opened.pin == model_pin(opened.files)
    other = SigningKey.generate()
    with pytest.raises(IntegrityError, match="bad signature"):
        open_manifest(data, other.sign(b"allmende.v1/model-manifest", data), key.public_key)
    # a signature made for another purpose (a dataset manifest) is no model manifest's
    with pytest.raises(IntegrityError, match="bad signature"):
        open_manifest(data, key.sign(CTX_MANIFEST, data), key.public_key)
    tampered = data.replace(b'"dims":8', b'"dims":9')
    with pytest.raises(IntegrityError):
        open_manifest(tampered, signature, key.public_key)
    with pytest.raises(IntegrityError, match="canonical"):
        parse_manifest(json.dumps(json.loads(data), indent=1).encode())


def test_scan_skips_hidden_files_and_hints_come_from_the_config(tmp_path: Path) -> None:
    folder = small_model(tmp_path / "tiny")
    found, skipped = scan_folder(folder)
    assert [rel for rel, _ in found] == [
        "1_Pooling/config.json",
        "README.md",
        "config.json",
        "model.safetensors",
        "vocab.txt",
    ]
    assert skipped == [".gitattributes"]
    assert spec_hints(folder) == (8, 32)


def test_new_manifest_refusals(tmp_path: Path) -> None:
    good = [entry("model.safetensors", b"x" * 10)]
    with pytest.raises(InvalidArgument, match="empty"):
        new_manifest("m", ["embed-text"], [], 8, 32, 0)
    with pytest.raises(InvalidArgument, match="name"):
        new_manifest("../m", ["embed-text"], good, 8, 32, 0)
    with pytest.raises(InvalidArgument, match="weights_file"):
        new_manifest("m", ["embed-text"], [entry("config.json", b"{}")], 8, 32, 0)
    with pytest.raises(InvalidArgument, match="each path once"):
        new_manifest("m", ["embed-text"], good + good, 8, 32, 0)


def test_verify_model_checks_every_file(tmp_path: Path) -> None:
    folder = small_model(tmp_path / "tiny")
    manifest = manifest_of(folder)
    spec = manifest.spec(folder)  # type: ignore[attr-defined]
    verify_model(folder, spec)
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\nWORLD\n")
    with pytest.raises(IntegrityError, match=r"vocab\.txt"):
        verify_model(folder, spec)


def test_a_signed_manifest_listing_a_forbidden_file_is_still_refused() -> None:
    # Even the coordinator's own key cannot make a volunteer take a pickle: the file rules
    # are checked again on every manifest that arrives.
    key = SigningKey.generate()
    files = (entry("model.safetensors", b"x" * 10), entry("pytorch_model.bin", b"\x80\x02."))
    forged = ModelManifest("m", ("embed-text",), 8, 32, "model.safetensors", (), files, 0)
    data, signature = sign_manifest(forged, key)
    with pytest.raises(IntegrityError, match=r"pytorch_model\.bin"):
        open_manifest(data, signature, key.public_key)
