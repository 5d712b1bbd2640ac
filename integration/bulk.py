"""Writing and finding many rows at once, for the change feeds' pages (a hundred records, a
few statements): statements that stay short whatever the batch, so that neither the driver
nor the server parses a new one for every batch.

    bulk.insert_rows(db.session, Event.__table__, rows)        # rows: dicts with the same keys
    select(...).where(bulk.among(table.c.record_id, ids, db.session))
"""

from __future__ import annotations

import functools
import re

from sqlalchemy import ARRAY, any_, bindparam
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session


def postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_rows(session: Session, table, rows: list[dict]) -> None:
    """INSERT ``rows`` (dicts with the same keys) into ``table`` in the session's transaction,
    in their order (ids are assigned in it). PostgreSQL: ``COPY``, the rows streamed in one
    command (a multi-row VALUES of hundreds of parameters is parsed afresh by the driver, in
    Python, and by the server for every batch; an executemany runs the statement once per
    row). Elsewhere an executemany. A duplicate key raises SQLAlchemy's ``IntegrityError``
    either way."""
    if not rows:
        return
    columns = list(rows[0])
    if not postgresql(session):
        session.execute(table.insert(), rows)
        return
    import psycopg

    copy, types = _copy_statement(table, tuple(columns))
    connection = session.connection().connection.driver_connection
    try:
        with connection.cursor() as cursor, cursor.copy(copy) as stream:
            if types:
                stream.set_types(types)
            for row in rows:
                stream.write_row([row[c] for c in columns])
    except psycopg.IntegrityError as exc:  # as SQLAlchemy's own statements raise it (callers retry on it)
        raise IntegrityError(f"COPY {table.name}", None, exc) from exc


@functools.lru_cache(maxsize=64)
def _copy_statement(table, columns: tuple[str, ...]):
    """``COPY`` of these columns, and the columns' PostgreSQL types. In binary where every
    column's type is one psycopg knows by name: neither side then writes or parses text (a
    timestamp, escapes in a payload), a third of the driver's CPU for a page's rows; values
    must then be of their column's type (a ``str`` for a string, a naive ``datetime`` for a
    timestamp), which psycopg checks."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.dialects import postgresql as dialect

    target = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table.name),
                                                       sql.SQL(", ").join(map(sql.Identifier, columns)))
    names = [re.sub(r"\(.*\)", "", table.c[c].type.compile(dialect=dialect.psycopg.dialect())).lower()
             for c in columns]
    try:
        types = [psycopg.adapters.types[name].oid for name in names]
    except KeyError:
        return target, None
    return sql.Composed([target, sql.SQL(" (FORMAT BINARY)")]), types


def among(column, values: list, session: Session):
    """``column IN (values)``; on PostgreSQL ``column = ANY(array)``: one parameter, so the
    statement is the same for every batch (prepared once), not parsed afresh for each."""
    if postgresql(session):
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)
