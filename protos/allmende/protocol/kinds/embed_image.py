"""`embed-image`: CLIP image embeddings, unit-normalised, with the image's size and sha256.

The image tower of the same CLIP model `clip-filter` uses, without captions or NSFW
scores: for building an image index (clip-retrieval, autofaiss). A row whose image could
not be used says why in `status` and has an all-zero embedding (see image_inputs.py).
"""

from __future__ import annotations

from allmende.protocol.kinds.base import KindSpec
from allmende.protocol.kinds.columns import VectorColumn
from allmende.protocol.kinds.image_inputs import (
    HEIGHT,
    IMAGE_SHA256,
    STATUS,
    WIDTH,
    image_credit,
)

EMBED_IMAGE = KindSpec(
    name="embed-image",
    description="CLIP image embeddings, unit-normalised, with the image's size and sha256",
    inputs=("image",),
    results=(
        VectorColumn(
            "image_embedding",
            "CLIP's image embedding, unit-normalised; the agreeing replicas' normalised "
            "mean; all zeros when the image could not be used",
            unit_norm=True,
            allow_empty=True,
        ),
        WIDTH,
        HEIGHT,
        IMAGE_SHA256,
        STATUS,
    ),
    compute="allmende.client.tasks.embed_image:EmbedImage",
    credit=image_credit,
    agreement="image_embedding",
)
