"""Which sampled rows of an image dataset can be recomputed: those whose image the
researcher supplied (by id, research/supplied.py) and whose bytes are the ones the row was
computed from, by the kind's digest column of its image input (`image_sha256`). A supplied
image with another sha256 is not the row's image (a different download, a re-encoded
file): the row is reported as such, not recomputed, and never counted as a disagreement of
the model. Rows without a supplied image are skipped and counted."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allmende.protocol.errors import FailedPrecondition
from allmende.research.folder import Shard, read_rows
from allmende.research.pinned import DatasetModel
from allmende.research.supplied import read_images

IMAGE_INPUT = "image"


@dataclass(frozen=True)
class ImageMismatch:
    id: str
    supplied_sha256: str
    row_sha256: str  # what the dataset's row says it was computed from


@dataclass(frozen=True)
class ImageRows:
    positions: np.ndarray  # the sampled rows to recompute, ascending
    images: dict[str, bytes]  # their images by id
    skipped: int  # sampled rows without a supplied image
    mismatches: list[ImageMismatch]


def image_digest_column(pinned: DatasetModel) -> str:
    """The result column holding the sha256 of each row's image, as the kind declares it."""
    for column in pinned.kind.results:
        if getattr(column, "of_input", "") == IMAGE_INPUT:
            return column.name
    raise FailedPrecondition(
        f"{pinned.kind.name} declares no digest of its image input: its rows cannot be "
        "matched with supplied images"
    )


def select(
    pinned: DatasetModel, parts: Sequence[Shard], positions: np.ndarray, files: Sequence[Path]
) -> ImageRows:
    digest = image_digest_column(pinned)
    values = read_rows(parts, positions, ["id", digest])
    ids = [str(i) for i in values["id"]]
    supplied = read_images(files, set(ids)) if files else {}
    keep: list[int] = []
    mismatches: list[ImageMismatch] = []
    for n, (key, stored) in enumerate(zip(ids, values[digest], strict=True)):
        image = supplied.get(key)
        if image is None:
            continue
        actual = hashlib.sha256(image).hexdigest()
        if actual == str(stored):
            keep.append(n)
        else:
            mismatches.append(ImageMismatch(key, actual, str(stored)))
    chosen = positions[np.asarray(keep, dtype=np.int64)]
    images = {ids[n]: supplied[ids[n]] for n in keep}
    return ImageRows(chosen, images, len(ids) - len(keep) - len(mismatches), mismatches)
