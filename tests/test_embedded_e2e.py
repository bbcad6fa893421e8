"""Embedded caps end to end: the stock pylon.wasm has crc32c, sqlite and zstd plugged in
with `wac plug`; scripts use them through the same API as by dynlink."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import crc32c as reference
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, Pylon


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def run_ok(pylon: Pylon, script: Path, *args: str, plan: Path | None = None, writable: bool = False) -> str:
    """Runs ``script``; ``writable`` lets it write its own folder (read-only by default)."""
    if writable:
        plan_args = ["--plan", str(plan)] if plan else []
        result = pylon.composectl("run", *plan_args, "--dir", f"{script.parent}:rw", str(script), *args)
    else:
        result = pylon.run_script(script, *args, plan=plan)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_stock_guest_embeds_every_cap(pylon: Pylon) -> None:
    out = pylon.run_code("import crc32c, pylon_guest.sqlite as s, pylon_guest.zstd as z; "
                         "print(crc32c.backend(), s.backend().name, z.backend().name)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["embedded", "embedded", "embedded"]


def test_crc32c_embedded_equals_dynlink_equals_reference(pylon: Pylon, tmp_path: Path) -> None:
    blobs = [random.Random(seed).randbytes(size) for seed, size in enumerate([0, 1, 7, 4096, 65537, 1 << 20])]
    for i, blob in enumerate(blobs):
        (tmp_path / f"b{i}").write_bytes(blob)
    script = write(tmp_path / "both.py", """
        import sys, crc32c, _crc32c_dynlink_cap as dyn
        for name in sys.argv[1:]:
            data = open(name, "rb").read()
            print(crc32c.crc32c(data), dyn.crc32c(data))
    """)
    lines = run_ok(pylon, script, *[str(tmp_path / f"b{i}") for i in range(len(blobs))]).splitlines()
    for line, blob in zip(lines, blobs, strict=True):
        embedded, dynlink = map(int, line.split())
        assert embedded == dynlink == reference.crc32c(blob)


# -- SQLite -------------------------------------------------------------------

values = st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False),
                   st.text(max_size=20), st.binary(max_size=20))
rows = st.lists(st.tuples(values, values), min_size=0, max_size=30)

# One workload, run by the guest's pylon_guest.sqlite and by the host's sqlite3.
SQL_WORKLOAD = """
def run_statements(sqlite3, statements):
    db = sqlite3.connect(":memory:")
    out = []
    for sql, params, many in statements:
        cur = db.executemany(sql, params) if many else db.execute(sql, params)
        got = [[v.hex() if isinstance(v, bytes) else v for v in row] for row in cur.fetchall()]
        out.append({"rows": got, "description": [d[0] for d in cur.description or []]})
    return out
