"""A fast path for the store's prebuilt statements, and the connection the store works with.

SQLAlchemy spends Python on each `execute` (cache key, execution context, result metadata)
that costs more than SQLite's own work, and the data path runs some 45 statements per
validated unit. Measured on SQLite primary-key reads (SQLAlchemy 2.1.9, 2-core machine):
9-11 µs per statement here against 17-21 µs through SQLAlchemy on a quiet machine, and
17-27 against 53-69 µs with the cores busy (2 to 3.5 times faster either way). Statements
built once and marked with `prebuilt` are compiled once per dialect and set of parameter
names, and run straight on the DB-API cursor of the same connection, inside the same
transaction. Every other statement goes through SQLAlchemy as before.

On PostgreSQL each statement is a round trip to the server, and a thread waiting on one
gives up the GIL and must win it back: writes whose outcome the store does not read are
held back (`Conn.defer`) and pipelined with the next statement or the COMMIT.

What a plan leaves to SQLAlchemy: statements with Python-side column defaults to fill in,
expanding IN lists and post-compile parameters. The type conversions SQLAlchemy applies to
parameters and result columns, a plan applies too, and database errors are raised as
SQLAlchemy's own `DBAPIError` subclasses either way.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

S = TypeVar("S", bound=ClauseElement)

_PREBUILT: set[int] = set()


def prebuilt(statement: S) -> S:
    """Mark a statement that lives for the whole process as one to run on the fast path."""
    _PREBUILT.add(id(statement))
    return statement


class _Plan:
    __slots__ = (
        "binds",
        "checked",
        "compiled",
        "loaders",
        "positional",
        "row_type",
        "sources",
        "sql",
    )

    def __init__(self, compiled: Any, keys: frozenset[str]) -> None:
        self.compiled = compiled
        self.sql: str = compiled.string
        self.positional: tuple[str, ...] | None = (
            tuple(compiled.positiontup) if compiled.positional else None
        )
        # Type conversions of parameters (SQLite: Float to float, binaries to memoryview).
        self.binds: dict[str, Any] = dict(compiled._bind_processors)
        # Where each bound value comes from, as SQLAlchemy's construct_params finds it: the
        # caller's parameter of that key (the set of keys is part of the plan), else the
        # value bound in the statement. Checked against construct_params on the first run.
        self.sources: list[tuple[str, str | None, Any]] | None = []
        self.checked = False
        escaped = compiled.escaped_bind_names or {}
        for bind, name in compiled.bind_names.items():
            key = bind.key if bind.key in keys else name if name in keys else None
            if key is None and bind.required:
                self.sources = None  # construct_params raises the error SQLAlchemy would
                break
            self.sources.append((escaped.get(name, name), key, bind.effective_value))
        # Set at the first fetch, from the cursor's description.
        self.row_type: type | None = None
        self.loaders: list[Any] | None = None

    def parameters(self, params: Mapping[str, Any]) -> Any:
        sources = self.sources
        if sources is None:
            values = self.compiled.construct_params(params, _check=True)
        else:
            values = {
                name: params[key] if key is not None else const for name, key, const in sources
            }
            if not self.checked:  # the first run: the same values as SQLAlchemy's, or its
                self.checked = True
                reference = self.compiled.construct_params(params, _check=True)
                if reference != values:
                    self.sources = None
                    values = reference
        for name, process in self.binds.items():
            if name in values and values[name] is not None:
                values[name] = process(values[name])
        if self.positional is None:
            return values
        return tuple(values[name] for name in self.positional)

    def describe(self, dialect: Dialect, description: Any) -> None:
        names = [column[0] for column in description]
        self.row_type = namedtuple("Row", names, rename=True)  # type: ignore[misc]
        columns = self.compiled._result_columns
        if len(columns) == len(description):
            loaders = [
                column[3]._cached_result_processor(dialect, described[1])
                for column, described in zip(columns, description, strict=True)
            ]
            self.loaders = loaders if any(loaders) else []
        else:  # textual SQL: no types to apply
            self.loaders = []


@cache
def _pipeline_supported() -> bool:
    """Whether psycopg's libpq can pipeline (libpq 14 or newer)."""
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


# (statement id, dialect name, parameter names) -> plan, or None where SQLAlchemy must run it
_PLANS: dict[tuple[int, str, frozenset[str]], _Plan | None] = {}


def _plan(statement: ClauseElement, dialect: Dialect, keys: frozenset[str]) -> _Plan | None:
    key = (id(statement), dialect.name, keys)
    if key in _PLANS:
        return _PLANS[key]
    compiled: Any = statement.compile(dialect=dialect, column_keys=sorted(keys))
    usable = (
        not compiled.insert_prefetch
        and not compiled.update_prefetch
        and "POSTCOMPILE" not in compiled.string
        and not any(bind.expanding or bind.callable for bind in compiled.binds.values())
    )
    plan = _Plan(compiled, keys) if usable else None
    _PLANS[key] = plan
    return plan


