"""The backends every shared store test runs against (CONVENTIONS.md, item 4)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from allmende.coordinator.store.sql import SqlStore, open_store
from tests.store.helpers import add_volunteers


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database's URL, once per backend."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    if request.param == "sqlite-memory":
        return "sqlite://"
    return "sqlite:///" + str(tmp_path / "store.db")


@pytest.fixture(params=["sqlite-file", "postgresql"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database that several stores (as several processes would) can open at once."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return "sqlite:///" + str(tmp_path / "store.db")


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    s = open_store(db_url)
    add_volunteers(s)
    yield s
    s.close()


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[SqlStore]:
    """A PostgreSQL store with the helper volunteers, for what only PostgreSQL does."""
    s = open_store(postgres_url)
    add_volunteers(s)
    yield s
    s.close()
