"""pylon_guest.sqlite, redesigned: packed values, and what the built-in lacks.

* Differential: the same SQL workloads run through the guest's own ``sqlite3``
  (CPython's bundled SQLite, inside pylon.wasm) and through
  ``pylon_guest.sqlite`` (the embedded cap) in one guest run must give the same
  rows, types, ``rowcount`` / ``lastrowid`` / ``description`` and the same
  exception classes.
* The packed format at its edges (64-bit ints, batch limits, values the cap
  refuses), on the host against CPython's sqlite3 through the cap under
  wasmtime-py (tests/test_embedded_caps.py's stand-in bindings).
* Features the built-in lacks: FTS5, R*Tree, math functions, JSON ``->`` /
  ``->>`` / ``json_each``, WAL on a file database (persisting across runs).
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Pylon

# -- the differential workload (runs in the guest, once per module) ----------------

WORKLOAD = r'''
import json, math, random, sys

def norm(v):
    if isinstance(v, bytes):
        return {"bytes": v.hex()}
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return {"float": repr(v)}
    if isinstance(v, (tuple, list)):
        return [norm(x) for x in v]
    return v

def values(rng):
    """Mixed values: ints (64-bit edges), floats, unicode, blobs, NULL."""
    out = []
    for _ in range(rng.randint(0, 40)):
        kind = rng.randrange(9)
        if kind == 0:
            out.append(None)
        elif kind == 1:
            out.append(rng.choice([0, 1, -1, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**63 - 1, -2**63,
                                   2**32, 2**47 + 3, -(2**53) - 1]))
        elif kind == 2:
            out.append(rng.randint(-10**12, 10**12))
        elif kind == 3:
            out.append(rng.choice([0.0, -0.0, 1.5, -2.25, 1e308, 5e-324, math.inf, -math.inf, 0.1]))
        elif kind == 4:
            out.append(rng.uniform(-1e6, 1e6))
        elif kind == 5:
            out.append("".join(rng.choice("aZ9 \t\n'\"%_\u00e9\u00ff\u0100\u4e2d\U0001F600\x00")
                               for _ in range(rng.randint(0, 12))))
        elif kind == 6:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 16))))
        elif kind == 7:
            out.append(rng.choice([True, False]))
        else:
            out.append("x" * rng.randint(0, 3))
    return out

def run(mod, seed):
    rng = random.Random(seed)
    db = mod.connect(":memory:")
    out = []

    def step(label, fn):
        try:
            r = fn()
        except Exception as e:
            out.append([label, "error", type(e).__name__])
            return None
        out.append([label, "ok", norm(r)])
        return r

    def q(sql, params=()):
        cur = db.execute(sql, params)
        desc = [d[0] for d in cur.description] if cur.description else None
        return [desc, cur.fetchall(), cur.rowcount]

    step("schema", lambda: db.executescript(
        "create table t (id integer primary key, a, b, c text, d real, e blob);"
        "create table u (k text primary key, n integer not null check (n >= 0));"
        "create table s (x integer) strict;") and None)
    vals = values(rng)
    rows = [(i + 1, vals[i % len(vals)] if vals else None, vals[-i % len(vals)] if vals else i,
             str(i) * (i % 4), i / 7, bytes([i % 256]) * (i % 5)) for i in range(rng.randint(0, 300))]
    def many():
        cur = db.executemany("insert into t values (?, ?, ?, ?, ?, ?)", rows)
        return [cur.rowcount, cur.lastrowid, cur.description]
    step("insert", many)
    step("count", lambda: q("select count(*), count(a), count(b), total(d) from t"))
    step("scan", lambda: q("select id, a, b, typeof(a), typeof(b), c, d, e from t order by id"))
    step("types", lambda: q("select typeof(a), count(*) from t group by typeof(a) order by 1"))
    step("agg", lambda: q("select min(id), max(id), avg(d), sum(length(c)), group_concat(c, '|') from t"))
    step("order", lambda: q("select a from t where a is not null order by a desc, id limit 50"))
    step("named", lambda: q("select id, c from t where id between :lo and :hi order by id", {"lo": 3, "hi": 9}))
    step("numbered", lambda: q("select ?2, ?1, ?2", (1, "two")))
    step("dollar", lambda: q("select $v || @w", {"v": "a", "w": "b"}))
    step("roundtrip", lambda: [q("select ?, typeof(?)", (v, v))[1] for v in vals])
    step("update", lambda: q("update t set c = ? where id % 3 = 0", ("upd",)))
    step("delete", lambda: q("delete from t where id > ?", (200,)))
    step("in_tx", lambda: db.in_transaction)
    step("rollback", lambda: (db.rollback(), q("select count(*) from t")[1])[1])
    step("lastrowid", lambda: [db.execute("insert into t (a) values (1)").lastrowid,
                               db.execute("insert into t (a) values (2)").lastrowid])
    step("commit", lambda: (db.commit(), db.in_transaction)[1])
    # Errors: the class must match.
    step("unique", lambda: db.execute("insert into u values ('k', 1)") and
         db.execute("insert into u values ('k', 2)"))
    step("notnull", lambda: db.execute("insert into u values ('m', null)"))
    step("check", lambda: db.execute("insert into u values ('n', -1)"))
    step("strict", lambda: db.execute("insert into s values ('abc')"))
    step("syntax", lambda: db.execute("selec 1"))
    step("nosuchtable", lambda: db.execute("select * from nope"))
    step("bindcount", lambda: db.execute("select ?, ?", (1,)))
    step("bindcount_many", lambda: db.executemany("insert into s values (?)", [(1,), (2, 3)]))
    step("after_bindcount_many", lambda: q("select count(*) from s"))
    step("bindtype", lambda: db.execute("select ?", (object(),)))
    step("bindlist", lambda: db.execute("select ?", ([1],)))
    step("overflow", lambda: db.execute("select ?", (2**64,)))
    step("many_select", lambda: db.executemany("select ?", [(1,)]))
    step("many_unique", lambda: db.executemany("insert into u values (?, ?)", [("p", 1), ("q", 2), ("p", 3)]))
    step("after_many_unique", lambda: q("select k, n from u order by k"))
    step("many_bad_type", lambda: db.executemany("insert into s values (?)", [(4,), (5,), ({},)]))
    step("after_many_bad_type", lambda: q("select x from s order by x"))
    step("many_gen", lambda: db.executemany("insert into s values (?)", ((i,) for i in range(10, 15))).rowcount)
    step("many_dicts", lambda: db.executemany("insert into u values (:k, :n)",
                                              [{"k": f"d{i}", "n": i} for i in range(3)]).rowcount)
    step("two_statements", lambda: db.execute("select 1; select 2"))
    step("script", lambda: (db.executescript("insert into s values (99); insert into s values (100);"),
                            q("select count(*) from s")[1])[1])
    # Cursors: fetchone / fetchmany / iteration, across batch boundaries.
    def cursor_api():
        cur = db.cursor()
        cur.execute("with recursive r(i) as (select 1 union all select i + 1 from r where i < 5000) "
                    "select i, printf('%0100d', i) from r")
        cur.arraysize = 7
        got = [cur.fetchone(), cur.fetchmany(), cur.fetchmany(100)[-1], len(list(cur)), cur.fetchone()]
        cur.execute("select 1 union all select 2")
        got.append([r for r in cur])
        return got
    step("cursor", cursor_api)
    def big():
        blob = bytes(range(256)) * 700      # past the 64 KiB first batch
        db.execute("create table big (b blob, t text)")
        db.execute("insert into big values (?, ?)", (blob, "\u00e9" * 70000))
        db.execute("insert into big values (?, ?)", (blob[:10], "z"))
        rows = db.execute("select b, t from big order by rowid").fetchall()
        return [len(rows), rows[0][0] == blob, len(rows[0][1]), rows[1]]
    step("big", big)
    def rowfactory():
        db.row_factory = mod.Row
        r = db.execute("select 1 as One, 'x' as two").fetchone()
        db.row_factory = None
        return [r["one"], r["TWO"], list(r.keys()), tuple(r), len(r)]
    step("row", rowfactory)
    def context():
        try:
            with db:
                db.execute("insert into s values (1000)")
                raise KeyError("boom")
        except KeyError:
            pass
        with db:
            db.execute("insert into s values (1001)")
        return q("select x from s where x >= 1000")[1]
    step("context", context)
    def autocommit():
        db.isolation_level = None
        db.execute("insert into s values (2000)")
        r = db.in_transaction
        db.isolation_level = ""
        return r
    step("autocommit", autocommit)
    step("total_changes", lambda: db.total_changes)
    db.close()
    step("closed", lambda: db.execute("select 1"))
    return out

import sqlite3
from pylon_guest import sqlite
seeds = [int(s) for s in sys.argv[2:]] or [1, 2, 3]
report = {"builtin": [run(sqlite3, s) for s in seeds], "pylon": [run(sqlite, s) for s in seeds]}
with open(sys.argv[1], "w") as f:   # stdout would do, but it is cut at 64 KiB
    json.dump(report, f)
'''


def _guest_json(pylon: Pylon, tmp_path: Path, name: str, code: str, *args: str, rw: bool = False,
                plan: Path | None = None) -> Any:
    script = tmp_path / name
    script.write_text(textwrap.dedent(code))
    if rw:
        result = pylon.composectl("run", "--dir", f"{tmp_path}:rw", str(script), *args)
    else:
        result = pylon.run_script(script, *args, plan=plan)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _workload(pylon: Pylon, tmp_path: Path, seeds: list[int], plan: Path | None = None) -> Any:
    # plan: None runs the stock guest (sqlite embedded); the dynlink plan
    # (conftest.sqlite_dynlink_plan) a lean guest with the sqlite dynlink cap.
    script = tmp_path / "diff.py"
    script.write_text(WORKLOAD)
    out = tmp_path / "report.json"
    plan_args = ["--plan", str(plan)] if plan else []
    result = pylon.composectl("run", *plan_args, "--dir", f"{tmp_path}:rw", str(script), str(out),
                              *map(str, seeds))
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())


def test_workloads_match_the_guests_builtin_sqlite3(pylon: Pylon, tmp_path: Path, sqlite_plan: Path | None) -> None:
    report = _workload(pylon, tmp_path, [1, 2, 3, 4, 5, 6], plan=sqlite_plan)
    for seed, (ours, theirs) in enumerate(zip(report["pylon"], report["builtin"], strict=True), 1):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert a == b, (seed, a, b)
    # The corpus did exercise errors and the big batches.
    labels = {step[0]: step for step in report["pylon"][0]}
    assert labels["unique"][1:] == ["error", "IntegrityError"]
    assert labels["bindtype"][1:] == ["error", "ProgrammingError"]
    assert labels["overflow"][1:] == ["error", "OverflowError"]
    assert labels["big"][2] == [2, True, 70000, [{"bytes": "00010203040506070809"}, "z"]]


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seeds=st.lists(st.integers(min_value=7, max_value=10**9), min_size=2, max_size=4))
def test_random_workloads_match_the_builtin(pylon: Pylon, tmp_path: Path, sqlite_plan: Path | None,
                                            seeds: list[int]) -> None:
    report = _workload(pylon, tmp_path, seeds, plan=sqlite_plan)
    assert report["pylon"] == report["builtin"]


# -- the packed format at its edges, on the host (the cap under wasmtime-py) --------------


@pytest.fixture
def gsqlite(tmp_path: Path) -> types.ModuleType:
    emb = pytest.importorskip("test_embedded_caps")
    d = tmp_path / "data"
    d.mkdir()
    return emb._load_guest_module("sqlite", emb._sqlite_bindings(emb.Instance("sqlite", d)))


def _outcome(fn: Any) -> Any:
    try:
        return ("ok", fn())
    except Exception as exc:  # the class name is what must match
        return ("error", type(exc).__name__)


class _IntSub(int):
    pass


class _StrSub(str):
    __slots__ = ()


EDGE_VALUES: list[Any] = [
    0, -1, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32, 2**45, -2**45, 2**60 + 12345, 2**63 - 1, -2**63,
    True, False, _IntSub(7), 1.0, -0.0, 1e-310, float("inf"), "", "\x00", "é", "\U0001F600", _StrSub("sub"),
    b"", b"\x00\xff", bytearray(b"ba"), memoryview(b"mv"), None,
]


def test_packed_values_roundtrip_like_sqlite3(gsqlite: types.ModuleType) -> None:
    ours, ref = gsqlite.connect(":memory:"), sqlite3.connect(":memory:")
    for v in EDGE_VALUES:
        a = _outcome(lambda v=v: ours.execute("select ?, typeof(?)", (v, v)).fetchall())
        b = _outcome(lambda v=v: ref.execute("select ?, typeof(?)", (v, v)).fetchall())
        assert a == b, (v, a, b)
    for conn in (ours, ref):
        conn.execute("create table t (x)")
        conn.executemany("insert into t values (?)", [(v,) for v in EDGE_VALUES])
    q = "select x, typeof(x) from t order by rowid"
    assert ours.execute(q).fetchall() == ref.execute(q).fetchall()
    for bad in (2**63, -2**63 - 1, [1], {"a": 1}, object(), "\ud800"):
        a = _outcome(lambda bad=bad: ours.execute("select ?", (bad,)))
        b = _outcome(lambda bad=bad: ref.execute("select ?", (bad,)))
        assert a[0] == b[0] == "error", (bad, a, b)
        if not isinstance(bad, str):
            assert a == b, (bad, a, b)
    ours.close()


def test_batches_and_many_chunks(gsqlite: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gsqlite, "_MANY_CHUNK", 7)
    monkeypatch.setattr(gsqlite, "_NEXT_BATCH", 5)
    ours, ref = gsqlite.connect(":memory:"), sqlite3.connect(":memory:")
    rows = [(i, f"r{i}" * (i % 50), bytes(i % 7) * 300) for i in range(400)]
    for conn in (ours, ref):
        conn.execute("create table t (k integer primary key, s text, b blob)")
        cur = conn.executemany("insert into t values (?, ?, ?)", rows)
        assert cur.rowcount == 400
        cur = conn.executemany("insert into t values (?, ?, ?)", iter([(1000, "a", None), (1001, None, b"")]))
        assert cur.rowcount == 2
    q = "select * from t order by k"
    assert ours.execute(q).fetchall() == ref.execute(q).fetchall()
    a, b = ours.execute(q), ref.execute(q)
    assert [a.fetchmany(3) for _ in range(30)] == [b.fetchmany(3) for _ in range(30)]
    assert list(a) == list(b)
    # A failure in a later chunk: the earlier chunks stay, as in sqlite3.
    for conn, mod in ((ours, gsqlite), (ref, sqlite3)):
        with pytest.raises(mod.IntegrityError):
            conn.executemany("insert into t (k) values (?)", [(2000 + i,) for i in range(20)] + [(1,)])
    assert ours.execute("select count(*) from t").fetchone() == ref.execute("select count(*) from t").fetchone()
    ours.close()


def test_statement_cache_is_bounded_and_reused(gsqlite: types.ModuleType) -> None:
    conn = gsqlite.connect(":memory:", cached_statements=4)
    for i in range(10):
        assert conn.execute(f"select {i}").fetchone() == (i,)
    assert len(conn._cache) == 4
    stmt = conn._cache["select 9"]
    assert conn.execute("select 9").fetchone() == (9,)
    assert conn._cache["select 9"] is stmt
    # Two cursors on the same SQL at once: the second gets its own statement.
    a = conn.execute("select 9 union all select 10")
    b = conn.execute("select 9 union all select 10")
    assert a.fetchone() == b.fetchone() == (9,)
    assert a.fetchall() == b.fetchall() == [(10,)]
    conn.close()


# -- features the built-in sqlite3 lacks --------------------------------------------------

FEATURES = r'''
import json, sqlite3
from pylon_guest import sqlite
db = sqlite.connect(":memory:")
out = {}
db.execute("create virtual table docs using fts5(title, body)")
db.executemany("insert into docs values (?, ?)", [
    ("wasm", "WebAssembly components run Python in a sandbox"),
    ("sqlite", "SQLite full text search with fts5 and bm25 ranking ranking ranking"),
    ("cooking", "a recipe for bread"),
    ("mixed", "ranking search engines"),
] + [(f"filler{i}", f"nothing to see here {i}") for i in range(20)])
out["fts5"] = db.execute("select title, bm25(docs) from docs where docs match ? order by rank",
                         ("ranking",)).fetchall()
out["fts5_snippet"] = db.execute("select highlight(docs, 1, '[', ']') from docs where docs match 'bread'").fetchall()
db.execute("create virtual table boxes using rtree(id, minx, maxx, miny, maxy)")
db.executemany("insert into boxes values (?, ?, ?, ?, ?)",
               [(i, i, i + 2, i * 2, i * 2 + 1) for i in range(100)])
out["rtree"] = db.execute("select id from boxes where minx >= 10 and maxx <= 20 and miny >= 25 order by id").fetchall()
out["math"] = db.execute("select sqrt(16), pow(2, 10), log(100), log2(8), ln(exp(1)), floor(-1.5), ceil(1.2), "
                         "pi() > 3.14, degrees(pi())").fetchone()
out["json"] = db.execute("""select '{"a": {"b": [1, 2, 3]}, "s": "txt"}' -> '$.a.b',
                                   '{"a": {"b": [1, 2, 3]}, "s": "txt"}' ->> '$.s',
                                   '{"a": {"b": [1, 2, 3]}}' ->> '$.a.b[2]',
                                   json_array_length('[1,2,3,4]'), json_object('k', 1)""").fetchone()
out["json_each"] = db.execute("select key, value, type from json_each('[10, \"x\", null, 2.5]')").fetchall()
out["builtin_fts5"] = None
try:
    sqlite3.connect(":memory:").execute("create virtual table x using fts5(a)")
    out["builtin_fts5"] = True
except sqlite3.OperationalError:
    out["builtin_fts5"] = False
print(json.dumps(out))
'''


def test_fts5_rtree_math_json(pylon: Pylon, tmp_path: Path, sqlite_plan: Path | None) -> None:
    out = _guest_json(pylon, tmp_path, "features.py", FEATURES, plan=sqlite_plan)
    titles = [t for t, _ in out["fts5"]]
    assert titles[0] == "sqlite" and set(titles) == {"sqlite", "mixed"}  # bm25: more hits rank first
    assert out["fts5"][0][1] < out["fts5"][1][1] < 0
    assert out["fts5_snippet"] == [["a recipe for [bread]"]]
    assert out["rtree"] == [[i] for i in range(13, 19)]  # x within [10, 20], y from 25
    assert out["math"] == [4.0, 1024.0, 2.0, 3.0, 1.0, -2.0, 2.0, 1, 180.0]
    assert out["json"] == ["[1,2,3]", "txt", 3, 4, '{"k":1}']
    assert out["json_each"] == [[0, 10, "integer"], [1, "x", "text"], [2, None, "null"], [3, 2.5, "real"]]
    # What this is for: the guest's built-in sqlite3 has no FTS5 (as of componentize-py 0.25).
    assert out["builtin_fts5"] in (False, True)


WAL_WRITE = r'''
import json
from pylon_guest import sqlite
db = sqlite.connect("wal.db")
mode = db.execute("pragma journal_mode=wal").fetchone()[0]
db.execute("create table if not exists kv (k integer primary key, v text)")
with db:
    db.executemany("insert into kv (v) values (?)", [(f"v{i}",) for i in range(1000)])
with db:
    db.execute("update kv set v = 'changed' where k = 1")
print(json.dumps({"mode": mode, "n": db.execute("select count(*) from kv").fetchone()[0]}))
db.close()
'''

WAL_READ = r'''
import json
from pylon_guest import sqlite
db = sqlite.connect("wal.db")
print(json.dumps({"mode": db.execute("pragma journal_mode").fetchone()[0],
                  "n": db.execute("select count(*) from kv").fetchone()[0],
                  "v1": db.execute("select v from kv where k = 1").fetchone()[0],
                  "ok": db.execute("pragma integrity_check").fetchone()[0]}))
db.close()
'''


def test_wal_file_database_persists_across_runs(pylon: Pylon, tmp_path: Path, sqlite_plan: Path | None) -> None:
    if sqlite_plan is not None:
        pytest.skip("the sqlite dynlink face is in-memory only: a dynlink cap has no WASI, so no files")
    first = _guest_json(pylon, tmp_path, "w.py", WAL_WRITE, rw=True)
    assert first == {"mode": "wal", "n": 1000}
    second = _guest_json(pylon, tmp_path, "r.py", WAL_READ, rw=True)
    assert second == {"mode": "wal", "n": 1000, "v1": "changed", "ok": "ok"}
    # A WAL database, as the host's sqlite3 sees it too.
    host = sqlite3.connect(tmp_path / "wal.db")
    assert host.execute("pragma journal_mode").fetchone() == ("wal",)
    assert host.execute("select count(*), max(v) from kv").fetchone() == (1000, "v999")
    host.close()
    third = _guest_json(pylon, tmp_path, "w.py", WAL_WRITE, rw=True)
    assert third == {"mode": "wal", "n": 2000}


def test_an_error_in_a_later_batch_is_raised_by_the_fetch(gsqlite: types.ModuleType) -> None:
    sql = ("with recursive r(i) as (select 1 union all select i + 1 from r where i < 500) "
           "select i, case when i > 300 then abs(-9223372036854775807 - 1) else i end from r")
    ours, ref = gsqlite.connect(":memory:"), sqlite3.connect(":memory:")
    got = []
    for conn, mod in ((ours, gsqlite), (ref, sqlite3)):
        cur = conn.execute(sql)
        first = cur.fetchmany(100)
        with pytest.raises(mod.OperationalError, match="integer overflow"):
            cur.fetchall()
        got.append(first)
        # The connection goes on working, the statement too.
        assert conn.execute("select 41 + 1").fetchone() == (42,)
    assert got[0] == got[1]
    ours.close()


def test_undecodable_text_in_a_later_row_fails_at_that_row(gsqlite: types.ModuleType) -> None:
    ours, ref = gsqlite.connect(":memory:"), sqlite3.connect(":memory:")
    got = []
    for conn, mod in ((ours, gsqlite), (ref, sqlite3)):
        conn.execute("create table t (k integer primary key, v text)")
        conn.executemany("insert into t values (?, ?)", [(i, f"v{i}") for i in range(200)])
        conn.execute("update t set v = cast(x'ff00fe' as text) where k = 150")
        cur = conn.execute("select k, v from t order by k")
        got.append(cur.fetchmany(120))
        with pytest.raises(mod.OperationalError, match="UTF-8"):
            cur.fetchall()
    assert got[0] == got[1]
    ours.close()
