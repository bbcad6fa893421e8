"""SQLite for Pylon guests, with the DB-API 2.0 interface of Python's sqlite3.

The common subset of :mod:`sqlite3` works the same way::

    from pylon_guest import sqlite
    with sqlite.connect("/data/app.db") as conn:       # commits on success
        conn.execute("create table if not exists t (k integer primary key, v text)")
        conn.executemany("insert into t (v) values (?)", [("a",), ("b",)])
        for k, v in conn.execute("select k, v from t where v = :v", {"v": "a"}):
            ...

``connect`` (":memory:" or a file on a preopened directory), ``cursor``,
``execute`` with ``?`` or named (``:name``, ``@name``, ``$name``) parameters,
``executemany``, ``executescript``, ``fetchone`` / ``fetchmany`` /
``fetchall`` and iteration, ``commit`` / ``rollback`` with sqlite3's
implicit transactions (``isolation_level``), context managers,
``row_factory`` (including :class:`Row`), ``description``, ``rowcount``,
``lastrowid``, and sqlite3's exception classes with ``sqlite_errorcode`` /
``sqlite_errorname``. Values are int, float, str, bytes and None. Not
provided: adapters and converters (``detect_types``), user-defined SQL
functions, ``text_factory``, blob I/O, backup and ``iterdump``.

A database file written here is an ordinary SQLite 3 file: CPython's sqlite3
on the host reads it, and it reads theirs (except WAL-mode databases: WASI
has no shared memory, so this build has no WAL). There is no file locking
under WASI: do not write one database from two processes at once.

Two backends, one API. In a guest built with the sqlite cap embedded
(``wac plug``) calls go to the typed ``pylon:sqlite/sqlite`` import:
prepared statements are resources, and each ``execute`` is one call that
binds, steps and returns a batch of rows. Otherwise the cap is resolved at
first ``connect`` through ``pylon_guest.dynlink`` (see docs/embedded.md, "Typed
calls over dynlink").
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

__all__ = [
    "Connection", "Cursor", "DataError", "DatabaseError", "Error", "IntegrityError", "InterfaceError",
    "InternalError", "NotSupportedError", "OperationalError", "ProgrammingError", "Row", "Warning",
    "apilevel", "backend", "connect", "paramstyle", "sqlite_version", "sqlite_version_info", "threadsafety",
]

# Imported here, not lazily: componentize-py bundles only modules imported
# while it pre-initialises the app, so a first import at run time would miss
# the typed bindings even in a guest that has them.
try:
    from wit_world.imports import sqlite as _wit  # type: ignore[import-not-found]
    from componentize_py_types import Err as _WitErr  # type: ignore[import-not-found]
except ImportError:
    _wit = None
    _WitErr = None

apilevel = "2.0"
threadsafety = 1
paramstyle = "qmark"
#: The SQLite the cap is built from (pinned in pylon/build/embedded.py).
sqlite_version = "3.50.4"
sqlite_version_info = (3, 50, 4)

# Rows asked for by execute() (small: point selects are the common case),
# then by each later refill of a cursor.
_FIRST_BATCH = 64
_NEXT_BATCH = 1024
# Parameter rows per execute-many call, bounding the memory of one call.
_MANY_CHUNK = 4096
_CACHE_SIZE = 128


class Warning(Exception):  # noqa: A001 - DB-API name
    """DB-API warning (unused, kept for the interface)."""


class Error(Exception):
    """Root of the DB-API errors. ``sqlite_errorcode`` / ``sqlite_errorname``
    carry SQLite's extended result code when SQLite raised it."""

    sqlite_errorcode: int | None = None
    sqlite_errorname: str | None = None


class InterfaceError(Error):
    """Misuse of the database interface."""


class DatabaseError(Error):
    """An error from the database."""


class DataError(DatabaseError):
    """A value could not be processed (too big, out of range)."""


class OperationalError(DatabaseError):
    """SQL errors and failures of the database's operation."""


class IntegrityError(DatabaseError):
    """A constraint failed (UNIQUE, NOT NULL, CHECK, FOREIGN KEY, STRICT types)."""


class InternalError(DatabaseError):
    """SQLite's internal error."""


class ProgrammingError(DatabaseError):
    """Wrong use: a closed connection or cursor, wrong parameters, two
    statements in one execute()."""


