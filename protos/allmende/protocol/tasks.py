"""Task kinds: the fixed set of computations a work unit may ask for, and their result shapes.

A work unit is data for one of these kinds, never code. Adding a kind means adding an entry
here (what it takes, what it returns) and a compute function on the client.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from allmende.protocol.codec import INT8_SCALE
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.models import ModelSpec

RESULT_DTYPES = ("float16", "int8")
# |norm - 1| allowed for unit-normalised rows after fp16 rounding: each component is
# rounded to 11 significant bits, which moves the norm of a unit row by well under 0.001.
FP16_NORM_TOLERANCE = 0.002
# int8 stores round(x * 127): each component is off by up to 0.5 / 127 (uniform), which
# moves the norm by about 0.0023 (one standard deviation) plus dims / (24 * 127^2) on
# average (measured: 384-d rows within about 0.005). Four standard deviations and that mean.


def norm_tolerance(dtype: str, dims: int) -> float:
    """|norm - 1| allowed for a unit-normalised row sent in `dtype` with `dims` columns."""
    if dtype == "int8":
        return 4 * 0.5 / INT8_SCALE / 3**0.5 + dims / (24 * INT8_SCALE**2)
    return FP16_NORM_TOLERANCE


@dataclass(frozen=True)
class TaskKind:
    name: str
    description: str
    input_field: str  # which input column a job needs besides "id"
    # Rows must have length 1 (within what fp16 or int8 rounding allows): cosine ignores
    # scale, so without this check scaled rows would agree with honest ones.
    unit_norm: bool = False

    def result_dims(self, model: ModelSpec) -> int:
        return model.dims


EMBED_TEXT = TaskKind(
    name="embed-text",
    description="sentence embeddings of text, unit-normalised",
    input_field="text",
    unit_norm=True,
)

TASK_KINDS: dict[str, TaskKind] = {EMBED_TEXT.name: EMBED_TEXT}


def get_task_kind(name: str) -> TaskKind:
    try:
        return TASK_KINDS[name]
    except KeyError:
        raise InvalidArgument("kind", f"one of {sorted(TASK_KINDS)}, got {name!r}") from None


def check_model_for_kind(kind: TaskKind, model: ModelSpec) -> None:
    if kind.name not in model.task_kinds:
        raise InvalidArgument(
            "model", f"a model that supports {kind.name!r}; {model.name!r} does not"
        )


# Words and punctuation marks: within a few percent of a WordPiece/BPE token count on
# English text, and needs no tokenizer (STS-B: 5 % above an exact token count).
_TOKEN_LIKE = re.compile(r"\w+|[^\w\s]")
# [CLS] and [SEP], or their equivalents.
SPECIAL_TOKENS = 2


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate of a text's token count, special tokens excluded."""
    return sum(1 for _ in _TOKEN_LIKE.finditer(text))


def claimed_tokens(texts: Iterable[str]) -> int:
    """The work a volunteer claims credit for: estimated tokens processed, special tokens
    included. Every honest client computes the same figure for the same texts, so the
    coordinator can grant the lowest claim of a quorum and cap any claim at its own count."""
    return sum(estimate_tokens(text) + SPECIAL_TOKENS for text in texts)
