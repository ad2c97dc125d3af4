"""The researcher's tools without a dataset: a dataset's values read back into the kind's
matrix (the inverse of what the writer stores), the pinned model's check, sample sizes,
the folder layouts, and flags refused before anything is read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from allmende.cli.main import main
from allmende.protocol.errors import IntegrityError, InvalidArgument
from allmende.protocol.kinds import get_kind
from allmende.protocol.models import DEFAULT_MODEL, LID176, ModelRegistry
from allmende.research.folder import manifest_path, shard_path
from allmende.research.pinned import dataset_model
from allmende.research.recompute import sample_size


def test_embed_text_values_read_back_as_written() -> None:
    model = ModelRegistry().get(DEFAULT_MODEL)
    shape = get_kind("embed-text").shape(model, "float16")
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((5, model.dims)).astype(np.float32)
    shown = {c.name: c.show(matrix[:, part], model) for c, _, part in shape.columns}
    assert np.array_equal(shape.read(shown), matrix)


def test_filter_text_labels_read_back_as_indices_and_unknown_ones_agree_with_nothing() -> None:
    model = ModelRegistry().get(LID176)
    shape = get_kind("filter-text").shape(model, "float16")
    labels = np.array([[model.labels.index("de")], [model.labels.index("fr")]], np.float32)
    scores = np.array([[0.5], [0.875]], np.float32)
    matrix = np.hstack([labels, scores])
    shown = {c.name: c.show(matrix[:, part], model) for c, _, part in shape.columns}
    assert shown == {"language": ["de", "fr"], "language_score": [0.5, 0.875]}
    assert np.array_equal(shape.read(shown), matrix)
    forged = shape.read({"language": ["de", "no-such-label"], "language_score": [0.5, None]})
    [(_, label, label_ok), (_, score, score_ok)] = shape.by_column(forged, matrix, 0.999)
    assert label_ok.tolist() == [True, False] and label.tolist() == [1.0, 0.0]
    assert score_ok.tolist() == [True, False] and score[1] == -np.inf  # unreadable


def test_a_vector_of_the_wrong_length_is_unreadable_not_an_exception() -> None:
    model = ModelRegistry().get(DEFAULT_MODEL)
    shape = get_kind("embed-text").shape(model, "float16")
    good = [1.0] + [0.0] * (model.dims - 1)
    read = shape.read({"embedding": [good, [1.0, 0.0], None]})
    [(_, measure, ok)] = shape.by_column(read, np.tile(np.array(good, np.float32), (3, 1)), 0.9)
    assert ok.tolist() == [True, False, False] and measure[0] == pytest.approx(1.0)


def test_a_dataset_computed_with_other_weights_is_not_recomputed() -> None:
    model = ModelRegistry().get(DEFAULT_MODEL)
    manifest = {"job": {"kind": "embed-text", "tau": 0.99, "result_dtype": "float16"},
                "model": {"name": model.name, "weights_sha256": "ab" * 32}}
    with pytest.raises(IntegrityError, match="other weights"):
        dataset_model(manifest)
    manifest["model"]["weights_sha256"] = model.weights_sha256
    pinned = dataset_model(manifest)
    assert (pinned.kind.name, pinned.tau, pinned.shape.width) == ("embed-text", 0.99, 384)
    manifest["model"]["name"] = "no-such-model"
    with pytest.raises(InvalidArgument, match="registered models"):
        dataset_model(manifest)


def test_sample_sizes() -> None:
    assert sample_size(1000, 0.01, None) == 10
    assert sample_size(1000, 0.0001, None) == 1  # at least one row
    assert sample_size(10, None, 50) == 10  # at most all of them
    for fraction, rows in ((0.0, None), (1.5, None), (None, 0), (0.5, 3), (None, None)):
        with pytest.raises(InvalidArgument):
            sample_size(10, fraction, rows)


def test_both_layouts_are_found(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "manifest.json").write_text("{}")
    (flat / "part-00000.parquet").write_bytes(b"")
    assert manifest_path(flat) == flat / "manifest.json"
    assert shard_path(flat, "part-00000.parquet") == flat / "part-00000.parquet"
    hf = tmp_path / "hf"
    (hf / "_allmende").mkdir(parents=True)
    (hf / "data").mkdir()
    (hf / "_allmende" / "manifest.json").write_text("{}")
    (hf / "data" / "part-00000.parquet").write_bytes(b"")
    assert manifest_path(hf) == hf / "_allmende" / "manifest.json"
    assert shard_path(hf, "part-00000.parquet") == hf / "data" / "part-00000.parquet"
    assert shard_path(hf, "data/part-00000.parquet") == hf / "data" / "part-00000.parquet"


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--recompute", "2"], "--recompute: expected a fraction in (0, 1], got 2"),
        (["--recompute", "-0.1"], "--recompute: expected a fraction in (0, 1], got -0.1"),
        (["--recompute", "0"], "--recompute: expected a fraction in (0, 1], got 0"),
        (["--recompute", "half"], "--recompute: expected a number, got 'half'"),
        (["--recompute-rows", "0"], "--recompute-rows: expected a number >= 1, got 0"),
        (["--recompute", "0.5", "--recompute-rows", "3"], "not allowed with argument"),
        (["--recompute", "0.5", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_recompute_flags_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: list[str], needle: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["dataset", "verify", str(tmp_path), "--fingerprint", "ab" * 32, *flags])
    assert exited.value.code == 2
    assert needle in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["search", "DIR", "a query", "-k", "0"], "-k: expected a number >= 1, got 0"),
        (["index", "DIR", "--type", "ivf"], "invalid choice: 'ivf'"),
    ],
)
def test_bad_search_flags_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["dataset", *argv])
    assert exited.value.code == 2
    assert needle in capsys.readouterr().err


def test_index_of_a_folder_that_is_not_a_dataset(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["dataset", "index", str(tmp_path)]) == 1
    assert "manifest.json is missing" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text(json.dumps({"shards": 3}))
    assert main(["dataset", "index", str(tmp_path)]) == 1
    assert "not a dataset manifest" in capsys.readouterr().err


def test_an_empty_dataset_recomputes_nothing_and_loads_no_model(tmp_path: Path) -> None:
    from allmende.research.recompute import recompute

    model = ModelRegistry().get(DEFAULT_MODEL)
    (tmp_path / "manifest.json").write_text(json.dumps({
        "job": {"kind": "embed-text", "tau": 0.999, "result_dtype": "float16"},
        "model": {"name": model.name, "weights_sha256": model.weights_sha256},
        "rows": 0, "shards": [],
    }))
    report = recompute(tmp_path, fraction=0.5, computers=None)
    assert (report.rows_checked, report.rows_total, report.ok) == (0, 0, True)
