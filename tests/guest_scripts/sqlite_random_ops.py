"""Random DB-API workloads for tests/test_guest_binding.py: ``seed`` picks a
sequence of operations (inserts by position and by name, point and range
selects read by fetchone, fetchmany, fetchall or iteration, with and without
a row factory, two cursors interleaved, updates, deletes, executemany,
commits, rollbacks, and calls that fail), run on the guest's sqlite3
(``builtin``) or pylon_guest.sqlite (``pylon``); one line per operation, so
the two outputs must be equal line for line."""

import random
import sqlite3
import sys

from pylon_guest import sqlite as ps


def value(rng):
    kind = rng.randrange(8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.randrange(-(1 << 63), 1 << 63)
    if kind == 2:
        return rng.randrange(-1000, 1000)
    if kind == 3:
        return rng.choice([0.0, -1.5, 1e300, float("inf"), rng.random() * 1e6])
    if kind == 4:
        return "".join(rng.choice("abcXYZ é€𝄞\n'\"") for _ in range(rng.randrange(0, 12)))
    if kind == 5:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 10)))
    if kind == 6:
        return rng.choice([True, False])
    return "x" * rng.randrange(0, 300)


def shown(row):
    if row is None or isinstance(row, tuple):
        return row
    if isinstance(row, list):
        return [shown(r) for r in row]
    return ("Row", tuple(row), tuple(row.keys()))  # a Row


def run(m, seed, steps=250):
    rng = random.Random(seed)
    out = []
    conn = m.connect(":memory:")
    conn.execute("create table t (k integer primary key, a, b, c text)")
    cursors = [conn.cursor(), conn.cursor()]
    next_key = 1
    for step in range(steps):
        cur = rng.choice(cursors)
        op = rng.randrange(12)
        try:
            if op == 0:
                row = (next_key, value(rng), value(rng), value(rng))
                next_key += 1
                r = cur.execute("insert into t values (?, ?, ?, ?)", row if rng.random() < 0.7 else list(row))
                got = (r.rowcount, r.lastrowid)
            elif op == 1:
                params = {"k": next_key, "a": value(rng), "b": value(rng), "c": value(rng), "extra": 0}
                next_key += 1
                got = cur.execute("insert into t values (:k, :a, @b, $c)", params).rowcount
            elif op == 2:
                k = rng.randrange(0, next_key + 2)
                got = shown(cur.execute("select a, b, c from t where k = ?", (k,)).fetchone())
            elif op == 3:
                lo = rng.randrange(0, next_key)
                cur.execute("select k, a, c from t where k >= :lo order by k", {"lo": lo})
                how = rng.randrange(4)
                if how == 0:
                    got = shown(cur.fetchall())
                elif how == 1:
                    got = [shown(r) for r in cur]
                elif how == 2:
                    got = shown(cur.fetchmany(rng.randrange(-1, 5)))
                else:
                    got = [shown(cur.fetchone()) for _ in range(rng.randrange(1, 4))]
            elif op == 4:
                got = shown(cur.fetchone())  # whatever is pending on this cursor
            elif op == 5:
                got = cur.execute("update t set b = ? where k % 3 = ?", (value(rng), rng.randrange(3))).rowcount
            elif op == 6:
                got = cur.execute("delete from t where k = ?", (rng.randrange(0, next_key),)).rowcount
            elif op == 7:
                rows = [(next_key + i, value(rng), value(rng), value(rng)) for i in range(rng.randrange(0, 40))]
                next_key += len(rows) + 1
                got = conn.executemany("insert into t values (?, ?, ?, ?)", rows).rowcount
            elif op == 8:
                conn.row_factory = m.Row if conn.row_factory is None else None
                cursors = [conn.cursor(), conn.cursor()]
                got = conn.row_factory is None
            elif op == 9:
                got = rng.choice([conn.commit, conn.rollback])() or conn.in_transaction
            elif op == 10:
                bad = rng.randrange(4)
                if bad == 0:
                    cur.execute("insert into t values (?, ?, ?, ?)", (1, 2, 3))
                elif bad == 1:
                    k = rng.randrange(1, next_key)
                    cur.execute("insert into t values (?, ?, ?, ?)", (k, 0, 0, "dup"))
                elif bad == 2:
                    cur.execute("select * from nowhere where k = ?", (1,))
                else:
                    cur.execute("select :k", {"j": 1})
                got = "no error"
            else:
                got = shown(cur.execute("select count(*), sum(length(c)), max(k) from t").fetchone())
        except Exception as exc:  # noqa: BLE001 - the class is the result
            got = ("raise", type(exc).__name__)
        out.append(f"{step} {op}: {got!r}")
    conn.close()
    return out


module = {"builtin": sqlite3, "pylon": ps}[sys.argv[1]]
for seed in map(int, sys.argv[2:]):
    print("\n".join(run(module, seed)))