"""

# Bytes cannot travel in JSON: they go to the guest as {"hex": ...} and are rebuilt there.
SQL_SCRIPT = SQL_WORKLOAD + """
import json, sys
import pylon_guest.sqlite
unhex = lambda d: bytes.fromhex(d["hex"]) if set(d) == {"hex"} else d
print(json.dumps(run_statements(pylon_guest.sqlite, json.load(open(sys.argv[1]), object_hook=unhex))))
"""


def run_sql_natively(statements: list) -> list:
    scope: dict = {}
    exec(SQL_WORKLOAD, scope)
    return scope["run_statements"](sqlite3, statements)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=rows)
def test_sql_workload_matches_cpython_sqlite3(pylon: Pylon, tmp_path: Path, sqlite_plan: Path | None,
                                              data: list) -> None:
    """On both backends: the embedded cap, and its generated dynlink face in a lean guest."""
    inserted = [list(row) for row in data]
    statements = [
        ["create table t (id integer primary key, a, b)", [], False],
        ["insert into t (a, b) values (?, ?)", inserted, True],
        ["select id, a, b, typeof(a), typeof(b) from t order by id", [], False],
        ["select count(*), count(a), count(b) from t", [], False],
        ["select typeof(a), count(*) from t group by typeof(a) order by 1", [], False],
        ["select id from t where a is null or b is null order by id", [], False],
        ["update t set a = ? where id % 2 = 0", ["even"], False],
        ["select id, a from t where a = :v order by id", {"v": "even"}, False],
        ["delete from t where id > ?", [10], False],
        # length() of a REAL is the length of its text, which SQLite versions
        # write differently (3.50 vs the host's 3.40): measure text and blobs only.
        ["select max(id), min(id), total(case when typeof(b) in ('text', 'blob') then length(b) end) from t",
         [], False],
    ]
    payload = json.dumps(statements, default=lambda b: {"hex": b.hex()})
    (tmp_path / "stmts.json").write_text(payload)
    script = tmp_path / "sql.py"
    script.write_text(SQL_SCRIPT)
    guest = json.loads(run_ok(pylon, script, str(tmp_path / "stmts.json"), plan=sqlite_plan))
    native = json.loads(json.dumps(run_sql_natively(statements)))
    assert guest == native


def test_sqlite_file_persists_across_runs_and_to_cpython(pylon: Pylon, tmp_path: Path) -> None:
    write_script = write(tmp_path / "w.py", """
        import pylon_guest.sqlite as sqlite3
        with sqlite3.connect("data.db") as db:
            db.execute("create table kv (k text primary key, v blob)")
            db.executemany("insert into kv values (?, ?)", [("a", b"\\x00\\x01"), ("b", None)])
        db.close()
    """)
    read_script = write(tmp_path / "r.py", """
        import pylon_guest.sqlite as sqlite3
        db = sqlite3.connect("data.db")
        print(db.execute("select k, v from kv order by k").fetchall())
    """)
    run_ok(pylon, write_script, writable=True)
    assert run_ok(pylon, read_script, writable=True).strip() == "[('a', b'\\x00\\x01'), ('b', None)]"
    native = sqlite3.connect(tmp_path / "data.db")
    assert native.execute("select k, v from kv order by k").fetchall() == [("a", b"\x00\x01"), ("b", None)]
    native.execute("insert into kv values ('c', 3)")
    native.commit()
    native.close()
    assert "('c', 3)" in run_ok(pylon, read_script, writable=True)


def test_sqlite_errors_are_dbapi_exceptions_and_lose_nothing(pylon: Pylon, tmp_path: Path) -> None:
    script = write(tmp_path / "errors.py", """
        import pylon_guest.sqlite as sqlite3
        db = sqlite3.connect("t.db")
        db.execute("create table t (id integer primary key, v text not null)")
        db.execute("insert into t values (1, 'kept')")
        db.commit()
        def attempt(label, fn):
            try:
                fn()
            except sqlite3.Error as e:
                print(label, type(e).__name__)
        attempt("syntax", lambda: db.execute("selec 1"))
        attempt("constraint", lambda: db.execute("insert into t values (1, 'dup')"))
        attempt("notnull", lambda: db.execute("insert into t values (2, null)"))
        attempt("bindtype", lambda: db.execute("select ?", (object(),)))
        db.execute("insert into t values (3, 'uncommitted')")
        db.rollback()
        print(db.execute("select v from t order by id").fetchall())
        cur = db.cursor()
        db.close()
        attempt("closed", lambda: db.execute("select 1"))
        attempt("closedcursor", lambda: cur.execute("select 1"))
    """)
    lines = run_ok(pylon, script, writable=True).splitlines()
    assert lines[:4] == ["syntax OperationalError", "constraint IntegrityError", "notnull IntegrityError",
                         "bindtype ProgrammingError"]
    assert lines[4] == "[('kept',)]"
    assert lines[5:] == ["closed ProgrammingError", "closedcursor ProgrammingError"]


# -- zstd ---------------------------------------------------------------------


def test_zstd_frames_interoperate_with_the_zstandard_package(pylon: Pylon, tmp_path: Path) -> None:
    data = random.Random(7).randbytes(1 << 20) + b"pylon" * 200_000
    (tmp_path / "plain").write_bytes(data)
    (tmp_path / "native.zst").write_bytes(zstandard.ZstdCompressor(level=5).compress(data))
    script = write(tmp_path / "z.py", """
        import pylon_guest.zstd as zstd
        plain = open("plain", "rb").read()
        open("guest.zst", "wb").write(zstd.compress(plain, 9))
        print(zstd.decompress(open("native.zst", "rb").read()) == plain)
    """)
    assert run_ok(pylon, script, writable=True).strip() == "True"
    assert zstandard.ZstdDecompressor().decompress((tmp_path / "guest.zst").read_bytes(),
                                                   max_output_size=len(data)) == data


def test_zstd_rejects_corrupt_frames_and_bombs(pylon: Pylon, tmp_path: Path) -> None:
    (tmp_path / "bomb.zst").write_bytes(zstandard.ZstdCompressor().compress(bytes(64 << 20)))
    script = write(tmp_path / "bad.py", """
        import pylon_guest.zstd as zstd
        try:
            zstd.decompress(b"\\x28\\xb5\\x2f\\xfd garbage")
        except zstd.ZstdError as e:
            print(type(e).__name__)
        try:
            zstd.decompress(open("bomb.zst", "rb").read(), max_output=1 << 20)
        except zstd.ZstdError as e:
            print(type(e).__name__)
    """)
    assert run_ok(pylon, script, writable=True).split() == ["CorruptFrameError", "OutputTooLargeError"]


# -- lean and fat builds --------------------------------------------------------


def imports_of(path: str) -> list[str]:
    from pylon.build.guest import component_imports

    return component_imports(Path(path))


def test_stock_guest_imports_no_cap_interfaces(pylon: Pylon) -> None:
    built = pylon.composectl("build", check=True, timeout=3600)
    imports = imports_of(built.stdout.split()[1])
    assert not [i for i in imports if i.startswith("pylon:")]
    assert any(i.startswith("compose:dynlink/linker") for i in imports)


def test_lean_build_lacks_the_dropped_cap_and_falls_back_to_dynlink(pylon: Pylon, tmp_path: Path) -> None:
    lean = tmp_path / "lean.wasm"
    built = pylon.composectl("build", "--without", "crc32c", "-o", str(lean), check=True, timeout=3600)
    assert "embedded caps: sqlite, zstd" in built.stderr
    fat = pylon.composectl("build", check=True, timeout=3600).stdout.split()[1]
    # wac plug nests each plugged component verbatim: the fat guest carries the
    # crc32c cap's component, the lean one does not.
    from pylon.build.embedded import build_embedded_cap

    crc32c_component = build_embedded_cap("crc32c").read_bytes()
    assert crc32c_component in Path(fat).read_bytes()
    assert crc32c_component not in lean.read_bytes()
    # The lean guest has no crc32c inside: a plan with it as guest reaches crc32c by dynlink.
    plan = tmp_path / "plan.json"
    doc = json.loads(pylon.default_plan.read_text())
    digest = pylon.composectl("blob", "put", str(lean), check=True).stdout.strip()
    pylon.composectl("trust", "allow", "--guest", digest, check=True)  # a guest is trust-gated like a cap
    doc["guest"] = {"digest": digest, "sources": [lean.as_uri()]}
    plan.write_text(json.dumps(doc))
    out = pylon.run_code("import crc32c; print(crc32c.backend(), hex(crc32c.crc32c(b'123456789')))", plan=plan)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["dynlink", "0xe3069283"]


def test_compose_script_refuses_unknown_flags(tmp_path: Path) -> None:
    script = REPO / "scripts" / "compose-python-component.sh"
    bad = subprocess.run(["bash", str(script), str(tmp_path / "x.wasm")],
                         env={"WITH_SQLLITE": "0", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown flag WITH_SQLLITE" in bad.stderr
    bad = subprocess.run(["bash", str(script)], env={"WITH_ZSTD": "no", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "WITH_ZSTD must be 0 or 1" in bad.stderr


def test_build_refuses_unknown_caps(pylon: Pylon) -> None:
    result = pylon.composectl("build", "--without", "nosuch")
    assert result.returncode == 2 and "cannot embed nosuch" in result.stderr
