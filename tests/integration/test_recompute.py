"""`allmende dataset verify --recompute`: real datasets (a whole job with real volunteers and
the real models) recomputed on this machine; rows forged under a valid signature caught by
recomputing alone, named by id and column."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from allmende.cli.main import main
from allmende.protocol.signing import SigningKey
from tests.integration.research_data import make_dataset, republish

CORPUS = Path(__file__).resolve().parents[1] / "data" / "multilingual" / "sentences.tsv"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def embedded(
    tmp_path_factory: pytest.TempPathFactory, shared_computer: object, stsb_sentences: list[str]
) -> Iterator[tuple[Path, SigningKey, list[str]]]:
    texts = list(dict.fromkeys(stsb_sentences))[:60]
    ids = [f"s{i:03d}" for i in range(len(texts))]
    folder, key = make_dataset(
        tmp_path_factory.mktemp("embed"), shared_computer, texts, ids, unit_size=16
    )
    yield folder, key, ids


@pytest.fixture(scope="module")
def filtered(
    tmp_path_factory: pytest.TempPathFactory, shared_computer: object
) -> Iterator[tuple[Path, SigningKey, list[str]]]:
    with CORPUS.open(encoding="utf-8", newline="") as fh:
        rows = [(r["id"], r["text"]) for r in csv.DictReader(fh, delimiter="\t")][:120]
    ids, texts = [r[0] for r in rows], [r[1] for r in rows]
    folder, key = make_dataset(
        tmp_path_factory.mktemp("filter"), shared_computer, texts, ids, unit_size=32,
        kind="filter-text", model="lid-176", rule={"keep_languages": "de"},
    )
    yield folder, key, ids


def copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


@pytest.mark.slow
def test_recomputing_every_row_of_a_real_embedding_dataset_agrees(
    capsys: pytest.CaptureFixture[str], embedded: tuple[Path, SigningKey, list[str]]
) -> None:
    folder, key, ids = embedded
    code, out, err = run_cli(capsys, "dataset", "verify", str(folder), "--fingerprint",
                             key.fingerprint, "--recompute", "1", "--device", "cpu", "--json")
    assert code == 0, err
    report = json.loads(out)
    found = report["recompute"]
    assert report["ok"] is True
    assert (found["kind"], found["model"]) == ("embed-text", "all-MiniLM-L6-v2")
    assert found["rows_checked"] == found["rows_total"] == len(ids)
    assert found["disagreements"] == []
    assert found["measure"] == "row cosine"
    # The same model on the same machine: fp16 rounding is all that separates them.
    assert found["lowest_agreement"] > 0.9999
    assert found["lowest_id"] in ids


@pytest.mark.slow
def test_a_sample_is_as_large_as_asked_and_reproducible_by_its_seed(
    capsys: pytest.CaptureFixture[str], embedded: tuple[Path, SigningKey, list[str]]
) -> None:
    folder, key, ids = embedded
    args = ["dataset", "verify", str(folder), "--fingerprint", key.fingerprint,
            "--device", "cpu"]
    code, out, _ = run_cli(capsys, *args, "--recompute-rows", "7", "--seed", "11", "--json")
    assert code == 0
    first = json.loads(out)["recompute"]
    assert (first["rows_checked"], first["seed"]) == (7, 11)
    code, out, _ = run_cli(capsys, *args, "--recompute-rows", "7", "--seed", "11", "--json")
    assert json.loads(out)["recompute"]["lowest_id"] == first["lowest_id"]
    # 10 % of 60 rows is 6; asking for more rows than there are checks them all.
    code, out, _ = run_cli(capsys, *args, "--recompute", "0.1", "--json")
    assert json.loads(out)["recompute"]["rows_checked"] == 6
    code, out, _ = run_cli(capsys, *args, "--recompute-rows", "1000")
    assert code == 0
    assert f"recomputed {len(ids)} of {len(ids)} rows with all-MiniLM-L6-v2" in out
    assert "every recomputed row agrees" in out


@pytest.mark.slow
def test_a_forged_embedding_under_a_valid_signature_is_caught_only_by_recomputing(
    capsys: pytest.CaptureFixture[str], embedded: tuple[Path, SigningKey, list[str]],
    tmp_path: Path,
) -> None:
    folder, key, _ = embedded
    forged = copy(folder, tmp_path)

    victim = ""

    def swap(columns: dict[str, list[object]]) -> None:
        # Row 3 gets row 9's embedding: unit length, plausible, and wrong.
        nonlocal victim
        victim = str(columns["id"][3])
        columns["embedding"][3] = columns["embedding"][9]

    republish(forged, key, swap)
    verify = ["dataset", "verify", str(forged), "--fingerprint", key.fingerprint]
    code, _, err = run_cli(capsys, *verify)
    assert code == 0, err  # signature, checksums, Merkle root: all vouch for the forgery
    code, out, err = run_cli(capsys, *verify, "--recompute", "1", "--device", "cpu")
    assert code == 1
    assert f"disagrees: row {victim} column embedding" in out
    assert "1 row(s) that disagree" in err
    code, out, _ = run_cli(capsys, *verify, "--recompute", "1", "--device", "cpu", "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    [bad] = report["recompute"]["disagreements"]
    assert (bad["id"], bad["column"]) == (victim, "embedding")
    assert bad["measure"] < 0.999 == bad["threshold"]
    assert report["recompute"]["lowest_id"] == victim


@pytest.mark.slow
def test_recomputing_a_filter_text_dataset_and_catching_forged_labels_and_scores(
    capsys: pytest.CaptureFixture[str], filtered: tuple[Path, SigningKey, list[str]],
    tmp_path: Path,
) -> None:
    folder, key, ids = filtered
    verify = ["dataset", "verify", "--fingerprint", key.fingerprint, "--recompute", "1",
              "--json"]
    code, out, err = run_cli(capsys, *verify[:2], str(folder), *verify[2:])
    assert code == 0, err
    found = json.loads(out)["recompute"]
    assert (found["kind"], found["model"]) == ("filter-text", "lid-176")
    assert found["rows_checked"] == len(ids) and found["disagreements"] == []
    assert found["measure"] == "1 - |score difference|"
    assert found["lowest_agreement"] >= 0.999

    forged = copy(folder, tmp_path)
    changed: dict[str, str] = {}

    def forge(columns: dict[str, list[object]]) -> None:
        language, score = columns["language"], columns["language_score"]
        other = "fr" if language[2] != "fr" else "de"
        language[2] = other
        score[5] = min(1.0, float(score[5]) + 0.01) if float(score[5]) < 0.99 else 0.5  # type: ignore[arg-type]
        language[7] = "xx-not-a-label"
        changed.update({str(columns["id"][2]): "language", str(columns["id"][5]):
                        "language_score", str(columns["id"][7]): "language"})

    republish(forged, key, forge)
    code, out, _ = run_cli(capsys, *verify[:2], str(forged), *verify[2:])
    assert code == 1
    report = json.loads(out)["recompute"]
    assert {(d["id"], d["column"]) for d in report["disagreements"]} == set(changed.items())
    # An unknown label reads as no label at all: it disagrees, measured as 0.
    assert all(d["measure"] in (0.0, None) or d["column"] == "language_score"
               for d in report["disagreements"])
