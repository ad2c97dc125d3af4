"""Coordinator state behind one interface (`Store`), with SQL backends (SQLite by default)."""

from allmende.coordinator.store.base import Store
from allmende.coordinator.store.sql import SqlStore, open_store

__all__ = ["SqlStore", "Store", "open_store"]
