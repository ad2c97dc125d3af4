"""`allmende demo --kind filter-text|clip-filter`, in-process and headless: the whole path
on this machine (a coordinator, two volunteers, a filtering job on the bundled multilingual
corpus or the bundled photographs), ending with a verified dataset whose `keep` column is
the demo's rule."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from allmende.cli.main import main
from allmende.demo.images import IMAGES
from allmende.protocol.models import ModelSpec
from tests.modelfolder import small_model


def test_the_filter_text_demo_ends_with_a_verified_filtered_dataset(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["demo", "--kind", "filter-text", "--headless", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "filter-text job" in out and "366 texts in 14 languages" in out
    assert "dataset pulled and verified: 366 rows" in out
    kept = re.search(r"keep: (\d+) of 366 rows pass the job's rule", out)
    assert kept is not None, out
    folder = next(tmp_path.glob("dataset-job-*"))
    shards = [p for p in sorted(folder.rglob("*.parquet")) if "_allmende" not in p.parts]
    table = pq.ParquetDataset([str(p) for p in shards]).read().to_pydict()
    wanted = [
        lang in ("de", "en", "fr") and score >= 0.5
        for lang, score in zip(table["language"], table["language_score"], strict=True)
    ]
    assert table["keep"] == wanted
    assert int(kept.group(1)) == sum(wanted) > 0


def test_the_clip_filter_demo_serves_its_clip_and_ends_with_a_verified_image_dataset(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The bundled photographs, matched and shuffled, through a CLIP the demo's coordinator
    serves: both volunteers fetch it, compute, agree, and the dataset verifies."""
    code = main(["demo", "--kind", "clip-filter", "--headless", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "clip-filter job" in out and "16 photographs with captions" in out
    assert "dataset pulled and verified: 16 rows" in out
    assert "random weights" in out and "--clip-model" in out  # says what the numbers mean
    kept = re.search(r"keep: (\d+) of 16 rows pass the job's rule", out)
    fingerprint = re.search(r"fingerprint +([0-9a-f]{64})", out)
    assert kept is not None and fingerprint is not None, out

    # Each volunteer fetched the served model from the coordinator: the demo's own build.
    built = (tmp_path / "tiny-clip" / "model.safetensors").read_bytes()
    for volunteer in ("volunteer-1", "volunteer-2"):
        (fetched,) = (tmp_path / volunteer / "models").glob("*/model.safetensors")
        assert fetched.read_bytes() == built

    folder = next(tmp_path.glob("dataset-job-*"))
    shards = [p for p in sorted(folder.rglob("*.parquet")) if "_allmende" not in p.parts]
    rows = pq.ParquetDataset([str(p) for p in shards]).read().to_pylist()
    with (IMAGES / "captions.tsv").open(encoding="utf-8", newline="") as handle:
        photos = list(csv.DictReader(handle, delimiter="\t"))
    captions = [p["caption"] for p in photos]
    wanted = {p["id"]: (p["file"], p["caption"]) for p in photos}
    wanted |= {
        f"{p['id']}-shuffled": (p["file"], caption)
        for p, caption in zip(photos, captions[1:] + captions[:1], strict=True)
    }
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == sorted(wanted) and len(rows) == 16
    for item_id, (name, caption) in wanted.items():
        row, data = by_id[item_id], (IMAGES / name).read_bytes()
        assert row["text"] == caption
        assert row["status"] == "ok"
        assert row["image_sha256"] == hashlib.sha256(data).hexdigest()
        assert (row["width"], row["height"]) == Image.open(io.BytesIO(data)).size
        image = np.asarray(row["image_embedding"], np.float32)
        text = np.asarray(row["text_embedding"], np.float32)
        assert image.shape == text.shape == (32,)
        assert abs(np.linalg.norm(image) - 1) < 1e-3 and abs(np.linalg.norm(text) - 1) < 1e-3
        assert abs(float(image @ text) - row["similarity"]) < 0.005
        assert 0.0 <= row["punsafe"] <= 1.0
        assert row["keep"] == (row["similarity"] >= 0.28 and row["punsafe"] <= 0.5)
    # The same photograph gives the same image embedding under either caption.
    assert by_id["coffee"]["image_embedding"] == by_id["coffee-shuffled"]["image_embedding"]
    assert int(kept.group(1)) == sum(r["keep"] for r in rows)
    assert main(["dataset", "verify", str(folder), "--fingerprint", fingerprint.group(1)]) == 0
    capsys.readouterr()

    # --clip-model serves the given folder instead (here the tiny weights with a model card
    # added, so other files), on the same coordinator folder: a second job and dataset.
    given = tmp_path / "given-clip"
    shutil.copytree(tmp_path / "tiny-clip", given)
    (given / "README.md").write_text("# a CLIP folder\n")
    flags = ["--clip-model", str(given), "--headless", "--dir", str(tmp_path)]
    code = main(["demo", "--kind", "clip-filter", *flags])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "model clip-vit-base-patch32 served" in out and "random weights" not in out
    assert "computing with clip-vit-base-patch32" in out
    assert "dataset pulled and verified: 16 rows" in out
    assert len(list(tmp_path.glob("dataset-job-*"))) == 2
    for volunteer in ("volunteer-1", "volunteer-2"):  # fetched too: another pin
        assert len(list((tmp_path / volunteer / "models").glob("*/README.md"))) == 1


def test_bad_demo_flags_exit_2_naming_the_flag_and_start_nothing(
    capsys: pytest.CaptureFixture[str], tiny_clip: ModelSpec, tmp_path: Path
) -> None:
    not_clip = small_model(tmp_path / "bert")  # a model folder, but not a CLIP one
    pickled = tmp_path / "pickled-clip"
    shutil.copytree(str(tiny_clip.source), pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    cases = [
        (["--kind", "clip-filter", "--clip-model", str(tmp_path / "missing")], "not a folder"),
        (["--kind", "clip-filter", "--clip-model", str(not_clip)], 'model_type "clip"'),
        (["--kind", "clip-filter", "--clip-model", str(pickled)], "pytorch_model.bin"),
        (["--kind", "embed-text", "--clip-model", str(tiny_clip.source)], "--kind clip-filter"),
    ]
    for flags, why in cases:
        code = main(["demo", "--headless", "--dir", str(tmp_path / "demo"), *flags])
        err = capsys.readouterr().err
        assert code == 2 and "--clip-model: expected" in err and why in err, (flags, err)
    with pytest.raises(SystemExit) as info:
        main(["demo", "--kind", "clip-filtre", "--dir", str(tmp_path / "demo")])
    assert info.value.code == 2 and "--kind" in capsys.readouterr().err
    assert not (tmp_path / "demo" / "coordinator").exists()
