"""The dataset's own model, on the researcher's machine: the model and kind its manifest
names, checked against this install's model registry and loaded through the kind's compute
class (allmende.protocol.kinds.compute, which checks the weights' sha256 before loading)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from allmende.protocol.errors import IntegrityError, InvalidArgument
from allmende.protocol.kinds import KindSpec, ResultShape, get_kind
from allmende.protocol.kinds.compute import Computers
from allmende.protocol.model_manifest import model_pin, scan_folder, spec_hints
from allmende.protocol.models import ModelFile, ModelRegistry, ModelSpec
from allmende.protocol.weights import WEIGHTS_FILE, file_sha256


@dataclass(frozen=True)
class DatasetModel:
    kind: KindSpec
    model: ModelSpec
    shape: ResultShape
    tau: float
    registry: ModelRegistry  # where the compute classes find the model


def dataset_model(
    manifest: dict[str, Any],
    registry: ModelRegistry | None = None,
    model_dir: Path | None = None,
) -> DatasetModel:
    """What the manifest says computed the dataset, with this install's spec of its model
    (or, given `model_dir`, that folder checked against the dataset's pin); IntegrityError
    when the registry pins other weights than the dataset names."""
    job = manifest.get("job") or {}
    named = manifest.get("model") or {}
    kind = get_kind(str(job.get("kind", "embed-text")))
    registry = registry or ModelRegistry()
    name = str(named.get("name", ""))
    pinned = str(named.get("weights_sha256", ""))
    if model_dir is not None:
        found = folder_model(model_dir, name, pinned, kind, int(named.get("dims", 0) or 0))
        registry = ModelRegistry(extra=(found,))
    model = registry.get(name)
    if pinned != model.weights_sha256:
        raise IntegrityError(
            f"the dataset was computed with model {model.name} weights sha256 {pinned}, but "
            f"this install pins {model.weights_sha256}: recomputing would use other weights"
        )
    shape = kind.shape(model, str(job.get("result_dtype", "float16")))
    return DatasetModel(kind, model, shape, float(job.get("tau", 0.999)), registry)


def needs_model_dir(manifest: dict[str, Any], registry: ModelRegistry | None = None) -> None:
    """InvalidArgument naming --model-dir when this install does not know the dataset's
    model (a model a coordinator served, or one configured locally where it ran)."""
    named = manifest.get("model") or {}
    name = str(named.get("name", ""))
    if (registry or ModelRegistry()).find(name) is None:
        raise InvalidArgument(
            "--model-dir",
            f"the folder of model {name} (pinned sha256 {named.get('weights_sha256', '')}), "
            "which this install does not know",
        )


def folder_model(folder: Path, name: str, pinned: str, kind: KindSpec, dims: int) -> ModelSpec:
    """The model in `folder` when it is the one the dataset pins: either its
    model.safetensors has the pinned sha256 (a model configured locally), or the list of
    its files is the pin of a served model's signed manifest (model_manifest.py; every
    file's sha256 is then checked again when the model loads). InvalidArgument naming
    --model-dir otherwise."""
    if not folder.is_dir():
        raise InvalidArgument("--model-dir", f"a model folder, got {folder}")
    seq_hint = spec_hints(folder)[1]
    spec = ModelSpec(
        name=name,
        dims=dims,
        weights_sha256=pinned,
        max_seq_length=seq_hint,
        task_kinds=(kind.name,),
        source=str(folder.resolve()),
    )
    weights = folder / WEIGHTS_FILE
    if weights.is_file() and file_sha256(weights) == pinned:
        return spec
    entries, _ = scan_folder(folder)
    files = tuple(ModelFile(rel, path.stat().st_size, file_sha256(path)) for rel, path in entries)
    if files and model_pin(files) == pinned:
        return replace(spec, files=files)
    raise InvalidArgument(
        "--model-dir",
        f"the folder of model {name} pinned by the dataset (sha256 {pinned} of its "
        f"{WEIGHTS_FILE}, or of a served model's file list); {folder} holds other files",
    )


def computers(
    registry: ModelRegistry | None = None, device: str = "cpu", batch_size: int = 64
) -> Computers:
    """Compute classes for the researcher's machine; the weights are checked when loaded."""
    return Computers(registry or ModelRegistry(), device=device, batch_size=batch_size)
