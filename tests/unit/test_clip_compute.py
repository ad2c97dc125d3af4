"""The image kinds' compute on the volunteer (client/allmende/client/tasks/clip_filter.py):
the tiny CLIP and the real Open-NSFW on the bundled photographs and on broken files."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allmende.protocol.kinds.clip_filter import CLIP_FILTER, SIMILARITY_EPSILON
from allmende.protocol.kinds.embed_image import EMBED_IMAGE
from allmende.protocol.kinds.image_inputs import MAX_IMAGE_PIXELS
from allmende.protocol.models import ModelSpec
from tests.conftest import read_images

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, format="PNG")
    return out.getvalue()


def broken() -> dict[str, tuple[bytes, str, tuple[int, int]]]:
    """name -> (file, status every volunteer must report, (width, height))."""
    photo = read_images()[0][1]
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    return {
        "empty": (b"", "empty", (0, 0)),
        "not an image": (b"GIF89a but not really", "undecodable", (0, 0)),
        "truncated": (photo[: len(photo) // 3], "undecodable", (0, 0)),
        "bomb": (png(side, side), "too-large", (side, side)),
        "just small enough": (png(side - 1, side - 1), "ok", (side - 1, side - 1)),
    }


def run(kind_module: str, spec: ModelSpec, batch: int, texts: list[str], images: list[bytes]):
    from allmende.client.tasks.clip_filter import ClipFilter, EmbedImage

    cls = ClipFilter if kind_module == "clip-filter" else EmbedImage
    computer = cls(Path(spec.source), spec, "cpu", batch, 2)
    try:
        return computer.compute(texts, None, images=images)
    finally:
        computer.close()


@pytest.mark.slow
def test_broken_images_are_row_statuses_not_failures(tiny_clip: ModelSpec) -> None:
    cases = broken()
    images = [data for data, _, _ in cases.values()]
    matrix = run("clip-filter", tiny_clip, 4, list(cases), images)
    shape = CLIP_FILTER.shape(tiny_clip, "float16")
    shape.check(shape.rounded(matrix))
    values = shape.split(matrix)
    status = CLIP_FILTER.results[-1].show(values["status"], tiny_clip)
    assert status == [want for _, want, _ in cases.values()]
    sizes = [(int(w), int(h)) for w, h in np.hstack([values["width"], values["height"]])]
    assert sizes == [size for _, _, size in cases.values()]
    digests = [bytes(r.astype(np.uint8)).hex() for r in values["image_sha256"]]
    assert digests == [hashlib.sha256(data).hexdigest() for data in images]
    shape.check_inputs(matrix, images)
    for row, (_, want, _) in enumerate(cases.values()):
        if want != "ok":
            assert not values["image_embedding"][row].any()
            assert values["similarity"][row, 0] == 0 and values["punsafe"][row, 0] == 0


@pytest.mark.slow
def test_batch_size_moves_results_far_less_than_the_kinds_tolerances(
    tiny_clip: ModelSpec,
) -> None:
    """What the tolerances in protocol/kinds/clip_filter.py rest on, measured on CPU."""
    rows = read_images()
    texts, images = [r[2] for r in rows], [r[1] for r in rows]
    one = run("clip-filter", tiny_clip, 1, texts, images)
    many = run("clip-filter", tiny_clip, 16, texts, images)
    shape = CLIP_FILTER.shape(tiny_clip, "float16")
    a, b = shape.split(one), shape.split(many)
    assert np.abs(a["similarity"] - b["similarity"]).max() < SIMILARITY_EPSILON / 100
    assert np.abs(a["punsafe"] - b["punsafe"]).max() < 1e-5
    assert shape.compare(shape.rounded(one), shape.rounded(many), 0.99999).agrees
    # embed-image gives the same image columns as clip-filter.
    alone = EMBED_IMAGE.shape(tiny_clip, "float16").split(
        run("embed-image", tiny_clip, 16, [""] * len(images), images)
    )
    for column in ("image_embedding", "width", "height", "image_sha256", "status"):
        assert np.allclose(alone[column], b[column], atol=1e-6), column


def test_device_auto_picks_the_cpu_where_there_is_no_gpu(tiny_clip: ModelSpec) -> None:
    """`dataset verify --recompute` passes --device's default, auto, straight through."""
    import torch

    from allmende.client.tasks.clip_model import ClipModel

    model = ClipModel(Path(tiny_clip.source), "auto")
    assert model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
