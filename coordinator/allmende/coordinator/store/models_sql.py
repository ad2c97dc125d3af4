"""Served models in the SQL store: adding one, reading them.

A mixin of `SqlStore` (see sql.py). The domain (domain/models.py) checks the files and signs
the manifest; this records it. Two operators adding the same name at once meet on the
primary key: one wins, the other gets AlreadyExists.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.records import ModelRecord
from allmende.coordinator.store.sql_base import SqlBase
from allmende.protocol.errors import AlreadyExists


class ModelQueries(SqlBase):
    def add_model(self, model: ModelRecord) -> None:
        """Record a served model; AlreadyExists when its name (or pin) is taken."""
        try:
            with self._tx() as conn:
                taken = conn.execute(
                    select(t.models.c.name).where(
                        (t.models.c.name == model.name) | (t.models.c.pin == model.pin)
                    )
                ).first()
                if taken is not None:
                    raise AlreadyExists(
                        f"model {model.name!r}: a served model of this name or with these "
                        f"files ({taken[0]!r}) exists already"
                    )
                conn.execute(
                    t.models.insert().values(
                        name=model.name,
                        pin=model.pin,
                        manifest=model.manifest,
                        signature=model.signature,
                        created_ms=model.created_ms,
                    )
                )
        except SqlIntegrityError:  # a concurrent add of the same name won the race
            raise AlreadyExists(f"model {model.name!r} exists already") from None

    def get_model(self, name: str) -> ModelRecord | None:
        with self._read() as conn:
            row = conn.execute(select(t.models).where(t.models.c.name == name)).first()
        return None if row is None else _record(row)

    def list_models(self) -> list[ModelRecord]:
        with self._read() as conn:
            rows = conn.execute(select(t.models).order_by(t.models.c.name)).all()
        return [_record(row) for row in rows]


def _record(row: object) -> ModelRecord:
    m = row._mapping  # type: ignore[attr-defined]
    return ModelRecord(
        m["name"], m["pin"], bytes(m["manifest"]), bytes(m["signature"]), int(m["created_ms"])
    )
