"""Which sampled rows of an image dataset can be recomputed: those whose image the
researcher supplied (research/supplied.py), found by the kind's digest column of its image
input (`image_sha256`): any supplied file with that sha256 is the row's image, whatever id
it came with (a duplicate image, a row whose caption was changed). A row whose own id came
with an image of another sha256, and no file has its sha256, is not recomputed but reported
(a different download, a re-encoded file), never as a disagreement of the model. Rows
without a supplied image are skipped and counted."""

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
    stored = [str(d) for d in values[digest]]
    by_id, by_digest = read_images(files, set(ids), set(stored)) if files else ({}, {})
    keep: list[int] = []
    images: dict[str, bytes] = {}
    mismatches: list[ImageMismatch] = []
    for n, (key, wanted) in enumerate(zip(ids, stored, strict=True)):
        image = by_digest.get(wanted)
        if image is not None:
            keep.append(n)
            images[key] = image
        elif key in by_id:
            mismatches.append(ImageMismatch(key, hashlib.sha256(by_id[key]).hexdigest(), wanted))
    chosen = positions[np.asarray(keep, dtype=np.int64)]
    return ImageRows(chosen, images, len(ids) - len(keep) - len(mismatches), mismatches)