_NOT_PSYCOPG = object()


class Rows:
    """The rows of one fast-path statement: the subset of SQLAlchemy's Result the store uses."""

    __slots__ = ("_cursor", "_dialect", "_plan", "rowcount")

    def __init__(self, cursor: Any, plan: _Plan, dialect: Dialect) -> None:
        self._cursor = cursor
        self._plan = plan
        self._dialect = dialect
        self.rowcount: int = cursor.rowcount

    def _maker(self) -> Any:
        plan = self._plan
        if plan.row_type is None or plan.loaders is None:
            plan.describe(self._dialect, self._cursor.description)
        assert plan.row_type is not None and plan.loaders is not None
        make = plan.row_type._make  # type: ignore[attr-defined]
        loaders = plan.loaders
        if not loaders:
            return make
        return lambda row: make(
            [v if f is None or v is None else f(v) for f, v in zip(loaders, row, strict=True)]
        )

    def _returns_rows(self) -> bool:
        """Whether the statement returned rows (a SELECT, or RETURNING). psycopg's
        `description` builds a Column object per column for each call; its result's field
        count says the same."""
        result: Any = getattr(self._cursor, "pgresult", _NOT_PSYCOPG)
        if result is _NOT_PSYCOPG:
            return self._cursor.description is not None
        return result is not None and result.nfields > 0

    def first(self) -> Any:
        if not self._returns_rows():
            return None
        make = self._maker()
        row = self._cursor.fetchone()
        self._cursor.close()
        return None if row is None else make(row)

    def all(self) -> list[Any]:
        if not self._returns_rows():
            return []
        make = self._maker()
        return [make(row) for row in self._cursor.fetchall()]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.all())

    def one(self) -> Any:
        rows = self.all()
        if len(rows) != 1:
            raise LookupError(f"expected one row, got {len(rows)}")
        return rows[0]

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalars(self) -> _Scalars:
        return _Scalars(row[0] for row in self.all())


class _Scalars(list[Any]):
    """The first column of each row, also answering SQLAlchemy's ScalarResult methods."""

    def all(self) -> list[Any]:
        return list(self)

    def first(self) -> Any:
        return self[0] if self else None


