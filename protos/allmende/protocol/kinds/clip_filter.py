"""`clip-filter`: CLIP image and caption embeddings, their similarity and an NSFW score,
for filtering image-text pairs as LAION's Crawling@Home volunteers did for LAION-400M/5B.

Each row is an image and its caption. Volunteers return both embeddings (unit-normalised),
their cosine (`similarity`), the image's size and sha256, Open-NSFW's probability that the
image is unsafe (`punsafe`), and the row's `status`. The job's rule (`--min-similarity`,
0.28 unless given: the threshold LAION-5B's English subset used with ViT-B/32;
`--max-punsafe`, off unless given) is applied by the coordinator to the agreed values as the
dataset's `keep`; a row whose image could not be used is never kept, and every row stays in
the dataset.

Tolerances. Vectors agree by the job's tau (cosine), like every embedding. `similarity` is
the cosine of the volunteer's float32 embeddings, so it moves with them: two replicas whose
embeddings each lie within cosine tau = 0.999 of the truth (the default) can differ in
similarity by up to about 2 * sqrt(2 * (1 - tau)) ~ 0.09 in theory, but measured
differences are far smaller: on CPU, batch 1 against batch 16 moved it by under 1e-6
(tests/unit/test_clip_filter.py), and fp16 inference on a GPU moves a ViT-B/32 cosine by a
few 1e-4. SIMILARITY_EPSILON = 0.005 leaves ten times that. `punsafe` passes through a JPEG
round trip (Open-NSFW's own preprocessing) whose pixels can differ in the last bit between
libjpeg builds; PUNSAFE_EPSILON = 0.02 covers that, and a score near a `--max-punsafe`
threshold then decides `keep` on the replicas' mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds.base import KindSpec, Rule, RuleParam
from allmende.protocol.kinds.columns import ScoreColumn, VectorColumn
from allmende.protocol.kinds.image_inputs import (
    HEIGHT,
    IMAGE_SHA256,
    OK,
    STATUS,
    WIDTH,
    image_credit,
)
from allmende.protocol.models import ModelSpec

if TYPE_CHECKING:  # numpy is imported where used: reading the declarations needs none
    import numpy as np

SIMILARITY_EPSILON = 0.005
PUNSAFE_EPSILON = 0.02
# LAION-5B's English threshold for ViT-B/32 (LAION-400M used 0.3).
DEFAULT_MIN_SIMILARITY = 0.28


def _bounded(name: str, low: float, high: float) -> Any:
    def parse(text: str, model: ModelSpec) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            raise InvalidArgument(name, f"a number from {low:g} to {high:g}, got {text!r}")
        return value

    return parse


def keep(
    rule: Rule, texts: Sequence[str], values: Mapping[str, np.ndarray], model: ModelSpec
) -> np.ndarray:
    """Keep a row whose image was used (status ok), whose similarity is at least the
    minimum, and whose punsafe is at most the maximum when one is given."""
    import numpy as np

    kept = np.rint(values["status"][:, 0]).astype(np.int64) == OK
    minimum = np.float32(rule.get("min_similarity", DEFAULT_MIN_SIMILARITY))
    kept &= values["similarity"][:, 0] >= minimum
    if "max_punsafe" in rule:
        kept &= values["punsafe"][:, 0] <= np.float32(rule["max_punsafe"])
    return np.asarray(kept)


CLIP_FILTER = KindSpec(
    name="clip-filter",
    description="CLIP image and caption embeddings, their similarity and an NSFW score",
    inputs=("image", "text"),
    results=(
        VectorColumn(
            "image_embedding",
            "CLIP's image embedding, unit-normalised; the agreeing replicas' normalised "
            "mean; all zeros when the image could not be used",
            unit_norm=True,
            allow_empty=True,
        ),
        VectorColumn(
            "text_embedding",
            "CLIP's caption embedding, unit-normalised; the agreeing replicas' normalised mean",
            unit_norm=True,
        ),
        ScoreColumn(
            "similarity",
            "cosine of the image and caption embeddings (0 when the image could not be used)",
            low=-1.0,
            high=1.0,
            tolerance=SIMILARITY_EPSILON,
        ),
        WIDTH,
        HEIGHT,
        IMAGE_SHA256,
        ScoreColumn(
            "punsafe",
            "Open-NSFW's probability that the image is unsafe (0 when it could not be used)",
            low=0.0,
            high=1.0,
            tolerance=PUNSAFE_EPSILON,
        ),
        STATUS,
    ),
    compute="allmende.client.tasks.clip_filter:ClipFilter",
    credit=image_credit,
    agreement="image_embedding",
    rule=(
        RuleParam(
            "min_similarity",
            f"keep rows whose image-caption cosine is at least this (default "
            f"{DEFAULT_MIN_SIMILARITY}, LAION-5B's threshold for ViT-B/32)",
            _bounded("min_similarity", -1.0, 1.0),
        ),
        RuleParam(
            "max_punsafe",
            "keep rows whose NSFW probability is at most this (0 to 1; off unless given)",
            _bounded("max_punsafe", 0.0, 1.0),
        ),
    ),
    rule_defaults={"min_similarity": DEFAULT_MIN_SIMILARITY},
    keep=keep,
)