class NotSupportedError(DatabaseError):
    """A feature this SQLite does not offer."""


# sqlite3's mapping from SQLite's primary result codes to exception classes.
# SQLITE_MISUSE (21) is what the cap reports for its callers' mistakes, which
# Python's sqlite3 raises as ProgrammingError.
_CLASS_BY_CODE: dict[int, type[Error]] = {
    2: InternalError, 12: InternalError,
    11: DatabaseError, 26: DatabaseError,
    18: DataError,
    19: IntegrityError, 20: IntegrityError,
    21: ProgrammingError,
    25: InterfaceError,
}
for _code in (1, 3, 4, 5, 6, 8, 9, 10, 13, 14, 15, 16, 17):
    _CLASS_BY_CODE[_code] = OperationalError

_NAMES = {
    1: "SQLITE_ERROR", 2: "SQLITE_INTERNAL", 3: "SQLITE_PERM", 4: "SQLITE_ABORT", 5: "SQLITE_BUSY",
    6: "SQLITE_LOCKED", 7: "SQLITE_NOMEM", 8: "SQLITE_READONLY", 9: "SQLITE_INTERRUPT", 10: "SQLITE_IOERR",
    11: "SQLITE_CORRUPT", 12: "SQLITE_NOTFOUND", 13: "SQLITE_FULL", 14: "SQLITE_CANTOPEN",
    15: "SQLITE_PROTOCOL", 16: "SQLITE_EMPTY", 17: "SQLITE_SCHEMA", 18: "SQLITE_TOOBIG",
    19: "SQLITE_CONSTRAINT", 20: "SQLITE_MISMATCH", 21: "SQLITE_MISUSE", 22: "SQLITE_NOLFS",
    23: "SQLITE_AUTH", 24: "SQLITE_FORMAT", 25: "SQLITE_RANGE", 26: "SQLITE_NOTADB",
    275: "SQLITE_CONSTRAINT_CHECK", 531: "SQLITE_CONSTRAINT_COMMITHOOK", 3091: "SQLITE_CONSTRAINT_DATATYPE",
    787: "SQLITE_CONSTRAINT_FOREIGNKEY", 1043: "SQLITE_CONSTRAINT_FUNCTION", 1299: "SQLITE_CONSTRAINT_NOTNULL",
    2835: "SQLITE_CONSTRAINT_PINNED", 1555: "SQLITE_CONSTRAINT_PRIMARYKEY", 2579: "SQLITE_CONSTRAINT_ROWID",
    1811: "SQLITE_CONSTRAINT_TRIGGER", 2067: "SQLITE_CONSTRAINT_UNIQUE", 2323: "SQLITE_CONSTRAINT_VTAB",
    1038: "SQLITE_CANTOPEN_ISDIR", 264: "SQLITE_READONLY_RECOVERY", 1032: "SQLITE_READONLY_DBMOVED",
    266: "SQLITE_IOERR_READ", 778: "SQLITE_IOERR_WRITE", 522: "SQLITE_IOERR_SHORT_READ",
}


def _error(code: int, message: str) -> Error:
    primary = code & 0xFF
    if primary == 7:
        raise MemoryError(message)
    exc = _CLASS_BY_CODE.get(primary, DatabaseError)(message)
    if code == 21:
        # The cap's "you used me wrong" (closed, finalized, bindings count,
        # two statements): sqlite3 raises these itself, with no SQLite code.
        return exc
    exc.sqlite_errorcode = code
    exc.sqlite_errorname = _NAMES.get(code) or _NAMES.get(primary, f"SQLITE_UNKNOWN_{code}")
    return exc


def _check_int(v: int) -> int:
    if not -0x8000000000000000 <= v <= 0x7FFFFFFFFFFFFFFF:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")
    return v


def _unsupported(i: int, v: Any) -> ProgrammingError:
    return ProgrammingError(f"Error binding parameter {i}: type '{type(v).__name__}' is not supported")


