"""Decoding and resizing a unit's images in a pool of worker threads, ahead of the model.

Crawling@Home's GPU workers were resize-bound: one Python thread decoding JPEGs cannot feed
a model. Pillow releases the GIL while it decodes and resizes, so a thread pool scales on
the cores the model leaves free, and `Prepared.batches` keeps one batch being decoded while
the previous one is in the model (never more: a batch of decoded 224 x 224 float images
is about 1.2 MB a row).

Every row gets a status (protocol/kinds/image_inputs.py): a file of 0 bytes is `empty`; one
whose header announces more than MAX_IMAGE_PIXELS is `too-large` and is never decoded (a
decompression bomb stops here, and Pillow's own bomb check is a second line); anything
Pillow cannot open or fully decode (not an image, truncated) is `undecodable`. Width and
height are the header's, also for `too-large` rows.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from allmende.client.fetch.http import Fetched
from allmende.protocol.kinds.image_inputs import (
    EMPTY,
    MAX_IMAGE_PIXELS,
    OK,
    TOO_LARGE,
    UNDECODABLE,
)

# Pillow's own bomb check refuses to open a file past 2 x its limit, before the header's size
# can be read, and its limit is a setting that may differ between volunteers. This process
# decodes images only here, where every file is held to MAX_IMAGE_PIXELS by its header before
# a pixel is decoded; so Pillow's check is turned off, and every volunteer reports the same
# size and status for the same file.
Image.MAX_IMAGE_PIXELS = None

# A row's image: its bytes, or the fetch of its URL under way.
ImageSource = bytes | Future[Fetched]
# The image_sha256 of a URL row whose body was not fetched whole.
NOT_FETCHED_SHA256 = bytes(32)

# What one image becomes for each model that reads it: (pixel array) per model, in order.
Preprocess = Callable[[Image.Image], np.ndarray]


@dataclass(frozen=True)
class Decoded:
    """One row's image after decoding: its status, size, sha256 and, when ok, one array
    per preprocessing step asked for."""

    status: int
    width: int
    height: int
    sha256: bytes
    arrays: tuple[np.ndarray, ...] = ()


def open_image(data: bytes) -> tuple[int, int, int, Image.Image | None]:
    """(status, width, height, RGB image or None): the checks every volunteer makes, in
    the same order, so that replicas agree on a broken file's status."""
    if not data:
        return EMPTY, 0, 0, None
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            return TOO_LARGE, width, height, None
        image.load()
        return OK, width, height, image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # belt and braces
        return TOO_LARGE, 0, 0, None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return UNDECODABLE, 0, 0, None


def decode(data: bytes, steps: Sequence[Preprocess]) -> Decoded:
    digest = hashlib.sha256(data).digest()
    status, width, height, image = open_image(data)
    if image is None:
        return Decoded(status, width, height, digest)
    try:
        arrays = tuple(step(image) for step in steps)
    except (OSError, ValueError) as exc:  # e.g. a mode the processor refuses
        del exc
        return Decoded(UNDECODABLE, 0, 0, digest)
    return Decoded(OK, width, height, digest, arrays)


def decode_source(source: ImageSource, steps: Sequence[Preprocess]) -> Decoded:
    """A row's image decoded: bytes as they are, a URL row once its fetch is done."""
    if isinstance(source, bytes):
        return decode(source, steps)
    fetched = source.result()
    if fetched.status != OK:
        return Decoded(fetched.status, 0, 0, NOT_FETCHED_SHA256)
    return decode(fetched.data, steps)


class DecodePool:
    """Worker threads that decode and preprocess images (`workers`: the pool's size; by
    default the machine's cores)."""

    def __init__(self, steps: Sequence[Preprocess], workers: int | None = None) -> None:
        self.steps = tuple(steps)
        self.workers = workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="allmende-decode")

    def batches(self, images: Sequence[ImageSource], batch_size: int) -> Iterator[list[Decoded]]:
        """The images decoded, `batch_size` at a time, in order; the next batch is decoded
        while the caller works on the current one."""

        def submit(start: int) -> list[Future[Decoded]]:
            chunk = images[start : start + batch_size]
            return [self._pool.submit(decode_source, data, self.steps) for data in chunk]

        pending = submit(0) if images else []
        for start in range(0, len(images), batch_size):
            current = pending
            pending = submit(start + batch_size) if start + batch_size < len(images) else []
            yield [future.result() for future in current]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
