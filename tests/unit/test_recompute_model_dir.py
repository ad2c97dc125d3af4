"""`dataset verify --recompute --model-dir`: a model folder is used only when it is the one
the dataset pins, either by its model.safetensors (a model configured locally) or by the
file list of a served model's signed manifest (every file's sha256, model_manifest.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from allmende.protocol.errors import IntegrityError, InvalidArgument
from allmende.protocol.kinds import get_kind
from allmende.protocol.model_manifest import model_pin, scan_folder
from allmende.protocol.models import ModelFile
from allmende.protocol.weights import verify_model
from allmende.research.pinned import dataset_model, folder_model, needs_model_dir

KIND = get_kind("embed-image")


def model_folder(root: Path) -> Path:
    folder = root / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"projection_dim": 8}))
    (folder / "model.safetensors").write_bytes(b"weights " * 64)
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "vocab.json").write_text("{}")
    (folder / ".gitattributes").write_text("hidden, not part of the model")
    return folder


def served_pin(folder: Path) -> str:
    entries, _ = scan_folder(folder)
    return model_pin(
        ModelFile(rel, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for rel, p in entries
    )


def test_a_served_models_folder_is_matched_by_its_file_list(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    pin = served_pin(folder)
    spec = folder_model(folder, "served-clip", pin, KIND, 8)
    assert spec.served and {f.path for f in spec.files} == {
        "config.json",
        "model.safetensors",
        "tokenizer/vocab.json",
    }
    assert (spec.weights_sha256, spec.task_kinds, spec.dims) == (pin, ("embed-image",), 8)
    verify_model(folder, spec)  # what the compute class checks again when it loads
    (folder / "tokenizer" / "vocab.json").write_text('{"changed": 1}')
    with pytest.raises(InvalidArgument, match="--model-dir: expected the folder of model"):
        folder_model(folder, "served-clip", pin, KIND, 8)
    with pytest.raises(IntegrityError, match=r"vocab\.json does not match"):
        verify_model(folder, spec)  # changed after it was checked


def test_a_local_models_folder_is_matched_by_its_weights(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    pin = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    spec = folder_model(folder, "local-clip", pin, KIND, 8)
    assert not spec.served and spec.source == str(folder.resolve())
    with pytest.raises(InvalidArgument, match=f"{tmp_path / 'nowhere'}"):
        folder_model(tmp_path / "nowhere", "local-clip", pin, KIND, 8)
    with pytest.raises(InvalidArgument, match="holds other files"):
        folder_model(folder, "local-clip", "ab" * 32, KIND, 8)


def test_a_model_this_install_does_not_know_needs_the_flag(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    pin = served_pin(folder)
    manifest = {
        "job": {"kind": "embed-image", "tau": 0.999, "result_dtype": "float16"},
        "model": {"name": "served-clip", "weights_sha256": pin, "dims": 8},
    }
    with pytest.raises(InvalidArgument, match=r"--model-dir: .* which this install does not"):
        needs_model_dir(manifest)
    pinned = dataset_model(manifest, model_dir=folder)
    assert pinned.model.served and pinned.registry.get("served-clip") == pinned.model
    assert pinned.shape.width == 8 + 1 + 1 + 32 + 1