class _Embedded:
    """The typed ``pylon:sqlite/sqlite`` import (the embedded cap).

    Values cross as the WIT ``value`` variant; this class converts Python
    values to it and rows back to tuples, and turns the WIT error into the
    DB-API exception for its code.
    """

    name = "embedded"

    def __init__(self, wit: Any):
        self.w = wit
        null = wit.Value_Null()
        Int, Real, Text, Blob = wit.Value_Integer, wit.Value_Real, wit.Value_Text, wit.Value_Blob
        self._null_type = wit.Value_Null
        self._null = null

        def to_value(i: int, v: Any) -> Any:
            t = type(v)
            if t is int:
                return Int(_check_int(v))
            if t is str:
                return Text(v)
            if t is float:
                return Real(v)
            if v is None:
                return null
            if t is bytes:
                return Blob(v)
            if isinstance(v, (bytearray, memoryview)):
                return Blob(bytes(v))
            if isinstance(v, int):  # bool and int subclasses bind as integers, as in sqlite3
                return Int(_check_int(int(v)))
            if isinstance(v, float):
                return Real(float(v))
            if isinstance(v, str):
                return Text(str(v))
            raise _unsupported(i, v)

        self.to_value = to_value

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except _WitErr as exc:
            raise _error(exc.value.code, exc.value.message) from None

    def values(self, params: Iterable[Any]) -> list[Any]:
        to_value = self.to_value
        return [to_value(i, v) for i, v in enumerate(params, 1)]

    def rows(self, rows: list[Any]) -> list[tuple[Any, ...]]:
        null = self._null_type
        return [tuple([None if type(v) is null else v.value for v in row]) for row in rows]

    def open(self, path: str) -> Any:
        return self._call(self.w.Connection.open, path)

    def conn(self, h: Any, method: str, *args: Any) -> Any:
        return self._call(getattr(h, method), *args)

    def prepare(self, h: Any, sql: str) -> Any:
        return self._call(h.prepare, sql)

    def stmt(self, s: Any, method: str, *args: Any) -> Any:
        return self._call(getattr(s, method), *args)

    def run(self, s: Any, params: list[Any], max_rows: int) -> tuple[list[tuple[Any, ...]], bool, int, int]:
        b = self._call(s.run, params, max_rows)
        return self.rows(b.rows), b.done, b.changes, b.last_insert_rowid

    def step_many(self, s: Any, max_rows: int) -> tuple[list[tuple[Any, ...]], bool, int, int]:
        b = self._call(s.step_many, max_rows)
        return self.rows(b.rows), b.done, b.changes, b.last_insert_rowid

    def execute_many(self, s: Any, rows: list[list[Any]]) -> int:
        return self._call(s.execute_many, rows)

    def drop(self, h: Any) -> None:
        h.__exit__(None, None, None)


class _Dynlink:
    """The sqlite cap over ``pylon_guest.dynlink``: the typed interface's functions
    by name (``connection.open``, ``connection.<method>``,
    ``statement.<method>``, first argument the resource's integer handle),
    values as CBOR's own null/int/float/text/bytes, and results as
    ``{"ok": v}`` / ``{"err": {"code": c, "message": m}}``."""

    name = "dynlink"

    def __init__(self) -> None:
        from pylon_guest import dynlink  # type: ignore[attr-defined]

        self.cap = dynlink.load("sqlite")

    def _call(self, method: str, *args: Any) -> Any:
        reply = self.cap.call(method, *args)
        if isinstance(reply, dict):
            if "err" in reply:
                err = reply["err"]
                raise _error(int(err["code"]), str(err["message"]))
            if "ok" in reply:
                return reply["ok"]
        return reply

    def values(self, params: Iterable[Any]) -> list[Any]:
        out = []
        for i, v in enumerate(params, 1):
            if v is None or isinstance(v, (str, bytes, float)):
                out.append(v)
            elif isinstance(v, int):
                out.append(_check_int(int(v)))
            elif isinstance(v, (bytearray, memoryview)):
                out.append(bytes(v))
            else:
                raise _unsupported(i, v)
        return out

    def open(self, path: str) -> Any:
        return ("connection", self._call("connection.open", path))

    def conn(self, h: Any, method: str, *args: Any) -> Any:
        return self._call("connection." + method.replace("_", "-"), h[1], *args)

    def prepare(self, h: Any, sql: str) -> Any:
        return ("statement", self._call("connection.prepare", h[1], sql))

    def stmt(self, s: Any, method: str, *args: Any) -> Any:
        return self._call("statement." + method.replace("_", "-"), s[1], *args)

    def _batch(self, b: dict[str, Any]) -> tuple[list[tuple[Any, ...]], bool, int, int]:
        return [tuple(r) for r in b["rows"]], bool(b["done"]), int(b["changes"]), int(b["last-insert-rowid"])

    def run(self, s: Any, params: list[Any], max_rows: int) -> tuple[list[tuple[Any, ...]], bool, int, int]:
        return self._batch(self._call("statement.run", s[1], params, max_rows))

    def step_many(self, s: Any, max_rows: int) -> tuple[list[tuple[Any, ...]], bool, int, int]:
        return self._batch(self._call("statement.step-many", s[1], max_rows))

    def execute_many(self, s: Any, rows: list[list[Any]]) -> int:
        return int(self._call("statement.execute-many", s[1], rows))

    def drop(self, h: Any) -> None:
        self._call(h[0] + ".drop", h[1])


