"""Many new rows at once: COPY where the database has it (PostgreSQL), the multi-row INSERTs
of SQLAlchemy elsewhere; either way inside the caller's transaction, the values as
SQLAlchemy would bind them.

A list import writes its new subscribers and subscriptions through :func:`insert_rows`. On
PostgreSQL a binary COPY costs the server and this process a fraction of the INSERTs'
(which carry every value as a parameter of a statement the server plans); the row ids are
taken from the table's sequence first (:func:`next_ids`), so that the caller knows them as
it would from RETURNING. A COPY, like the INSERT it replaces, fails as a whole on a
constraint (the caller's transaction then rolls back): it is only for rows the caller
decided are new.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Column, ColumnDefault, Table, func, insert, select
from sqlalchemy.exc import DatabaseError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.storage.engine import capabilities


async def next_ids(conn: AsyncConnection, table: Table, count: int) -> list[int]:
    """``count`` new ids from ``table``'s own sequence (PostgreSQL), in increasing order."""
    sequence = func.pg_get_serial_sequence(table.name, "id")
    query = select(func.nextval(sequence)).select_from(func.generate_series(1, count))
    return sorted(int(i) for i in (await conn.execute(query)).scalars())


async def insert_rows(
    conn: AsyncConnection, table: Table, values: Sequence[dict[str, Any]]
) -> None:
    """Insert ``values`` (one dict per row, the same keys in each) into ``table``: COPY
    where the database has it, else multi-row INSERTs. Python-side column defaults (a
    ``default=`` callable or value) are applied for the keys left out, as INSERT would."""
    if not values:
        return
    if not capabilities(conn.dialect).copy:
        # With RETURNING, SQLAlchemy batches them ("insertmanyvalues").
        await conn.execute(insert(table).returning(table.c.id), list(values))
        return
    given = list(values[0])
    made = {c.name: _maker(c) for c in table.c if c.name not in values[0] and c.default}
    names = given + list(made)
    processors = [table.c[name].type.bind_processor(conn.dialect) for name in names]
    records = [
        tuple(
            _bound(row[name] if name in row else made[name](), process)
            for name, process in zip(names, processors, strict=True)
        )
        for row in values
    ]
    # SQLAlchemy's asyncpg adapter begins the driver's transaction at the first statement
    # it runs: this one runs first, so that the COPY is inside the caller's transaction. It
    # also lets the server keep its generic plans for the COPY's foreign-key checks (a list
    # import forces custom plans for its look-ups: each checked row was planned anew, twice
    # the COPY's time), until the caller's setting is put back.
    setting = (await conn.execute(_PLANS_AUTO)).scalar_one()
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None  # an open connection has its driver's
    try:
        await driver.copy_records_to_table(table.name, records=records, columns=names)
    except Exception as exc:
        translated = _as_sqlalchemy(exc, f"COPY {table.name} ({', '.join(names)}) FROM STDIN")
        if translated is None:
            raise
        raise translated from exc
    await conn.execute(select(func.set_config("plan_cache_mode", setting, True)))


_PLANS_AUTO = select(
    func.current_setting("plan_cache_mode"), func.set_config("plan_cache_mode", "auto", True)
)  # the first column is read before the second sets it (a target list runs in order)


def _maker(column: Column[Any]) -> Callable[[], Any]:
    """What makes a column's value when a row leaves it out: its Python-side default, a
    value or a callable (SQLAlchemy hands a callable an execution context; it takes none)."""
    default = column.default
    assert isinstance(default, ColumnDefault)
    if default.is_callable:
        function = default.arg
        return lambda: function(None)
    value = default.arg
    return lambda: value


def _as_sqlalchemy(exc: Exception, statement: str) -> DBAPIError | None:
    """The driver's error as SQLAlchemy would have raised it (the driver is called
    directly here), so that the caller handles it as any other statement's."""
    import asyncpg

    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(statement, None, exc)
    if isinstance(exc, asyncpg.PostgresError):
        return DatabaseError(statement, None, exc)
    if isinstance(exc, asyncpg.InterfaceError):
        return OperationalError(statement, None, exc)
    return None  # OSError and the like: as they are


def _bound(value: Any, process: Callable[[Any], Any] | None) -> Any:
    """``value`` as SQLAlchemy binds it (a JSON value as its text, say)."""
    return value if process is None else process(value)
