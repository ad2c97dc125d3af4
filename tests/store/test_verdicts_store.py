"""What became of a volunteer's results, read on every backend (SQLite file, memory,
PostgreSQL): each result beside its unit's and job's state, and a job's result envelopes."""

from __future__ import annotations

from allmende.coordinator.store.sql import SqlStore
from tests.store.helpers import T0, lease, make_job, submit


def test_standings_follow_results_units_and_jobs(store: SqlStore) -> None:
    units = make_job(store, "job-v", texts=4, unit_size=2, redundancy=2)
    a1 = lease(store, "v1")
    b1 = lease(store, "v2")
    assert a1 is not None and b1 is not None and a1[1] == b1[1] == units[0]
    submit(store, *a1, "v1")
    before = store.result_standings("v1", [units[0], units[1], "job-v-unknown"])
    assert [(s.unit_id, s.state, s.unit_state, s.job_state) for s in before] == [
        (units[0], "pending", "open", "running")
    ]
    submit(store, *b1, "v2")  # the second replica: the unit is accepted
    [after] = store.result_standings("v1", [units[0]])
    assert (after.state, after.unit_state, after.rows, after.job_id) == (
        "valid",
        "accepted",
        2,
        "job-v",
    )
    assert store.result_standings("v3", [units[0]]) == []  # only one's own results
    assert store.result_standings("v1", []) == []

    other = lease(store, "v1")
    assert other is not None
    submit(store, *other, "v1")
    store.set_job_state("job-v", ("running", "paused"), "cancelled", T0 + 5)
    [cancelled] = store.result_standings("v1", [other[1]])
    assert (cancelled.state, cancelled.job_state) == ("pending", "cancelled")
    assert "cancelled" in cancelled.job_reason

    assert sorted(store.result_envelopes("job-v")) == [b"env"] * 3
    assert list(store.result_envelopes("job-none")) == []


def test_totals_for_one_volunteer_count_as_volunteers_list_does(store: SqlStore) -> None:
    units = make_job(store, "job-t", texts=6, unit_size=2, redundancy=2)
    for volunteer in ("v1", "v2"):
        while (got := lease(store, volunteer)) is not None:
            submit(store, *got, volunteer)
    assert len(units) == 3
    listed = {s.volunteer_id: s for s in store.volunteer_stats(T0 + 10)}
    for volunteer in ("v1", "v2", "v3"):
        mine = store.volunteer_totals(volunteer)
        them = listed[volunteer]
        assert (
            mine.results_valid,
            mine.results_invalid,
            mine.results_pending,
            mine.credit,
            mine.items_valid,
        ) == (
            them.results_valid,
            them.results_invalid,
            them.results_pending,
            them.credit,
            them.items_valid,
        )
    assert store.volunteer_totals("v1").results_valid == 3
    assert store.volunteer_totals("nobody") == store.volunteer_totals("v3")
