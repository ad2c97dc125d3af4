"""The ``embed-image`` kind's compute class, which shares its code with clip-filter."""

from __future__ import annotations

from allmende.client.tasks.clip_filter import EmbedImage

__all__ = ["EmbedImage"]
