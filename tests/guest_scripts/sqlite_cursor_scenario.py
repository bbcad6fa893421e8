"""DB-API behaviour of pylon_guest.sqlite's cursor, line by line, for
tests/test_guest_binding.py: run in the guest with argument ``builtin`` (the
guest's own sqlite3), ``c`` (the binding's CursorCore fast paths) or
``python`` (every execute through Cursor._execute), the three outputs must
be equal but for the last lines, which only the pylon_guest modes print."""

import enum
import functools
import gc
import sqlite3
import sys
import weakref

import _sqlite_binding
from pylon_guest import sqlite as ps


class Color(enum.IntEnum):
    RED = 7

class Name(str):
    pass

def scenario(m):
    out = []
    def rec(label, fn):
        try:
            v = fn()
        except Exception as e:
            v = ("raise", type(e).__name__)
        out.append(f"{label}: {v!r}")
    c = m.connect(":memory:")
    c.execute("create table t (id integer primary key, name text unique, v real)")
    cur = c.cursor()
    insert = "insert into t values (?, ?, ?)"
    point = "select name, v from t where id = ?"
    rec("insert", lambda: (cur.execute(insert, (1, "a", 0.5)).rowcount, cur.lastrowid, cur.description))
    rec("insert list", lambda: (cur.execute(insert, [2, "b", None]).rowcount, cur.lastrowid))
    rec("many", lambda: c.executemany(insert, [(i, f"n{i}", i / 3) for i in range(3, 300)]).rowcount)
    rec("dup", lambda: cur.execute(insert, (1, "zz", 1)))
    c.execute("create table m (a integer primary key, b)")
    many = "insert into m values (?, ?)"
    rec("many generator", lambda: c.executemany(many, ((i, str(i)) for i in range(100))).rowcount)
    rec("many duplicate", lambda: c.executemany(many, [(500, "x"), (501, "y"), (500, "z")]))
    rec("many unbindable", lambda: c.executemany(many, [(600, "x"), (601, object()), (602, "z")]))
    rec("many big int", lambda: c.executemany(many, [(700, 2 ** 70)]))
    named_rows = [{"a": 800, "b": 1}, {"a": 801, "b": 2}]
    rec("many named", lambda: c.executemany("insert into m values (:a, :b)", named_rows).rowcount)
    rec("many select", lambda: c.executemany("select ?", [(1,)]))
    rec("many kept", lambda: c.execute("select count(*), sum(a) from m").fetchone())
    rec("after dup", lambda: (cur.rowcount, cur.fetchone()))
    rec("failed prepare clears rows", lambda: (cur.execute("select id from t"), cur.fetchone(),
                                               cur.execute("select * from nowhere"))[1])
    rec("after failed prepare", lambda: (cur.fetchone(), cur.description, cur.rowcount))
    rec("failed bind clears rows", lambda: (cur.execute("select id from t"), cur.fetchone(),
                                            cur.execute("select ?", (1, 2)))[1])
    rec("after failed bind", lambda: (cur.fetchone(), cur.description, cur.rowcount))
    rec("point", lambda: (cur.execute(point, (5,)).fetchone(), cur.fetchone(), cur.rowcount, cur.description,
                          cur.lastrowid))
    rec("point again", lambda: cur.execute(point, (6,)).fetchone())
    rec("enum+subclass", lambda: (cur.execute("select ?, ?, ?", (Color.RED, Name("x"), True)).fetchone()))
    rec("bad value", lambda: cur.execute("select ?", (object(),)).fetchone())
    rec("big int", lambda: cur.execute("select ?", (2 ** 63,)).fetchone())
    rec("count", lambda: cur.execute("select ?", (1, 2)).fetchone())
    rec("named", lambda: cur.execute("select :a, :b", {"a": 1, "b": "two"}).fetchone())
    named = "select name, v from t where id = :k or id = @j"
    rec("named again", lambda: [cur.execute(named, {"k": k, "j": 0, "extra": 1}).fetchall() for k in (2, 3, 2)])
    rec("named missing", lambda: cur.execute(named, {"k": 2}))
    rec("named unbindable", lambda: cur.execute(named, {"k": object(), "j": 1}))
    rec("named enum", lambda: cur.execute(named, {"k": Color.RED, "j": True}).fetchall())
    rec("dict for qmarks", lambda: cur.execute("select ?", {"a": 1}))
    rec("bytes sql", lambda: cur.execute(b"select 1"))
    rec("nul sql", lambda: cur.execute("select 1\0"))
    rec("no params", lambda: cur.execute("select count(*) from t").fetchone())
    # More rows than the first batch: the statement stays in use.
    rec("scan head", lambda: [cur.execute("select id from t order by id").fetchone(), cur.fetchone(), cur.fetchone()])
    other = c.cursor()
    rec("interleaved", lambda: (other.execute("select id from t order by id").fetchone(), cur.fetchone(),
                                other.fetchone()))
    rec("rest", lambda: (len(cur.fetchall()), cur.fetchone(), len(other.fetchmany(100)), other.fetchone()))
    rec("reexecute pending", lambda: (other.execute("select id from t where id < ?", (3,)).fetchall()))
    rec("update", lambda: (cur.execute("update t set v = v + 1 where id < ?", (10,)).rowcount, cur.lastrowid))
    rec("delete", lambda: (cur.execute("delete from t where id > ?", (290,)).rowcount))
    rec("iterate", lambda: [r for r in cur.execute("select id from t where id < ?", (4,))])
    rec("iterate past a batch", lambda: sum(r[0] for r in cur.execute("select id from t")))
    rec("fetchmany 0", lambda: cur.execute("select id from t where id < ?", (6,)).fetchmany(0))
    rec("fetchmany -1", lambda: cur.execute("select id from t where id < ?", (6,)).fetchmany(-1))
    rec("fetchmany past a batch", lambda: (len(cur.execute("select id from t").fetchmany(150)), cur.fetchone(),
                                            len(cur.fetchmany(1000)), cur.fetchmany(5)))
    rec("fetchmany arraysize", lambda: (setattr(cur, "arraysize", 3), cur.execute("select id from t").fetchmany())[1])
    c.row_factory = m.Row
    rc = c.cursor()
    rec("row", lambda: (lambda r: (tuple(r), r.keys(), r["NAME"]))(rc.execute(point, (2,)).fetchone()))
    rec("rows by fetchmany", lambda: [tuple(r) for r in rc.execute("select id from t where id < ?", (5,)).fetchmany(3)])
    rec("rows by iteration", lambda: [r["id"] for r in rc.execute("select id from t where id < ?", (5,))])
    both = "select id, name as Name, v, id as ID from t where id = ?"
    rec("row lookups", lambda: (lambda r: (r["id"], r["NAME"], r["name"], r["Id"], r[0], r[-1], r[1:3], len(r),
                                           list(r), r.keys()))(rc.execute(both, (3,)).fetchone()))
    rec("row missing name", lambda: rc.execute(both, (3,)).fetchone()["nope"])
    rec("row bad index", lambda: rc.execute(both, (3,)).fetchone()[9])
    rec("rows equal", lambda: (lambda a, b, c: (a == b, a != c, hash(a) == hash(b), a == tuple(a)))(
        rc.execute(both, (3,)).fetchone(), rc.execute(both, (3,)).fetchone(), rc.execute(both, (4,)).fetchone()))
    rec("row of a list", lambda: m.Row(rc, [1, 2]))
    c.row_factory = None
    rec("factory copied", lambda: type(rc.execute("select 1").fetchone()).__name__)
    pend = c.cursor()
    pend.execute("select id from t order by id")
    pend.fetchone()
    done = c.cursor()
    done.execute("select id from t where id = ?", (1,))
    closed = c.cursor()
    closed.close()
    rec("closed cursor", lambda: closed.execute("select 1"))
    rec("closed cursor fetch", lambda: closed.fetchone())
    c.close()
    rec("closed conn fetch pending", lambda: pend.fetchone())
    rec("closed conn fetch done", lambda: done.fetchone())
    rec("closed conn execute", lambda: done.execute("select 1"))
    return out

