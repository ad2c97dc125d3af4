"""Ids by prefix (store/lookup_sql.py), on every backend: what `job cancel 4f2a9c` and
`volunteers ban 1a2b3c` are resolved from."""

from __future__ import annotations

from allmende.coordinator.store.sql import SqlStore
from tests.store.helpers import add_volunteers, make_job


def test_ids_with_prefix_match_the_start_of_the_id_exactly(store: SqlStore) -> None:
    for job_id in ("job-abc123000001", "job-abc123000002", "job-abd000000000"):
        make_job(store, job_id, texts=1, unit_size=1)
    add_volunteers(store, ["1a2b3c" + "0" * 58, "1a2b3c" + "f" * 58, "ffff" + "0" * 60])
    assert store.ids_with_prefix("job", "job-abc123", 10) == [
        "job-abc123000001",
        "job-abc123000002",
    ]
    assert store.ids_with_prefix("job", "job-abc123", 1) == ["job-abc123000001"]
    assert store.ids_with_prefix("job", "job-abd", 10) == ["job-abd000000000"]
    assert store.ids_with_prefix("job", "abc123", 10) == []  # a prefix, not a substring
    assert store.ids_with_prefix("volunteer", "1a2b3c", 10) == [
        "1a2b3c" + "0" * 58,
        "1a2b3c" + "f" * 58,
    ]
    assert store.ids_with_prefix("volunteer", "ffff" + "0" * 60, 10) == ["ffff" + "0" * 60]
    # Jobs and volunteers are different namespaces.
    assert store.ids_with_prefix("volunteer", "job-", 10) == []


def test_ids_with_prefix_take_wildcards_and_case_literally(store: SqlStore) -> None:
    make_job(store, "job-abc123000001", texts=1, unit_size=1)
    # SQL LIKE wildcards in what an operator typed match only themselves...
    assert store.ids_with_prefix("job", "job-abc_23", 10) == []
    assert store.ids_with_prefix("job", "job-%", 10) == []
    assert store.ids_with_prefix("job", "%", 10) == []
    # ...and SQLite's case-blind LIKE does not leak through: ids are compared exactly.
    assert store.ids_with_prefix("job", "JOB-ABC123", 10) == []
    assert store.ids_with_prefix("job", "", 10) == ["job-abc123000001"]
