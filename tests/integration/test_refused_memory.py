"""A refused request costs what its bytes cost while they are read, and nothing after.

Real `allmende coordinator serve` processes (SQLite: the asyncio server; PostgreSQL: the
threaded one) receive a hundred hostile requests of up to 15 MiB each, refused for their
size, for holding millions of empty entries, for lacking a signature or for being
malformed, while an honest volunteer keeps leasing and submitting. The coordinator's
resident memory, read from /proc, must not keep them: before the fix, three such calls
left over a gibibyte behind (reference cycles held the parsed requests).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fleet import ServeProcess, init_coordinator
from tests.integration.refused import GROWTH_LIMIT, MIB, refuse_many


@pytest.fixture
def sqlite_coordinator(tmp_path: Path) -> Iterator[ServeProcess]:
    data = tmp_path / "coordinator"
    init_coordinator(data)
    process = ServeProcess(data).start()
    yield process
    process.stop()


@pytest.fixture
def postgres_coordinator(tmp_path: Path, postgres_url: str) -> Iterator[ServeProcess]:
    data = tmp_path / "coordinator"
    init_coordinator(data, postgres_url)
    process = ServeProcess(data, postgres_url).start()
    yield process
    process.stop()


def test_refused_requests_leave_no_memory_behind_on_sqlite(
    sqlite_coordinator: ServeProcess,
) -> None:
    report = refuse_many(sqlite_coordinator)
    assert report.growth < GROWTH_LIMIT, f"RSS grew by {report.growth / MIB:.0f} MiB"
    assert report.honest_seconds, "the honest volunteer made no call"


@pytest.mark.slow
def test_refused_requests_leave_no_memory_behind_on_postgres(
    postgres_coordinator: ServeProcess,
) -> None:
    report = refuse_many(postgres_coordinator)
    assert report.growth < GROWTH_LIMIT, f"RSS grew by {report.growth / MIB:.0f} MiB"
    assert report.honest_seconds, "the honest volunteer made no call"
