"""Served models in the store, on every backend: recorded whole, read back, names unique."""

from __future__ import annotations

import pytest

from allmende.coordinator.store.records import ModelRecord
from allmende.coordinator.store.sql import SqlStore
from allmende.protocol.errors import AlreadyExists


def record(name: str, pin: str) -> ModelRecord:
    return ModelRecord(name, pin, b'{"name":"' + name.encode() + b'"}', b"\x01" * 64, 1234)


def test_models_are_recorded_and_listed_by_name(store: SqlStore) -> None:
    assert store.list_models() == []
    assert store.get_model("clip") is None
    store.add_model(record("clip", "b" * 64))
    store.add_model(record("alpha", "a" * 64))
    assert store.get_model("clip") == record("clip", "b" * 64)
    assert [m.name for m in store.list_models()] == ["alpha", "clip"]


def test_a_name_or_a_pin_is_taken_once_and_nothing_changes(store: SqlStore) -> None:
    store.add_model(record("clip", "b" * 64))
    with pytest.raises(AlreadyExists, match="clip"):
        store.add_model(record("clip", "c" * 64))
    with pytest.raises(AlreadyExists):
        store.add_model(record("clip-again", "b" * 64))
    assert store.list_models() == [record("clip", "b" * 64)]
