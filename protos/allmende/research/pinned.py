"""The dataset's own model, on the researcher's machine: the model and kind its manifest
names, checked against this install's model registry and loaded through the kind's compute
class (allmende.protocol.kinds.compute, which checks the weights' sha256 before loading)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from allmende.protocol.errors import IntegrityError
from allmende.protocol.kinds import KindSpec, ResultShape, get_kind
from allmende.protocol.kinds.compute import Computers
from allmende.protocol.models import ModelRegistry, ModelSpec


@dataclass(frozen=True)
class DatasetModel:
    kind: KindSpec
    model: ModelSpec
    shape: ResultShape
    tau: float


def dataset_model(manifest: dict[str, Any], registry: ModelRegistry | None = None) -> DatasetModel:
    """What the manifest says computed the dataset, with this install's spec of its model;
    IntegrityError when the registry pins other weights than the dataset names."""
    job = manifest.get("job") or {}
    named = manifest.get("model") or {}
    kind = get_kind(str(job.get("kind", "embed-text")))
    model = (registry or ModelRegistry()).get(str(named.get("name", "")))
    pinned = str(named.get("weights_sha256", ""))
    if pinned != model.weights_sha256:
        raise IntegrityError(
            f"the dataset was computed with model {model.name} weights sha256 {pinned}, but "
            f"this install pins {model.weights_sha256}: recomputing would use other weights"
        )
    shape = kind.shape(model, str(job.get("result_dtype", "float16")))
    return DatasetModel(kind, model, shape, float(job.get("tau", 0.999)))


def computers(
    registry: ModelRegistry | None = None, device: str = "cpu", batch_size: int = 64
) -> Computers:
    """Compute classes for the researcher's machine; the weights are checked when loaded."""
    return Computers(registry or ModelRegistry(), device=device, batch_size=batch_size)
