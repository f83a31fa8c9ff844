"""Statements of the click path, compiled once per dialect and run on the DBAPI cursor.

SQLAlchemy Core spends 60-80 µs of Python on each statement it runs (compiled-cache lookup,
parameter and result processing, events) where SQLite runs a click's statements in about 20 µs
each. A click runs six statements inside the writer lock, so on SQLite that overhead, not the
database, set how long every other click waited. The SQL itself stays a Core statement (one
definition, every dialect); only its execution skips the layers a click does not need.
"""

from __future__ import annotations

from collections import namedtuple

from sqlalchemy import exc

__all__ = ["Prepared"]


class Prepared:
    """A Core statement run on the raw DBAPI cursor of a SQLAlchemy connection.

    Parameters
    ----------
    stmt : sqlalchemy.sql.Executable
        A SELECT, UPDATE or INSERT with named ``bindparam``s (no expanding ``IN``).
    column_keys : sequence of str, optional
        For an ``insert(table)`` without ``values()``: the columns it sets, each bound to the
        parameter of the same name.

    Rows of a SELECT come back as named tuples of its column keys; database values are as
    the driver returns them (SQLite: booleans as 0 / 1).
    """

    def __init__(self, stmt, column_keys=None):
        self.stmt, self.column_keys = stmt, list(column_keys) if column_keys else None
        self._compiled: dict[str, tuple] = {}
        is_select = getattr(stmt, "is_select", False)
        self._row = namedtuple("Row", list(stmt.selected_columns.keys()), rename=True) if is_select else None

    def _for(self, dialect) -> tuple:
        got = self._compiled.get(dialect.name)
        if got is None:
            compiled = self.stmt.compile(dialect=dialect, column_keys=self.column_keys)
            names = tuple(compiled.positiontup) if dialect.positional else None
            # values written into the statement (``.values(filled=True)``) travel as parameters
            fixed = {name: bp.value for name, bp in compiled.binds.items() if not bp.required}
            got = self._compiled[dialect.name] = (str(compiled), names, fixed, dialect.dbapi.IntegrityError)
        return got

    def execute(self, conn, params: dict):
        """Run on ``conn`` (a SQLAlchemy ``Connection``, inside its transaction); returns the
        DBAPI cursor. A unique-constraint failure raises ``sqlalchemy.exc.IntegrityError``, as
        ``conn.execute`` would."""
        sql, names, fixed, integrity_error = self._for(conn.dialect)
        if fixed:
            params = {**fixed, **params}
        args = params if names is None else tuple(params[n] for n in names)
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute(sql, args)
        except integrity_error as error:
            cursor.close()
            raise exc.IntegrityError(sql, args, error) from None
        return cursor

    def first(self, conn, params: dict):
        """The first row as a named tuple, or None."""
        cursor = self.execute(conn, params)
        row = cursor.fetchone()
        cursor.close()
        return None if row is None else self._row._make(row)

    def one(self, conn, params: dict) -> tuple:
        row = self.first(conn, params)
        if row is None:
            raise exc.NoResultFound("no row for a statement that returns one")
        return row

    def rowcount(self, conn, params: dict) -> int:
        """Run an UPDATE / INSERT; returns the rows it changed."""
        cursor = self.execute(conn, params)
        n = cursor.rowcount
        cursor.close()
        return n
