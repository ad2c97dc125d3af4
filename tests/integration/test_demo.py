"""`allmende demo --kind filter-text`, in-process and headless: the whole path on this
machine (a coordinator, two volunteers, a filtering job on the bundled multilingual
corpus), ending with a verified dataset whose `keep` column is the demo's rule."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from allmende.cli.main import main


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
