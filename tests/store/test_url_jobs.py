"""Jobs with URL rows in the store, on every backend: what a job records (its fetch rows,
its items' URLs), and that its units go only to volunteers that opted in to fetching, while
jobs of image bytes or texts go to everyone."""

from __future__ import annotations

from allmende.coordinator.domain.jobs import InputRecord, JobRequest, plan_job, resolve_settings
from allmende.coordinator.store.sql import SqlStore
from allmende.protocol.models import ModelRegistry
from tests.store.helpers import KEY, LEASE_S, T0, make_job
from tests.unit.test_image_kinds import CLIP

URL = "https://example.org/{}.jpg"


def make_url_job(store: SqlStore, job_id: str = "job-urls", created_ms: int = T0) -> list[str]:
    req = JobRequest(
        kind="clip-filter",
        model="clip",
        unit_size=2,
        redundancy=2,
        lease_seconds=LEASE_S,
        gold_fraction=0.0,
    )
    settings = resolve_settings(req, ModelRegistry(extra=(CLIP,)))
    records = [
        InputRecord("fetched-0", "a", 1, None, URL.format(0)),
        InputRecord("fetched-1", "b", 2, None, URL.format(1)),
        InputRecord("bytes", "c", 3, b"image", source_url=URL.format("source")),
        InputRecord("plain", "d", 4, b"image 2"),
    ]
    job, units, items = plan_job(job_id, req, settings, records, KEY, created_ms)
    store.create_job(job, units, items)
    return [u.unit_id for u in units]


def test_a_url_job_records_its_fetch_rows_and_each_items_url(store: SqlStore) -> None:
    make_url_job(store)
    job = store.get_job("job-urls")
    assert job is not None and (job.fetch_rows, job.url_items) == (2, 3)
    urls = {i.item_id: i.url for i in store.dataset_items("job-urls")}
    assert urls == {
        "fetched-0": URL.format(0),
        "fetched-1": URL.format(1),
        "bytes": URL.format("source"),
        "plain": "",
    }
    make_job(store, "job-text")
    text_job = store.get_job("job-text")
    assert text_job is not None and (text_job.fetch_rows, text_job.url_items) == (0, 0)


def test_units_of_url_jobs_go_only_to_volunteers_that_fetch(store: SqlStore) -> None:
    url_units = make_url_job(store)
    # Nothing else to do: a volunteer that does not fetch gets nothing, and nothing is
    # coming for it; one that fetches would.
    assert store.lease_unit("v1", "l-1", T0 + 1) is None
    assert not store.work_remaining("v1", T0 + 1)
    assert store.work_remaining("v1", T0 + 1, fetch_urls=True)
    grant = store.lease_unit("v1", "l-2", T0 + 1, fetch_urls=True)
    assert grant is not None and grant.unit_id == url_units[0]
    # A newer job of texts goes to everyone, the older URL job only to those that fetch.
    text_units = make_job(store, "job-text", created_ms=T0 + 5)
    grant = store.lease_unit("v2", "l-3", T0 + 10)
    assert grant is not None and grant.unit_id == text_units[0]
    grant = store.lease_unit("v3", "l-4", T0 + 10, fetch_urls=True)
    assert grant is not None and grant.unit_id in url_units
    assert store.work_remaining("v4", T0 + 10)  # the text job still has work for it