class Conn:
    """A SQLAlchemy connection whose `execute` takes the fast path for prebuilt statements,
    and which on PostgreSQL can hold writes back to send several in one round trip.

    With `begin` (PostgreSQL, a connection in autocommit mode) it is also the transaction:
    the BEGIN travels with the first statement, and `commit` or `rollback` ends it."""

    __slots__ = ("_begun", "_deferred", "_pipelined", "_sa", "dialect")

    def __init__(self, sa: Connection, begin: str = "") -> None:
        self._sa = sa
        self.dialect: Dialect = sa.dialect
        self._pipelined = self.dialect.name == "postgresql" and _pipeline_supported()
        # SQL and bound values held back by `defer` (and the BEGIN), in order.
        self._deferred: list[tuple[str, Any]] = [(begin, None)] if begin else []
        self._begun = False  # the BEGIN has been sent

    @property
    def sa(self) -> Connection:
        """The SQLAlchemy connection, for statements run on it directly: anything held back
        is sent first."""
        self.flush()
        return self._sa

    def execute(self, statement: Any, params: Any = None) -> Any:
        """Run a statement with one set of parameters (a mapping), or many (a list of them).
        Writes held back by `defer` go first, in the same round trip where they can."""
        if id(statement) in _PREBUILT and (params is None or isinstance(params, Mapping)):
            params = params or {}
            plan = _plan(statement, self.dialect, frozenset(params))
            if plan is not None:
                if self._deferred:
                    return self._pipeline([(plan, params)])[0]
                return self._run(plan, params)
        return self.sa.execute(statement, params)

    def execute_all(self, statements: Sequence[tuple[Any, Mapping[str, Any]]]) -> list[Any]:
        """Run prebuilt statements one after the other, as `execute` would, and return the
        rows of each; on PostgreSQL all in one round trip. Each still sees what the ones
        before it did (and, in READ COMMITTED, what others committed before it ran)."""
        plans = [(_plan(st, self.dialect, frozenset(pa)), pa) for st, pa in statements]
        if not self._pipelined or any(plan is None for plan, _ in plans):
            return [self.execute(st, pa) for st, pa in statements]
        return self._pipeline([(plan, pa) for plan, pa in plans if plan is not None])

    def commit_with(self, statements: Sequence[tuple[Any, Mapping[str, Any]]]) -> list[Any]:
        """Run prebuilt statements, as `execute_all` would, and commit: on PostgreSQL all in
        one round trip with the COMMIT, which is sent whatever the statements found. The
        rows of each. Nothing more may run in the transaction after it.

        Elsewhere the statements run at once and the transaction commits where it ends."""
        plans = [(_plan(st, self.dialect, frozenset(pa)), pa) for st, pa in statements]
        if not self._pipelined or any(plan is None for plan, _ in plans):
            rows = [self.execute(st, pa) for st, pa in statements]
            self.commit()
            return rows
        return self._pipeline([(plan, pa) for plan, pa in plans if plan is not None], commit=True)

    def defer(self, statement: Any, params: Mapping[str, Any]) -> None:
        """Run a write whose outcome nobody reads (no rows, no row count), as late as order
        allows: on PostgreSQL it travels with the next statement of the transaction, or with
        its COMMIT, in one pipelined round trip; its error, if any, is raised there. The
        order of statements is kept, so a later read sees it. Elsewhere it runs at once."""
        if self._pipelined and id(statement) in _PREBUILT:
            plan = _plan(statement, self.dialect, frozenset(params))
            if plan is not None:
                self._deferred.append((plan.sql, plan.parameters(params)))
                return
        self.execute(statement, params)

    def flush(self) -> None:
        """Send what `defer` held back."""
        if self._deferred:
            self._pipeline([])

    def commit(self) -> None:
        """Commit, sending held-back writes and the COMMIT in one round trip (PostgreSQL).
        Without `begin`, the transaction's own commit then finds nothing left to do."""
        if self._opening and len(self._deferred) == 1:
            self._deferred = []  # begun, but nothing ran: nothing to commit
        elif self._begun or self._deferred:
            self._pipeline([], commit=True)

    def rollback(self) -> None:
        """Undo a transaction this connection began (`begin`)."""
        self._deferred = []
        if self._begun:
            self._begun = False
            # A connection that broke cannot roll back; the pool then discards it (its own
            # rollback on return fails too), and the error that broke it is the one raised.
            with suppress(Exception):
                self._sa.connection.dbapi_connection.rollback()  # type: ignore[union-attr]

    @property
    def _opening(self) -> bool:
        """The BEGIN is still held back, first in line."""
        return not self._begun and bool(self._deferred) and self._deferred[0][1] is None

    def _pipeline(
        self, then: list[tuple[_Plan, Mapping[str, Any]]], commit: bool = False
    ) -> list[Rows]:
        """Send the held-back SQL, then `then`'s statements (and a COMMIT), in one round
        trip; the rows of each of `then`."""
        opening = self._opening
        deferred, self._deferred = self._deferred, []
        dbapi_connection: Any = self._sa.connection.dbapi_connection
        writes = dbapi_connection.cursor()
        cursors: list[Any] = []
        sql = ""
        try:
            with dbapi_connection.pipeline():
                for sql, values in deferred:
                    writes.execute(sql, values)
                for plan, params in then:
                    cursors.append(dbapi_connection.cursor())
                    sql = plan.sql
                    cursors[-1].execute(sql, plan.parameters(params))
                if commit:
                    sql = "COMMIT"
                    writes.execute(sql)
        except self.dialect.loaded_dbapi.Error as exc:
            self._begun = self._begun or opening  # rollback() must end it
            for cursor in cursors:
                cursor.close()
            raise self._error(exc, sql, None) from exc
        finally:
            writes.close()
        self._begun = (self._begun or opening) and not commit
        return [
            Rows(cursor, plan, self.dialect)
            for cursor, (plan, _) in zip(cursors, then, strict=True)
        ]

    def _error(self, exc: Any, sql: str, values: Any, cursor: Any = None) -> DBAPIError:
        """The DB-API error as SQLAlchemy raises it, invalidating a connection that is gone."""
        dbapi_connection: Any = self._sa.connection.dbapi_connection
        gone = self.dialect.is_disconnect(exc, dbapi_connection, cursor)
        if gone:
            self._sa.invalidate(exc)
        error: DBAPIError = DBAPIError.instance(
            sql,
            values,
            exc,
            self.dialect.loaded_dbapi.Error,
            connection_invalidated=gone,
            dialect=self.dialect,
        )
        return error

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A savepoint, sent straight to the DB-API connection (SQLAlchemy's own costs some
        200 µs a pair): what the block wrote is undone alone when it raises."""
        self.flush()
        dbapi_connection: Any = self._sa.connection.dbapi_connection
        cursor = dbapi_connection.cursor()
        cursor.execute("SAVEPOINT allmende_item")
        try:
            yield
        except BaseException:
            cursor.execute("ROLLBACK TO SAVEPOINT allmende_item")
            cursor.execute("RELEASE SAVEPOINT allmende_item")
            raise
        else:
            cursor.execute("RELEASE SAVEPOINT allmende_item")
        finally:
            cursor.close()

    def _run(self, plan: _Plan, params: Mapping[str, Any]) -> Rows:
        dbapi_connection: Any = self._sa.connection.dbapi_connection
        cursor = dbapi_connection.cursor()
        values = plan.parameters(params)
        try:
            cursor.execute(plan.sql, values)
        except self.dialect.loaded_dbapi.Error as exc:
            cursor.close()
            raise self._error(exc, plan.sql, values, cursor) from exc
        return Rows(cursor, plan, self.dialect)
