"""The task kinds: the fixed set of computations a work unit may ask for.

A work unit is data for one of these kinds, never code. Adding a kind is one module here
(its `KindSpec`), one compute class on the client, an entry in `KINDS`, and tests.
"""

from __future__ import annotations

from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds.base import KindSpec, ResultShape
from allmende.protocol.kinds.clip_filter import CLIP_FILTER
from allmende.protocol.kinds.columns import VECTOR_DTYPES
from allmende.protocol.kinds.embed_image import EMBED_IMAGE
from allmende.protocol.kinds.embed_text import EMBED_TEXT
from allmende.protocol.kinds.filter_text import FILTER_TEXT
from allmende.protocol.models import ModelSpec

KINDS: dict[str, KindSpec] = {
    kind.name: kind for kind in (EMBED_TEXT, FILTER_TEXT, CLIP_FILTER, EMBED_IMAGE)
}
DEFAULT_KIND = EMBED_TEXT.name

__all__ = [
    "DEFAULT_KIND",
    "KINDS",
    "VECTOR_DTYPES",
    "KindSpec",
    "ResultShape",
    "check_model_for_kind",
    "get_kind",
]


def get_kind(name: str) -> KindSpec:
    try:
        return KINDS[name]
    except KeyError:
        raise InvalidArgument("kind", f"one of {sorted(KINDS)}, got {name!r}") from None


def check_model_for_kind(kind: KindSpec, model: ModelSpec) -> None:
    if kind.name not in model.task_kinds:
        raise InvalidArgument(
            "model", f"a model that supports {kind.name!r}; {model.name!r} does not"
        )