_backend: Any = None


def backend() -> Any:
    """The backend in use, resolved at the first connect(): ``.name`` is
    "embedded" or "dynlink"."""
    global _backend
    if _backend is None:
        _backend = _Embedded(_wit) if _wit is not None else _Dynlink()
    return _backend


def _skip_blank(sql: str) -> str:
    """``sql`` without leading whitespace and comments (as sqlite3 strips it
    to tell an INSERT from a SELECT)."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in " \t\n\r\f\v;":
            i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            break
    return sql[i:]


class _Statement:
    """One prepared statement and what the cursor needs to know about it."""

    __slots__ = ("h", "is_dml", "description", "_names", "in_use", "cached")

    def __init__(self, b: Any, conn_h: Any, sql: str):
        self.h = b.prepare(conn_h, sql)
        head = _skip_blank(sql)[:7].lower()
        self.is_dml = head.startswith(("insert", "update", "delete", "replace"))
        cols = b.stmt(self.h, "columns")
        self.description = tuple((c, None, None, None, None, None, None) for c in cols) if cols else None
        self._names: list[str | None] | None = None
        self.in_use = False
        self.cached = False

    def names(self, b: Any) -> list[str | None]:
        if self._names is None:
            self._names = b.stmt(self.h, "parameter_names")
        return self._names

    def bind_values(self, b: Any, params: Any) -> list[Any]:
        if isinstance(params, (list, tuple)):
            return b.values(params)
        if isinstance(params, dict) or (hasattr(params, "keys") and hasattr(params, "__getitem__")):
            ordered = []
            for i, name in enumerate(self.names(b), 1):
                if name is None or name.startswith("?"):
                    raise ProgrammingError(f"Binding {i} has no name, but you supplied a dictionary "
                                           "(which has only names).")
                try:
                    ordered.append(params[name[1:]])
                except KeyError:
                    raise ProgrammingError(f"You did not supply a value for binding parameter {name}.") from None
            return b.values(ordered)
        if isinstance(params, (str, bytes, bytearray)) or not hasattr(params, "__iter__"):
            raise ProgrammingError("parameters are of unsupported type")
        return b.values(list(params))


class Row:
    """sqlite3.Row: a tuple that is also indexable by column name
    (case-insensitively), with ``keys()``."""

    __slots__ = ("_values", "_description")

    def __init__(self, cursor: Cursor, values: tuple[Any, ...]):
        self._values = values
        self._description = cursor.description or ()

    def keys(self) -> list[str]:
        return [d[0] for d in self._description]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            lowered = key.lower()
            for i, d in enumerate(self._description):
                if d[0].lower() == lowered:
                    return self._values[i]
            raise IndexError("No item with that key")
        return self._values[key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Row):
            return NotImplemented
        return self._description == other._description and self._values == other._values

    def __hash__(self) -> int:
        return hash((tuple(self.keys()), self._values))

    def __repr__(self) -> str:
        return f"<pylon_guest.sqlite.Row {dict(zip(self.keys(), self._values))!r}>"


class Cursor:
    """A DB-API cursor: runs statements and hands out their rows."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.arraysize = 1
        self.description: tuple[tuple[Any, ...], ...] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.row_factory = connection.row_factory
        self._b = connection._b
        self._stmt: _Statement | None = None
        self._rows: list[tuple[Any, ...]] = []
        self._pos = 0
        self._done = True
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed cursor.")
        self.connection._check()

    def _release(self) -> None:
        """Lets go of the current statement, rewinding it if rows are pending."""
        stmt, self._stmt = self._stmt, None
        self._rows, self._pos, self._done = [], 0, True
        if stmt is None:
            return
        if stmt.in_use and self.connection._h is not None:
            stmt.in_use = False
            try:
                self._b.stmt(stmt.h, "reset")
            except Error:
                pass
        if not stmt.cached:
            self._b.drop(stmt.h)

    def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        """Runs one statement with ``parameters`` (a sequence for ``?``, a
        mapping for named parameters). Returns the cursor."""
        self._check()
        self._release()
        self.rowcount = -1
        stmt = self.connection._statement(sql)
        values = stmt.bind_values(self._b, parameters)
        try:
            rows, done, changes, lastrowid = self._b.run(stmt.h, values, _FIRST_BATCH)
        except BaseException:
            self.connection._unuse(stmt)
            raise
        self.description = stmt.description
        self.lastrowid = lastrowid
        if stmt.is_dml and done:
            self.rowcount = changes
        self._rows, self._pos, self._done = rows, 0, done
        if done:
            self.connection._unuse(stmt)
        else:
            stmt.in_use = True
            self._stmt = stmt
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> Cursor:
        """Runs a DML statement once per parameter set, in chunks of rows per
        call into the cap."""
        self._check()
        self._release()
        self.rowcount = -1
        stmt = self.connection._statement(sql)
        b = self._b
        total = 0
        try:
            chunk: list[list[Any]] = []
            for params in seq_of_parameters:
                chunk.append(stmt.bind_values(b, params))
                if len(chunk) == _MANY_CHUNK:
                    total += b.execute_many(stmt.h, chunk)
                    chunk = []
            if chunk:
                total += b.execute_many(stmt.h, chunk)
        except ProgrammingError as exc:
            if "can only execute DML" in str(exc):
                raise ProgrammingError("executemany() can only execute DML statements.") from None
            raise
        finally:
            self.connection._unuse(stmt)
        self.description = None
        self.rowcount = total if stmt.is_dml else -1
        # lastrowid is left as it was, as sqlite3's executemany() does.
        return self

    def executescript(self, sql_script: str) -> Cursor:
        """Commits any open transaction, then runs every statement in the script."""
        self._check()
        self._release()
        if not isinstance(sql_script, str):
            raise ValueError("script argument must be unicode.")
        if "\0" in sql_script:
            raise ProgrammingError("the query contains a null character")
        self.connection.commit()
        self._b.conn(self.connection._h, "execute", sql_script)
        self.description = None
        self.rowcount = -1
        return self

    def _next(self) -> Any:
        if self._pos >= len(self._rows):
            if self._done:
                return None
            rows, done, _, _ = self._b.step_many(self._stmt.h, _NEXT_BATCH)  # type: ignore[union-attr]
            self._rows, self._pos, self._done = rows, 0, done
            if done:
                stmt, self._stmt = self._stmt, None
                if stmt is not None:
                    stmt.in_use = False
                    self.connection._unuse(stmt)
            if not rows:
                return None
        row = self._rows[self._pos]
        self._pos += 1
        factory = self.row_factory
        return factory(self, row) if factory is not None else row

    def fetchone(self) -> Any:
        self._check()
        return self._next()

    def fetchmany(self, size: int | None = None) -> list[Any]:
        self._check()
        n = self.arraysize if size is None else size
        out = []
        while len(out) < n:
            row = self._next()
            if row is None:
                break
            out.append(row)
        return out

    def fetchall(self) -> list[Any]:
        self._check()
        out = []
        while True:
            if self._pos < len(self._rows) and self.row_factory is None:
                out.extend(self._rows[self._pos:])  # a batch at a time, not a row
                self._pos = len(self._rows)
            row = self._next()
            if row is None:
                return out
            out.append(row)

    def __iter__(self) -> Cursor:
        return self

    def __next__(self) -> Any:
        self._check()
        row = self._next()
        if row is None:
            raise StopIteration
        return row

    def setinputsizes(self, sizes: Any) -> None:
        pass

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        pass

    def close(self) -> None:
        if not self._closed and self.connection._h is not None:
            self._release()
        self._closed = True