def c_route_executes():
    """Cursor._execute calls for three point selects by position and three by
    name after the first of each (which prepares and caches the statement):
    0 when CursorCore.execute ran them."""
    calls = []
    python_route = ps.Cursor._execute
    ps.Cursor._execute = lambda self, *a: (calls.append(1), python_route(self, *a))[1]
    try:
        c = ps.connect(":memory:")
        c.execute("select ?", (0,)).fetchone()
        c.execute("select :a", {"a": 0}).fetchone()  # learns the statement's keys
        first = len(calls)
        for i in range(3):
            c.execute("select ?", (i,)).fetchone()
            c.execute("select :a", {"a": i}).fetchone()
        return len(calls) - first
    finally:
        ps.Cursor._execute = python_route


def collected():
    c = ps.connect(":memory:")
    cur = c.cursor()
    cur.row_factory = functools.partial(lambda owner, cursor, row: row, cur)  # a cycle through a C field
    ref = weakref.ref(cur)
    del cur
    gc.collect()
    return ref() is None

mode = sys.argv[1]
if mode == "builtin":
    lines = scenario(sqlite3)
else:
    if mode == "python":
        _sqlite_binding.set_first_batch(0)
    lines = scenario(ps)
    lines.append(f"C route: {ps.Cursor.execute is _sqlite_binding.CursorCore.execute}")
    lines.append(f"executes through Cursor._execute: {c_route_executes()}")
    lines.append(f"collected: {collected()}")
print("\n".join(lines))
