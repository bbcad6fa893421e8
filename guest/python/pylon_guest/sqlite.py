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
on the host reads it, and it reads theirs (WAL-mode ones too, once no other
process has them open). There is no file locking
under WASI: do not write one database from two processes at once.

Beyond the guest's built-in sqlite3 (CPython's bundled SQLite): FTS5,
R*Tree, the math functions, JSON with ``->``/``->>``, and WAL for file
databases (``PRAGMA journal_mode=WAL``; the cap holds files in exclusive
locking mode, so the WAL index lives in memory).

Two backends, one API. In a guest built with the sqlite cap embedded
(``wac plug``) calls go to the typed ``pylon:sqlite/sqlite`` import:
prepared statements are resources (a per-connection cache of 128, by SQL
text), and values cross packed, never one WIT value each: parameters as
``marshal.dumps(params, 2)``, rows back as one marshal blob that
``marshal.loads`` turns into the list of tuples in one C call (for
``execute``, the sqlite cap's guest binding, caps/sqlite/guest_binding.c,
packs, calls and unpacks in one C call of its own). So ``execute``
is one call into the cap (bind, step, first rows), ``fetchall`` one more per
8 MiB of rows, and ``executemany`` one per 32768 parameter rows. Otherwise
the cap is resolved at first ``connect`` through ``pylon_guest.dynlink`` and
called through its generated proxy (docs/cap-interface.md, "The guest
proxy"): the same resources, methods and errors, each call one
``invoke``. That face is in-memory only: a dynlink cap has no WASI, so a
file database fails to open (see docs/embedded.md, "Typed calls over
dynlink").
"""

from __future__ import annotations

import itertools
import functools
import marshal
import os
from typing import Any, Iterable, Iterator

__all__ = [
    "Connection", "Cursor", "DataError", "DatabaseError", "Error", "IntegrityError", "InterfaceError",
    "InternalError", "NotSupportedError", "OperationalError", "ProgrammingError", "Row", "Warning",
    "apilevel", "backend", "connect", "paramstyle", "sqlite_version", "sqlite_version_info", "threadsafety", "use_backend",
]

# Imported here, not lazily: componentize-py bundles only modules imported
# while it pre-initialises the app, so a first import at run time would miss
# the typed bindings even in a guest that has them.
try:
    from wit_world.imports import sqlite as _wit  # type: ignore[import-not-found]
except ImportError:
    _wit = None
# The cap's guest binding (caps/sqlite/guest_binding.c): the statement
# resource's run-packed, called from C. Only a guest that embeds sqlite has it.
try:
    import _sqlite_binding  # type: ignore[import-not-found]
except ImportError:
    _sqlite_binding = None
# The embedded import and the dynlink proxy both raise componentize-py's Err
# for a WIT `result`'s error.
try:
    from componentize_py_types import Err as _WitErr  # type: ignore[import-not-found]
except ImportError:  # not in a componentize-py guest

    class _WitErr(Exception):  # type: ignore[no-redef]
        """Never raised: the stand-in outside a guest."""

        value: Any = None

apilevel = "2.0"
threadsafety = 1
paramstyle = "qmark"
#: The SQLite the cap is built from (pinned in pylon/build/embedded.py).
sqlite_version = "3.50.4"
sqlite_version_info = (3, 50, 4)

# Rows asked for by execute() (small: point selects are the common case; the
# cap also stops at 64 KiB), then by each refill of a cursor (the cap stops a
# batch at 8 MiB), and by fetchall(). A refill stays under the cyclic GC's
# young threshold (2000 allocations): a batch's row tuples are freed as the
# next comes in, so iterating starts no collection, as sqlite3's one row at a
# time starts none. With 4096 rows per refill, iterating 100k rows beside a
# large heap spent ~30 ms in collections (docs/benchmarks.md).
_FIRST_BATCH = 64
_NEXT_BATCH = 1024
_ALL_BATCH = 1 << 30
# Parameter rows per execute-many call, bounding the memory of one call.
_MANY_CHUNK = 32768
_CACHE_SIZE = 128
# The marshal version the cap reads: 2 has no back-references.
_MARSHAL_VERSION = 2
_dumps = marshal.dumps
_loads = marshal.loads


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


# The state the hot path reads and writes: C fields in the binding (its
# ConnectionCore, StatementCore and CursorCore, whose execute, fetchone and
# iteration handle the common case in C and call Cursor._execute /
# _fetchone / _iternext for the rest; RowCore, whose row[name] is a dict
# lookup), plain attributes without it.
if _sqlite_binding is not None:
    _sqlite_binding.set_first_batch(_FIRST_BATCH)
    _ConnectionCore: Any = _sqlite_binding.ConnectionCore
    _StatementCore: Any = _sqlite_binding.StatementCore
    _CursorCore: Any = _sqlite_binding.CursorCore
    _RowCore: Any = _sqlite_binding.RowCore
else:
    _ConnectionCore = object

    class _StatementCore:
        __slots__ = ("description", "keys", "handle", "is_dml", "in_use", "cached")

    class _CursorCore:
        # Defaults at class level: a cursor per Connection.execute() is the
        # common case, and each attribute set in __init__ costs the guest.
        description: tuple[tuple[Any, ...], ...] | None = None
        rowcount = -1
        lastrowid: int | None = None
        _stmt: _Statement | None = None
        _rows: Any = ()
        _pos = 0
        _done = True
        _closed = False

        def __init__(self, connection: Connection):
            self.connection = connection
            self.row_factory = connection.row_factory

    class _RowCore:
        __slots__ = ("_values", "_description")

        def __init__(self, cursor: Cursor, values: tuple[Any, ...]):
            if not isinstance(values, tuple):
                raise TypeError("tuple required for second argument")
            self._values = values
            self._description = cursor.description or ()

        def __getitem__(self, key: Any) -> Any:
            if isinstance(key, str):
                lowered = key.lower()
                for i, d in enumerate(self._description):
                    if d[0].lower() == lowered:
                        return self._values[i]
                raise IndexError("No item with that key")
            return self._values[key]


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


def _clean(i: int, v: Any) -> Any:
    """``v`` as one of the exact types the packed format carries, or the
    exception sqlite3 raises for it (the slow path, taken only when the fast
    one meets something it cannot pack)."""
    t = type(v)
    if t is int:
        return _check_int(v)
    if v is None or t is float or t is bytes:
        return v
    if t is str:
        v.encode("utf-8")  # a lone surrogate raises here, as in sqlite3
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, int):  # bool and int subclasses bind as integers, as in sqlite3
        return _check_int(int(v))
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return _clean(i, str(v))
    raise _unsupported(i, v)


def _pack(values: list[Any]) -> str:
    """Clean values, packed for the cap (a Latin-1 string)."""
    return _dumps(values, _MARSHAL_VERSION).decode("latin-1")


def _is_packing_error(exc: Any) -> bool:
    v = exc.value
    return bool(v.code == 21 and v.message.startswith("pylon-packed:"))


def _raise(exc: Any) -> Error:
    return _error(exc.value.code, exc.value.message)


class _Backend:
    """Opens connections: ``.name`` is "embedded" (the typed import) or
    "dynlink" (the sqlite cap's generated proxy, docs/cap-interface.md).
    Both hand out objects with the same methods and raise the same ``Err``
    around the same ``Error`` record, so the rest of this module has one code
    path."""

    def __init__(self, want: str | None = None) -> None:
        if want == "embedded" and _wit is None:
            raise ImportError("this pylon has no embedded sqlite; use the dynlink backend")
        if _wit is not None and want != "dynlink":
            self.name = "embedded"
            self._open = _wit.Connection.open
        else:
            from pylon_guest import dynlink  # type: ignore[attr-defined]

            api = dynlink.load("sqlite").api
            if api is None:
                raise dynlink.CapNotFound("the cap the plan calls 'sqlite' has no typed face "
                                          "(no pylon:shim section): build it from caps/sqlite")
            self.name = "dynlink"
            self._open = api.Connection.open

    def open(self, path: str) -> Any:
        try:
            return self._open(path)
        except _WitErr as exc:
            raise _raise(exc) from None


_backend: Any = None


def backend() -> Any:
    """The backend in use, resolved at the first connect(): ``.name`` is
    "embedded" or "dynlink"."""
    global _backend
    if _backend is None:
        _backend = _Backend()
    return _backend


def use_backend(name: str | None) -> Any:
    """Chooses the backend for later connect() calls: "embedded" (the cap
    plugged into this pylon), "dynlink" (the cap the plan calls "sqlite", e.g.
    a newer build swapped in without rebuilding pylon) or None (embedded when
    present, else dynlink). Connections already open keep theirs. Returns the
    backend; raises ImportError (no embedded cap) or a dynlink error (no
    usable cap in the plan) at once rather than at the next connect()."""
    global _backend
    if name not in ("embedded", "dynlink", None):
        raise ValueError(f"backend must be 'embedded', 'dynlink' or None, not {name!r}")
    _backend = _Backend(name)
    return _backend


def _call(fn: Any, *args: Any) -> Any:
    """A call into the cap, its error as the DB-API exception."""
    try:
        return fn(*args)
    except _WitErr as exc:
        raise _raise(exc) from None


def _drop(h: Any) -> None:
    h.__exit__(None, None, None)


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


class _Statement(_StatementCore):
    """One prepared statement and what the cursor needs to know about it."""

    __slots__ = ("h", "run_packed", "run_params", "run_many", "_names")

    def __init__(self, conn_h: Any, sql: str):
        self.h = _call(conn_h.prepare, sql)
        # run-packed from C for the embedded cap's statements, and run_params
        # (pack, run-packed, unpack) as one C call; the dynlink proxy's
        # statements (and a guest without the binding) do the same in Python.
        if _sqlite_binding is not None and _wit is not None and type(self.h) is _wit.Statement:
            self.handle = self.h.handle  # CursorCore.execute runs it from C
            self.run_packed = functools.partial(_sqlite_binding.run_packed, self.h.handle)
            self.run_params = functools.partial(_sqlite_binding.run, self.h.handle)
            self.run_many: Any = functools.partial(_sqlite_binding.run_many, self.h.handle)
        else:
            self.handle = -1
            self.run_packed = self.h.run_packed
            self.run_params = self._run_params
            self.run_many = None
        head = _skip_blank(sql)[:7].lower()
        self.is_dml = head.startswith(("insert", "update", "delete", "replace"))
        cols = _call(self.h.columns)
        self.description = tuple((c, None, None, None, None, None, None) for c in cols) if cols else None
        self._names: list[str | None] | None = None
        self.in_use = False
        self.cached = False

    def run_values(self, params: Any, max_rows: int) -> Any:
        """:meth:`run` for what :attr:`run_params` cannot pack: ``params``
        checked and cleaned as sqlite3 does (:meth:`values`), then packed."""
        return _loads(self.run_packed(_pack(self.values(params)), max_rows))

    def _run_params(self, params: Any, max_rows: int) -> Any:
        """``params`` (a tuple or list) marshalled, run, the reply unmarshalled;
        ValueError when marshal cannot write a value."""
        return _loads(self.run_packed(_dumps(params, _MARSHAL_VERSION).decode("latin-1"), max_rows))

    def names(self) -> list[str | None]:
        if self._names is None:
            self._names = _call(self.h.parameter_names)
            if self.handle >= 0 and all(n is not None and not n.startswith("?") for n in self._names):
                # Every parameter named: CursorCore.execute takes a dict's
                # values in this order from C.
                self.keys = tuple(n[1:] for n in self._names)
        return self._names

    def values(self, params: Any) -> list[Any]:
        """``params`` checked and ordered for binding, as sqlite3 does it."""
        if isinstance(params, (list, tuple)):
            seq = params
        elif isinstance(params, dict) or (hasattr(params, "keys") and hasattr(params, "__getitem__")):
            seq = []
            for i, name in enumerate(self.names(), 1):
                if name is None or name.startswith("?"):
                    raise ProgrammingError(f"Binding {i} has no name, but you supplied a dictionary "
                                           "(which has only names).")
                try:
                    seq.append(params[name[1:]])
                except KeyError:
                    raise ProgrammingError(f"You did not supply a value for binding parameter {name}.") from None
        elif isinstance(params, (str, bytes, bytearray)) or not hasattr(params, "__iter__"):
            raise ProgrammingError("parameters are of unsupported type")
        else:
            seq = list(params)
        return [_clean(i, v) for i, v in enumerate(seq, 1)]

    def run(self, params: Any, max_rows: int) -> Any:
        """Binds ``params`` and steps up to ``max_rows`` rows: returns
        ``(rows, done, changes, lastrowid)``. (Cursor.execute inlines the
        common case.)"""
        if type(params) is tuple or type(params) is list:
            try:
                out = self.run_params(params, max_rows)
            except ValueError:  # not marshallable: a type the cap does not take
                out = self.run_values(params, max_rows)
        else:
            out = self.run_values(params, max_rows)
        if out[0] is None:
            return self.failed(out, params, max_rows)
        return out

    def failed(self, out: Any, params: Any, max_rows: int) -> Any:
        """After an in-band failure ``out`` of run_packed: a value the cap
        cannot bind is checked here (raising sqlite3's error, or binding the
        cleaned values); anything else is raised."""
        _, code, message, _ = out
        if code == 21 and message.startswith("pylon-packed:"):
            out = self.run_values(params, max_rows)
            if out[0] is not None:
                return out
            _, code, message, _ = out
        raise _error(code, message)

    def many(self, rows: list[Any]) -> int:
        """Runs the statement once per parameter row; the rows changed."""
        if self.run_many is not None:  # packed and called from C
            try:
                out = self.run_many(rows)
            except ValueError:  # a value marshal cannot write: nothing ran
                out = None
            if type(out) is int:
                return out
            if out is not None and not (out[0] == 21 and out[1].startswith("pylon-packed:")):
                raise _error(out[0], out[1])
        else:
            try:
                return int(self.h.execute_many_packed(_dumps(rows, _MARSHAL_VERSION).decode("latin-1")))
            except ValueError:
                pass
            except _WitErr as exc:
                if not _is_packing_error(exc):
                    raise _raise(exc) from None
        # Nothing ran: check row by row, running the good rows before an error.
        total, good = 0, []
        try:
            for params in rows:
                good.append(self.values(params))
        finally:
            if good:
                total = int(_call(self.h.execute_many_packed, _pack(good)))
        return total


class Row(_RowCore):
    """sqlite3.Row: a tuple that is also indexable by column name
    (case-insensitively), with ``keys()``."""

    __slots__ = ()

    def keys(self) -> list[str]:
        return [d[0] for d in self._description]

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


class Cursor(_CursorCore):
    """A DB-API cursor: runs statements and hands out their rows."""

    arraysize = 1

    def _check(self) -> None:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed cursor.")
        self.connection._check()

    def _forget_results(self) -> None:
        """After an execute that failed, as sqlite3: no rows left to fetch
        from the statement before, no description, rowcount -1."""
        self._rows, self._pos, self._done = [], 0, True
        self.description = None
        self.rowcount = -1

    def _release(self) -> None:
        """Lets go of the current statement, rewinding it if rows are pending."""
        stmt, self._stmt = self._stmt, None
        self._rows, self._pos, self._done = [], 0, True
        if stmt is None:
            return
        if stmt.in_use and self.connection._h is not None:
            stmt.in_use = False
            try:
                _call(stmt.h.reset)
            except Error:
                pass
        if not stmt.cached:
            _drop(stmt.h)

    def _execute(self, sql: str, parameters: Any = ()) -> Cursor:
        """Runs one statement with ``parameters`` (a sequence for ``?``, a
        mapping for named parameters). Returns the cursor. (``execute``: the
        binding's CursorCore.execute does the common case in C and calls
        this for the rest.)"""
        conn = self.connection
        if self._closed or conn._h is None:
            self._check()
        if self._stmt is not None:
            self._release()
        stmt = conn._cache.get(sql)  # a non-str sql misses: _statement raises
        if stmt is None or stmt.in_use:
            try:
                stmt = conn._statement(sql)
            except BaseException:
                self._forget_results()
                raise
        try:
            t = type(parameters)
            if t is tuple or t is list:
                try:
                    rows, done, changes, lastrowid = stmt.run_params(parameters, _FIRST_BATCH)
                except ValueError:  # not marshallable: a type the cap does not take
                    rows, done, changes, lastrowid = stmt.run_values(parameters, _FIRST_BATCH)
            else:
                rows, done, changes, lastrowid = stmt.run_values(parameters, _FIRST_BATCH)
            if rows is None:
                rows, done, changes, lastrowid = stmt.failed((rows, done, changes, lastrowid), parameters,
                                                             _FIRST_BATCH)
        except BaseException:
            self._forget_results()
            conn._unuse(stmt)
            raise
        self.description = stmt.description
        self.lastrowid = lastrowid
        self._rows, self._pos, self._done = rows, 0, done
        if done:
            self.rowcount = changes if stmt.is_dml else -1
            if not stmt.cached:
                conn._unuse(stmt)
        else:
            self.rowcount = -1
            stmt.in_use = True
            self._stmt = stmt
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> Cursor:
        """Runs a DML statement once per parameter set: the parameter rows go
        to the cap packed, up to 32768 per call."""
        self._check()
        self._release()
        self.rowcount = -1
        conn = self.connection
        stmt = conn._statement(sql)
        total = 0
        try:
            if type(seq_of_parameters) is list:
                seq = seq_of_parameters
                for i in range(0, len(seq), _MANY_CHUNK):
                    total += stmt.many(seq if len(seq) <= _MANY_CHUNK else seq[i:i + _MANY_CHUNK])
            else:
                it = iter(seq_of_parameters)
                while chunk := list(itertools.islice(it, _MANY_CHUNK)):
                    total += stmt.many(chunk)
        except ProgrammingError as exc:
            if "can only execute DML" in str(exc):
                raise ProgrammingError("executemany() can only execute DML statements.") from None
            raise
        finally:
            conn._unuse(stmt)
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
        _call(self.connection._h.execute, sql_script)
        self.description = None
        self.rowcount = -1
        return self

    def _more(self, max_rows: int) -> bool:
        """Fetches the next batch into ``_rows``; False when there is none."""
        stmt = self._stmt
        if self._done or stmt is None:
            return False
        reply = _loads(stmt.h.step_packed(max_rows).encode("latin-1"))
        rows, done = reply[0], reply[1]
        if rows is None:  # the error in band: (None, code, message, 0)
            self._stmt = None
            self._done = True
            stmt.in_use = False
            self.connection._unuse(stmt)
            raise _error(reply[1], reply[2])
        self._rows, self._pos, self._done = rows, 0, done
        if done:
            self._stmt = None
            stmt.in_use = False
            self.connection._unuse(stmt)
        return bool(rows)

    def _next(self) -> Any:
        if self._pos >= len(self._rows) and not self._more(_NEXT_BATCH):
            return None
        row = self._rows[self._pos]
        self._pos += 1
        factory = self.row_factory
        return factory(self, row) if factory is not None else row

    def _fetchone(self) -> Any:
        if self._closed or self.connection._h is None:
            self._check()
        if self._pos < len(self._rows) and self.row_factory is None:
            row = self._rows[self._pos]
            self._pos += 1
            return row
        return self._next()

    def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to ``size`` rows (``arraysize`` by default); as sqlite3, a size
        of 0 or less gives every remaining row."""
        self._check()
        n = self.arraysize if size is None else size
        if n <= 0:
            return self.fetchall()
        out: list[Any] = []
        # Slices of the fetched batch, not a call per row.
        while len(out) < n:
            if self._pos >= len(self._rows) and not self._more(_NEXT_BATCH):
                break
            take = self._rows[self._pos:self._pos + n - len(out)]
            self._pos += len(take)
            out.extend(take)
        factory = self.row_factory
        if factory is not None:
            return [factory(self, row) for row in out]
        return out

    def fetchall(self) -> list[Any]:
        self._check()
        out = self._rows[self._pos:] if self._pos else self._rows
        self._rows, self._pos = [], 0
        while self._more(_ALL_BATCH):
            if out:
                out.extend(self._rows)
            else:
                out = self._rows
            self._rows = []
        self._rows, self._pos = [], 0
        if not out:
            out = []
        factory = self.row_factory
        if factory is not None:
            return [factory(self, row) for row in out]
        return out

    def _iternext(self) -> Any:
        if self._closed or self.connection._h is None:
            self._check()
        row = self._next()
        if row is None:
            raise StopIteration
        return row

    def _iter(self) -> Cursor:
        return self

    if _sqlite_binding is None:  # else CursorCore's execute, fetchone, tp_iter and tp_iternext, in C
        execute = _execute
        fetchone = _fetchone
        __iter__ = _iter
        __next__ = _iternext

    def setinputsizes(self, sizes: Any) -> None:
        pass

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        pass

    def close(self) -> None:
        if not self._closed and self.connection._h is not None:
            self._release()
        self._closed = True


class Connection(_ConnectionCore):
    """A DB-API connection. Use :func:`connect`."""

    def __init__(self, database: Any, isolation_level: str | None = "", cached_statements: int = _CACHE_SIZE,
                 **_ignored: Any):
        b = backend()
        self.row_factory: Any = None
        self._cache: dict[str, _Statement] = {}
        self._cache_size = max(0, int(cached_statements))
        self._h: Any = None
        path = os.fspath(database)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if path not in (":memory:", ""):
            # The cap has no idea of the guest's working directory.
            path = os.path.abspath(path)
        self._h = b.open(path)
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
        self._h.set_implicit_begin(None if level is None else f"BEGIN {level}".strip())
        self._isolation_level = level

    @property
    def in_transaction(self) -> bool:
        self._check()
        return bool(self._h.in_transaction())

    @property
    def total_changes(self) -> int:
        self._check()
        return int(self._h.total_changes())

    def _statement(self, sql: str) -> _Statement:
        """A statement for ``sql``: the cached one when it is free, else a
        fresh one (cached if ``sql`` is not, the oldest free entry evicted
        past the cache size)."""
        if not isinstance(sql, str):
            raise TypeError(f"execute() argument 1 must be str, not {type(sql).__name__}")
        self._check()
        stmt = self._cache.get(sql)
        if stmt is not None and not stmt.in_use:
            return stmt
        if "\0" in sql:
            raise ProgrammingError("the query contains a null character")
        fresh = _Statement(self._h, sql)
        if stmt is None and self._cache_size:
            fresh.cached = True
            self._cache[sql] = fresh
            if len(self._cache) > self._cache_size:
                for key, old in list(self._cache.items()):
                    if not old.in_use:
                        del self._cache[key]
                        old.cached = False
                        _drop(old.h)
                        break
        return fresh

    def _unuse(self, stmt: _Statement) -> None:
        stmt.in_use = False
        if not stmt.cached and self._h is not None:
            _drop(stmt.h)

    def cursor(self, factory: Any = None) -> Cursor:
        self._check()
        return (factory or Cursor)(self)

    def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        return Cursor(self).execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> Cursor:
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, sql_script: str) -> Cursor:
        return self.cursor().executescript(sql_script)

    def commit(self) -> None:
        self._check()
        _call(self._h.commit)

    def rollback(self) -> None:
        self._check()
        _call(self._h.rollback)

    def close(self) -> None:
        """Closes the database; an open transaction is rolled back, as in sqlite3."""
        h, self._h = self._h, None
        if h is None:
            return
        cache, self._cache = self._cache, {}
        for stmt in cache.values():
            _drop(stmt.h)
        try:
            _call(h.close)
        finally:
            _drop(h)

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
    return (factory or Connection)(database, isolation_level=isolation_level, cached_statements=cached_statements)
