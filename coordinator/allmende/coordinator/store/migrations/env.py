"""Alembic's environment for the coordinator database.

The coordinator runs migrations on a connection it already holds, inside its own transaction
and lock (store/migrate.py passes it as `config.attributes["connection"]`). The `alembic`
command line, for writing revisions, instead names a database with `-x url=...`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from allmende.coordinator.store.schema import metadata

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("name the database: alembic -x url=sqlite:///PATH ...")
    return url


def _run(connection: Connection | None = None) -> None:
    context.configure(
        connection=connection,
        url=None if connection is not None else _url(),
        literal_binds=connection is None,
        target_metadata=metadata,
        # SQLite alters tables by copying them; batch mode lets autogenerate write those.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():  # a no-op inside a transaction the caller holds
        context.run_migrations()


if context.is_offline_mode():
    _run()
elif (held := config.attributes.get("connection")) is not None:
    _run(held)
else:
    engine = create_engine(_url())
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()