class Connection:
    """A DB-API connection. Use :func:`connect`."""

    def __init__(self, database: Any, isolation_level: str | None = "", **_ignored: Any):
        self._b = backend()
        self.row_factory: Any = None
        self._cache: dict[str, _Statement] = {}
        self._h: Any = None
        path = os.fspath(database)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if path not in (":memory:", ""):
            # The cap has no idea of the guest's working directory.
            path = os.path.abspath(path)
        self._h = self._b.open(path)
        self._isolation_level: str | None = None
        self.isolation_level = isolation_level

    def _check(self) -> None:
        if self._h is None:
            raise ProgrammingError("Cannot operate on a closed database.")

    @property
    def isolation_level(self) -> str | None:
        """"" / "DEFERRED" / "IMMEDIATE" / "EXCLUSIVE": the BEGIN issued before
        a DML statement outside a transaction; None for autocommit."""
        return self._isolation_level

    @isolation_level.setter
    def isolation_level(self, level: str | None) -> None:
        if level is not None:
            if not isinstance(level, str) or level.upper() not in ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
                raise ValueError("isolation_level string must be '', 'DEFERRED', 'IMMEDIATE', or 'EXCLUSIVE'")
        self._check()
        if level is None:
            self.commit()  # as sqlite3 does when switching to autocommit
        self._b.conn(self._h, "set_implicit_begin", None if level is None else f"BEGIN {level}".strip())
        self._isolation_level = level

    @property
    def in_transaction(self) -> bool:
        self._check()
        return bool(self._b.conn(self._h, "in_transaction"))

    @property
    def total_changes(self) -> int:
        self._check()
        return int(self._b.conn(self._h, "total_changes"))

    def _statement(self, sql: str) -> _Statement:
        if not isinstance(sql, str):
            raise TypeError(f"execute() argument 1 must be str, not {type(sql).__name__}")
        stmt = self._cache.get(sql)
        if stmt is not None and not stmt.in_use:
            # Move to the end: the cache evicts the least recently used.
            del self._cache[sql]
            self._cache[sql] = stmt
            return stmt
        if "\0" in sql:
            raise ProgrammingError("the query contains a null character")
        fresh = _Statement(self._b, self._h, sql)
        if stmt is None:
            fresh.cached = True
            self._cache[sql] = fresh
            if len(self._cache) > _CACHE_SIZE:
                for key, old in list(self._cache.items()):
                    if not old.in_use:
                        del self._cache[key]
                        self._b.drop(old.h)
                        break
        return fresh

    def _unuse(self, stmt: _Statement) -> None:
        stmt.in_use = False
        if not stmt.cached and self._h is not None:
            self._b.drop(stmt.h)

    def cursor(self, factory: Any = None) -> Cursor:
        self._check()
        return (factory or Cursor)(self)

    def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> Cursor:
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, sql_script: str) -> Cursor:
        return self.cursor().executescript(sql_script)

    def commit(self) -> None:
        self._check()
        self._b.conn(self._h, "commit")

    def rollback(self) -> None:
        self._check()
        self._b.conn(self._h, "rollback")

    def close(self) -> None:
        """Closes the database; an open transaction is rolled back, as in sqlite3."""
        h, self._h = self._h, None
        if h is None:
            return
        cache, self._cache = self._cache, {}
        for stmt in cache.values():
            self._b.drop(stmt.h)
        try:
            self._b.conn(h, "close")
        finally:
            self._b.drop(h)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        # As sqlite3: commit on success, roll back on an exception; the
        # connection stays open.
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
        return False

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def connect(database: Any, timeout: float = 5.0, detect_types: int = 0, isolation_level: str | None = "",
            check_same_thread: bool = True, factory: Any = None, cached_statements: int = _CACHE_SIZE,
            uri: bool = False, **kwargs: Any) -> Connection:
    """Opens ``database``: a path (relative to the guest's working directory,
    on a preopened directory) or ":memory:"."""
    if detect_types:
        raise NotSupportedError("detect_types (converters) is not supported by pylon_guest.sqlite")
    if uri:
        raise NotSupportedError("URI filenames are not supported by pylon_guest.sqlite")
    return (factory or Connection)(database, isolation_level=isolation_level)
