"""`embed-text`: sentence embeddings of text, unit-normalised (all-MiniLM-L6-v2 by default)."""

from __future__ import annotations

from allmende.protocol.kinds.base import KindSpec, claimed_tokens
from allmende.protocol.kinds.columns import VectorColumn

EMBED_TEXT = KindSpec(
    name="embed-text",
    description="sentence embeddings of text, unit-normalised",
    inputs=("text",),
    results=(
        VectorColumn(
            "embedding",
            "the normalised mean of the agreeing replicas' rows, unit-normalised",
            unit_norm=True,
        ),
    ),
    compute="allmende.client.tasks.embed_text:EmbedText",
    default_model="all-MiniLM-L6-v2",
    credit=claimed_tokens,
    card_task="feature-extraction",
)
