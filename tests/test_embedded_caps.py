"""The embedded (``wac plug``) faces of the crc32c, zstd and sqlite caps.

Each cap is built with :func:`pylon.build.embedded.build_embedded_cap` and run
under wasmtime-py, which can call component exports (slowly: fine for
correctness, not for benchmarks). Results are compared with the reference
implementations on the host: the ``crc32c`` and ``zstandard`` packages and
CPython's own ``sqlite3``.

The guest modules ``guest/python/pylon_guest/{sqlite,zstd}.py`` are exercised on
the host too: :func:`_load_guest_module` gives them stand-ins for the
``wit_world.imports.<cap>`` bindings componentize-py generates (same class
and method names, same ``Err`` convention), backed by the real component.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import sqlite3
import sys
import types
from pathlib import Path
from typing import Any

import pytest

wasmtime = pytest.importorskip("wasmtime")
import wasmtime.component as wc  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pylon import paths  # noqa: E402
from pylon.build import toolchain  # noqa: E402
from pylon.build.embedded import CAPS, build_embedded_cap  # noqa: E402

GUEST = paths.SOURCE_ROOT / "guest" / "python" / "pylon_guest"
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- running a component under wasmtime-py --------------------------------------

_ENGINE = wasmtime.Engine()
_COMPILED: dict[str, Any] = {}


def _component(name: str) -> Any:
    if name not in _COMPILED:
        _COMPILED[name] = wc.Component.from_file(_ENGINE, str(build_embedded_cap(name)))
    return _COMPILED[name]


class Instance:
    """One instance of a cap's component, with WASI (a preopen, if given)."""

    def __init__(self, name: str, preopen: Path | None = None):
        linker = wc.Linker(_ENGINE)
        linker.add_wasip2()
        self.store = wasmtime.Store(_ENGINE)
        cfg = wasmtime.WasiConfig()
        cfg.inherit_stderr()
        if preopen is not None:
            cfg.preopen_dir(str(preopen), "/data")
        self.store.set_wasi(cfg)
        self.inst = linker.instantiate(self.store, _component(name))
        self.iface = self.inst.get_export_index(self.store, CAPS[name].interface)
        self._funcs: dict[str, Any] = {}

    def __call__(self, func: str, *args: Any) -> Any:
        f = self._funcs.get(func)
        if f is None:
            index = self.inst.get_export_index(self.store, func, self.iface)
            assert index is not None, f"no export {func!r}"
            f = self._funcs[func] = self.inst.get_func(self.store, index)
        result = f(self.store, *args)
        f.post_return(self.store)
        return result

    def drop(self, resource: Any) -> None:
        resource.drop(self.store)


def _unwrap(result: Any, errors: tuple[str, ...] = ()) -> tuple[bool, Any]:
    """wasmtime-py returns a ``result`` as the bare value when ok and error
    types are told apart by Python type, else as Variant("ok"/"err", v).
    Returns (ok, value)."""
    if isinstance(result, wc.Variant):
        if result.tag == "ok":
            return True, result.payload
        if result.tag == "err":
            return False, result.payload
        if result.tag in errors:
            return False, result
    if isinstance(result, wc.Record) and hasattr(result, "code") and hasattr(result, "message"):
        return False, result
    return True, result


# --- stand-ins for componentize-py's bindings -------------------------------------


class Err(Exception):
    """componentize_py_types.Err: the failure case of a WIT result."""

    def __init__(self, value: Any):
        super().__init__(value)
        self.value = value


def _sqlite_bindings(inst: Instance) -> types.ModuleType:
    """What ``wit_world.imports.sqlite`` gives guest code, over ``inst``."""
    m = types.ModuleType("wit_world.imports.sqlite")

    @dataclasses.dataclass
    class Value_Null:
        pass

    @dataclasses.dataclass
    class Value_Integer:
        value: int

    @dataclasses.dataclass
    class Value_Real:
        value: float

    @dataclasses.dataclass
    class Value_Text:
        value: str

    @dataclasses.dataclass
    class Value_Blob:
        value: bytes

    @dataclasses.dataclass
    class Error:
        code: int
        message: str

    @dataclasses.dataclass
    class Batch:
        rows: list
        done: bool
        changes: int
        last_insert_rowid: int

    wrap = {int: Value_Integer, float: Value_Real, str: Value_Text, bytes: Value_Blob}

    def lift(v: Any) -> Any:
        return Value_Null() if v is None else wrap[type(v)](v)

    def lower(v: Any) -> Any:
        return None if isinstance(v, Value_Null) else v.value

    def call(func: str, *args: Any) -> Any:
        ok, value = _unwrap(inst(func, *args))
        if not ok:
            raise Err(Error(value.code, value.message))
        return value

    def batch(r: Any) -> Batch:
        return Batch([[lift(v) for v in row] for row in r.rows], r.done, r.changes, getattr(r, "last-insert-rowid"))

    class Resource:
        def __init__(self, res: Any):
            self._res = res

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: Any) -> None:
            if self._res is not None:
                inst.drop(self._res)
                self._res = None

    class Statement(Resource):
        def _m(self, name: str, *args: Any) -> Any:
            return call(f"[method]statement.{name}", self._res, *args)

        def parameter_names(self) -> list:
            return self._m("parameter-names")

        def columns(self) -> list:
            return self._m("columns")

        def readonly(self) -> bool:
            return self._m("readonly")

        def bind(self, params: list) -> None:
            return self._m("bind", [lower(v) for v in params])

        def step(self) -> Any:
            row = self._m("step")
            return None if row is None else [lift(v) for v in row]

        def step_many(self, max_rows: int) -> Batch:
            return batch(self._m("step-many", max_rows))

        def reset(self) -> None:
            return self._m("reset")

        def run(self, params: list, max_rows: int) -> Batch:
            return batch(self._m("run", [lower(v) for v in params], max_rows))

        def execute_many(self, rows: list) -> int:
            return self._m("execute-many", [[lower(v) for v in row] for row in rows])

        def run_packed(self, params: str, max_rows: int) -> bytes:
            return bytes(self._m("run-packed", params, max_rows))

        def step_packed(self, max_rows: int) -> str:
            return self._m("step-packed", max_rows)

        def execute_many_packed(self, rows: str) -> int:
            return self._m("execute-many-packed", rows)

        def finalize(self) -> None:
            return self._m("finalize")

    class Connection(Resource):
        @classmethod
        def open(cls, path: str) -> Connection:
            return cls(call("[static]connection.open", path))

        def _m(self, name: str, *args: Any) -> Any:
            return call(f"[method]connection.{name}", self._res, *args)

        def execute(self, sql: str) -> None:
            return self._m("execute", sql)

        def prepare(self, sql: str) -> Statement:
            return Statement(self._m("prepare", sql))

        def set_implicit_begin(self, sql: str | None) -> None:
            return self._m("set-implicit-begin", sql)

        def in_transaction(self) -> bool:
            return self._m("in-transaction")

        def commit(self) -> None:
            return self._m("commit")

        def rollback(self) -> None:
            return self._m("rollback")

        def changes(self) -> int:
            return self._m("changes")

        def total_changes(self) -> int:
            return self._m("total-changes")

        def last_insert_rowid(self) -> int:
            return self._m("last-insert-rowid")

        def close(self) -> None:
            return self._m("close")

    for name, obj in list(locals().items()):
        if isinstance(obj, type):
            setattr(m, name, obj)
    return m


def _zstd_bindings(inst: Instance) -> types.ModuleType:
    """What ``wit_world.imports.zstd`` gives guest code, over ``inst``."""
    m = types.ModuleType("wit_world.imports.zstd")

    @dataclasses.dataclass
    class Error_Corrupt:
        value: str

    @dataclasses.dataclass
    class Error_TooLarge:
        value: int

    @dataclasses.dataclass
    class Error_Failed:
        value: str

    kinds = {"corrupt": Error_Corrupt, "too-large": Error_TooLarge, "failed": Error_Failed}

    def call(func: str, *args: Any) -> Any:
        ok, value = _unwrap(inst(func, *args), tuple(kinds))
        if not ok:
            raise Err(kinds[value.tag](value.payload))
        return value

    class Compressor:
        def __init__(self, level: int):
            self._res = inst("[constructor]compressor", level)

        def compress(self, data: bytes) -> bytes:
            return call("[method]compressor.compress", self._res, data)

        def flush(self) -> bytes:
            return call("[method]compressor.flush", self._res)

        def finish(self) -> bytes:
            return call("[method]compressor.finish", self._res)

        def __exit__(self, *exc: Any) -> None:
            inst.drop(self._res)

    class Decompressor:
        def __init__(self, max_output: int):
            self._res = inst("[constructor]decompressor", max_output)

        def decompress(self, data: bytes) -> bytes:
            return call("[method]decompressor.decompress", self._res, data)

        def at_frame_end(self) -> bool:
            return inst("[method]decompressor.at-frame-end", self._res)

        def __exit__(self, *exc: Any) -> None:
            inst.drop(self._res)

    m.Error_Corrupt, m.Error_TooLarge, m.Error_Failed = Error_Corrupt, Error_TooLarge, Error_Failed
    m.Compressor, m.Decompressor = Compressor, Decompressor
    m.compress = lambda data, level: call("compress", data, level)
    m.decompress = lambda data, max_output: call("decompress", data, max_output)
    m.level_range = lambda: inst("level-range")
    return m


def _load_guest_module(cap: str, bindings: types.ModuleType | None) -> types.ModuleType:
    """Imports guest/python/pylon_guest/<cap>.py with ``bindings`` as its typed
    import (None: as in a guest without the embedded cap)."""
    saved = {k: sys.modules.get(k) for k in ("wit_world", "wit_world.imports", f"wit_world.imports.{cap}",
                                             "componentize_py_types")}
    try:
        for key in saved:
            sys.modules.pop(key, None)
        if bindings is not None:
            world, imports, cpt = (types.ModuleType(n) for n in ("wit_world", "wit_world.imports",
                                                                 "componentize_py_types"))
            world.imports = imports
            setattr(imports, cap, bindings)
            cpt.Err = Err
            sys.modules.update({"wit_world": world, "wit_world.imports": imports,
                                f"wit_world.imports.{cap}": bindings, "componentize_py_types": cpt})
        spec = importlib.util.spec_from_file_location(f"guest_pylon_{cap}", GUEST / f"{cap}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


@pytest.fixture
def dbdir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def gsqlite(dbdir: Path) -> types.ModuleType:
    """pylon_guest.sqlite (the guest module) over a fresh sqlite cap instance whose
    /data is ``dbdir``."""
    return _load_guest_module("sqlite", _sqlite_bindings(Instance("sqlite", dbdir)))


@pytest.fixture
def gzstd() -> types.ModuleType:
    return _load_guest_module("zstd", _zstd_bindings(Instance("zstd")))


# --- the components themselves -----------------------------------------------------


@pytest.mark.parametrize("name", sorted(CAPS))
def test_component_builds_validates_and_exports_its_interface(name: str) -> None:
    path = build_embedded_cap(name)
    assert path.exists()
    assert build_embedded_cap(name) == path  # a second call is a cache hit
    tools = toolchain.wasm_tools()
    toolchain.run([tools, "validate", str(path)], what="validate")
    wit = toolchain.run([tools, "component", "wit", str(path)], what="wit").stdout
    assert f"export {CAPS[name].interface};" in wit
    imports = [line.split()[1].rstrip(";") for line in wit.splitlines() if line.strip().startswith("import ")]
    if name == "sqlite":
        # File I/O through WASI, and nothing else.
        assert imports and all(i.startswith("wasi:") for i in imports), imports
        assert any(i.startswith("wasi:filesystem/") for i in imports)
    else:
        assert imports == [], imports


def test_unknown_cap_is_a_clear_build_error() -> None:
    from pylon.errors import BuildError

    with pytest.raises(BuildError, match="no embedded cap named 'nope'"):
        build_embedded_cap("nope")


# --- crc32c ----------------------------------------------------------------------------


def test_crc32c_vectors() -> None:
    inst = Instance("crc32c")
    assert inst("update", 0, b"123456789") == 0xE3069283
    assert inst("update", 0, bytes(32)) == 0x8A9136AA
    assert inst("update", 0, b"") == 0


@SLOW
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_crc32c_matches_reference_incrementally(a: bytes, b: bytes) -> None:
    crc32c = pytest.importorskip("crc32c")
    inst = Instance("crc32c")
    assert inst("update", inst("update", 0, a), b) == crc32c.crc32c(a + b)


# --- zstd ------------------------------------------------------------------------------

try:
    import zstandard
except ImportError:  # the reference for zstd frames; add it to the test extras
    zstandard = None
needs_zstandard = pytest.mark.skipif(zstandard is None, reason="needs the zstandard package as the reference")


@needs_zstandard
@SLOW
@given(st.binary(max_size=2000), st.integers(min_value=-5, max_value=19))
def test_zstd_frames_interoperate_with_zstandard(data: bytes, level: int) -> None:
    inst = Instance("zstd")
    frame = inst("compress", data, level)
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    assert inst("decompress", zstandard.ZstdCompressor(level=3).compress(data), 1 << 20) == data


@needs_zstandard
def test_zstd_errors_are_typed() -> None:
    inst = Instance("zstd")
    bad = inst("decompress", b"definitely not zstd", 1 << 20)
    assert isinstance(bad, wc.Variant) and bad.tag == "corrupt" and "zstd" in bad.payload
    frame = zstandard.ZstdCompressor().compress(b"abc" * 1000)
    cut = inst("decompress", frame[:-3], 1 << 20)
    assert cut.tag == "corrupt" and "truncated" in cut.payload
    assert inst("decompress", b"", 10) == b""


@needs_zstandard
def test_zstd_decompression_bomb_hits_the_limit() -> None:
    inst = Instance("zstd")
    bomb = zstandard.ZstdCompressor().compress(bytes(8 << 20))  # 8 MiB of zeros in ~300 bytes
    assert len(bomb) < 4096
    r = inst("decompress", bomb, 1 << 20)
    assert isinstance(r, wc.Variant) and r.tag == "too-large" and r.payload == 1 << 20
    # Without a size in the header the limit is enforced while streaming.
    streamed = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(8 << 20))
    r = inst("decompress", streamed, 1 << 20)
    assert r.tag == "too-large"
    # Exactly at the limit is fine.
    assert inst("decompress", zstandard.ZstdCompressor().compress(bytes(1000)), 1000) == bytes(1000)


@needs_zstandard
def test_zstd_streaming_resources() -> None:
    inst = Instance("zstd")
    data = os.urandom(3000) * 4
    c = inst("[constructor]compressor", 3)
    out = inst("[method]compressor.compress", c, data[:5000])
    out += inst("[method]compressor.flush", c)
    # After a flush, everything so far decompresses.
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == data[:5000]
    out += inst("[method]compressor.compress", c, data[5000:]) + inst("[method]compressor.finish", c)
    assert zstandard.ZstdDecompressor().decompress(out, max_output_size=len(data)) == data
    inst.drop(c)

    d = inst("[constructor]decompressor", 1 << 20)
    two = zstandard.ZstdCompressor().compress(b"one") + zstandard.ZstdCompressor().compress(b"two")
    got = inst("[method]decompressor.decompress", d, two[:7])
    assert inst("[method]decompressor.at-frame-end", d) is False
    got += inst("[method]decompressor.decompress", d, two[7:])
    assert got == b"onetwo" and inst("[method]decompressor.at-frame-end", d) is True
    inst.drop(d)

    small = inst("[constructor]decompressor", 100)
    r = inst("[method]decompressor.decompress", small, zstandard.ZstdCompressor().compress(bytes(1000)))
    assert r.tag == "too-large"


@needs_zstandard
def test_guest_zstd_module(gzstd: types.ModuleType) -> None:
    z = gzstd
    assert z.backend().name == "embedded"
    data = b"pylon " * 500
    frame = z.compress(data)
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    assert z.decompress(frame) == data
    assert z.decompress(zstandard.ZstdCompressor().compress(data), max_output=len(data)) == data
    with pytest.raises(z.CorruptFrameError):
        z.decompress(b"garbage")
    with pytest.raises(z.OutputTooLargeError) as info:
        z.decompress(frame, max_output=100)
    assert info.value.limit == 100 and isinstance(info.value, z.ZstdError)
    with pytest.raises(TypeError):
        z.compress("text")

    c = z.ZstdCompressor(level=5)
    out = c.compress(data[:1000]) + c.compress(data[1000:], mode=c.FLUSH_BLOCK) + c.flush()
    assert zstandard.ZstdDecompressor().decompress(out, max_output_size=len(data)) == data
    with z.ZstdDecompressor(max_output=len(data)) as d:
        assert d.decompress(out[:10]) + d.decompress(out[10:]) == data
        assert d.eof
    with pytest.raises(ValueError, match="closed"):
        d.decompress(b"")


def test_guest_modules_fall_back_to_dynlink_without_the_embedded_import(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []

    class FakeCap:
        """Just enough of a Cap whose shim is zstd's generated proxy (the real
        one runs in tests/test_zstd_dynlink.py)."""

        api = types.SimpleNamespace(
            Err=Err, Error_Corrupt=type("Error_Corrupt", (), {}), Error_TooLarge=type("Error_TooLarge", (), {}),
            compress=lambda data, level: (calls.append(("compress", data, level)), b"frame")[1])

    dynlink = types.ModuleType("pylon_guest.dynlink")
    dynlink.load = lambda name: (calls.append(("load", name)), FakeCap())[1]
    package = types.ModuleType("pylon_guest")
    package.dynlink = dynlink
    monkeypatch.setitem(sys.modules, "pylon_guest", package)
    monkeypatch.setitem(sys.modules, "pylon_guest.dynlink", dynlink)
    z = _load_guest_module("zstd", None)
    assert calls == []  # nothing is resolved at import (that would happen at guest build time)
    assert z.compress(b"x", 7) == b"frame"
    assert z.backend().name == "dynlink"
    assert calls == [("load", "zstd"), ("compress", b"x", 7)]
    s = _load_guest_module("sqlite", None)
    assert s._wit is None


# --- sqlite: the typed interface ------------------------------------------------------


def test_sqlite_typed_interface_errors_and_lifetimes(dbdir: Path) -> None:
    inst = Instance("sqlite", dbdir)
    conn = inst("[static]connection.open", ":memory:")
    assert inst("[method]connection.execute", conn, "create table t(a integer primary key, b text unique)") is None
    err = inst("[method]connection.prepare", conn, "selec 1")
    assert err.code == 1 and "syntax error" in err.message
    err = inst("[method]connection.prepare", conn, "select 1; select 2")
    assert err.code == 21 and "one statement" in err.message
    ins = inst("[method]connection.prepare", conn, "insert into t(b) values (?)")
    assert inst("[method]statement.parameter-names", ins) == [None]
    assert inst("[method]statement.execute-many", ins, [["x"], ["y"]]) == 2
    ok, e = _unwrap(inst("[method]statement.execute-many", ins, [["x"]]))
    assert not ok and e.code == 2067 and "UNIQUE" in e.message  # SQLITE_CONSTRAINT_UNIQUE
    ok, e = _unwrap(inst("[method]statement.run", ins, [], 1))
    assert not ok and e.code == 21 and "Incorrect number of bindings" in e.message

    sel = inst("[method]connection.prepare", conn, "select a, b from t order by a")
    assert inst("[method]statement.columns", sel) == ["a", "b"]
    assert inst("[method]statement.readonly", sel) is True
    ok, batch = _unwrap(inst("[method]statement.step-many", sel, 1))
    assert ok and batch.rows == [[1, "x"]] and batch.done is False
    assert inst("[method]statement.step", sel) == [2, "y"]
    assert inst("[method]statement.step", sel) is None

    inst("[method]statement.finalize", sel)
    ok, e = _unwrap(inst("[method]statement.step-many", sel, 10))
    assert not ok and e.code == 21 and "finalized statement" in e.message
    inst.drop(sel)

    # Close with a statement still alive; then drop them in the "wrong" order.
    assert inst("[method]connection.close", conn) is None
    ok, e = _unwrap(inst("[method]statement.run", ins, ["z"], 1))
    assert not ok and e.code == 21 and "closed database" in e.message
    e = inst("[method]connection.prepare", conn, "select 1")
    assert e.code == 21
    inst.drop(conn)
    inst.drop(ins)


def test_sqlite_open_failure_is_cantopen(dbdir: Path) -> None:
    inst = Instance("sqlite", dbdir)
    e = inst("[static]connection.open", "/nowhere/x.db")  # not under a preopen
    assert isinstance(e, wc.Record) and e.code & 0xFF == 14, vars(e)


# --- sqlite: the guest's DB-API module against CPython's sqlite3 -----------------------

_value = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
    st.binary(max_size=20),
)


def _both(gsqlite: types.ModuleType, dbdir: Path, name: str = "t.db") -> tuple[Any, Any]:
    return gsqlite.connect(f"/data/{name}"), sqlite3.connect(str(dbdir / f"ref-{name}"))


@SLOW
@given(rows=st.lists(st.tuples(_value, _value), max_size=15))
def test_sqlite_roundtrips_typed_values_like_sqlite3(gsqlite: types.ModuleType, rows: list) -> None:
    ours, ref = gsqlite.connect(":memory:"), sqlite3.connect(":memory:")
    for conn in (ours, ref):
        conn.execute("create table t(x, y)")
        conn.executemany("insert into t values (?, ?)", rows)
    q = "select x, y, typeof(x), typeof(y) from t order by rowid"
    assert ours.execute(q).fetchall() == ref.execute(q).fetchall()
    ours.close()


_queries = [
    ("select count(*), sum(n), min(n), max(n), avg(n), total(n) from t", ()),
    ("select g, count(*), group_concat(s, ',') from t group by g order by g", ()),
    ("select n, s from t where n > ? and g = ? order by n", (10, 2)),
    ("select n, s from t where g = :g and n < :n order by n desc", {"g": 1, "n": 50}),
    ("select s || '!' as shout, n * 1.5 from t where n % 7 = 0 order by n", ()),
    ("select hex(zeroblob(2)), length(zeroblob(3)), abs(-4), round(2.567, 1), upper('aé')", ()),
    ("select json_object('n', n) from t where n < 3 order by n", ()),
    ("select n from t order by n limit 5 offset 90", ()),
]


@pytest.mark.parametrize("sql,params", _queries)
def test_sqlite_queries_match_sqlite3(gsqlite: types.ModuleType, dbdir: Path, sql: str, params: Any) -> None:
    ours, ref = _both(gsqlite, dbdir)
    for conn in (ours, ref):
        conn.execute("create table t(n integer, s text, g integer)")
        conn.executemany("insert into t values (?, ?, ?)", [(i, f"s{i}", i % 3) for i in range(100)])
        conn.commit()
    a, b = ours.execute(sql, params), ref.execute(sql, params)
    assert a.description == b.description
    assert a.fetchall() == b.fetchall()
    ours.close()


def test_sqlite_cursor_api(gsqlite: types.ModuleType, dbdir: Path) -> None:
    ours, ref = _both(gsqlite, dbdir)
    for conn in (ours, ref):
        conn.execute("create table t(n integer primary key, s text)")
    results = []
    for conn in (ours, ref):
        cur = conn.cursor()
        cur.executemany("insert into t(s) values (?)", ([f"v{i}"] for i in range(2500)))  # a generator
        r = [cur.rowcount, cur.lastrowid]
        cur.execute("update t set s = s || '.' where n <= ?", (10,))
        r += [cur.rowcount, conn.in_transaction]
        conn.commit()
        r.append(conn.in_transaction)
        cur.execute("insert into t(s) values ('last')")
        r += [cur.lastrowid, cur.rowcount, conn.total_changes]
        cur.execute("select n, s from t order by n")
        cur.arraysize = 3
        r += [cur.fetchone(), cur.fetchmany(), cur.fetchmany(2), len(cur.fetchall()), cur.fetchone()]
        cur.execute("select s from t where n = 2")
        r.append(list(cur))
        cur.execute("create table u(x)")
        r += [cur.rowcount, cur.description]
        conn.row_factory = type(conn).__module__.startswith("sqlite3") and sqlite3.Row or gsqlite.Row
        row = conn.execute("select n as Num, s from t where n = 1").fetchone()
        r += [row["num"], row["S"], row.keys(), tuple(row)]
        results.append(r)
    assert results[0] == results[1]
    ours.close()


def test_sqlite_transactions_and_context_manager(gsqlite: types.ModuleType, dbdir: Path) -> None:
    conn = gsqlite.connect("/data/tx.db")
    conn.execute("create table t(x)")
    conn.execute("insert into t values (1)")
    assert conn.in_transaction  # implicit BEGIN before DML, as in sqlite3
    conn.rollback()
    assert conn.execute("select count(*) from t").fetchone() == (0,)
    with conn:
        conn.execute("insert into t values (2)")
    assert not conn.in_transaction
    with pytest.raises(ZeroDivisionError):
        with conn:
            conn.execute("insert into t values (3)")
            1 / 0  # noqa: B018  (the exception the block must roll back on)
    assert conn.execute("select x from t").fetchall() == [(2,)]
    conn.isolation_level = None  # autocommit
    conn.execute("insert into t values (4)")
    assert not conn.in_transaction
    conn.executescript("begin; insert into t values (5); insert into t values (6); commit;")
    assert conn.execute("select count(*) from t").fetchone() == (4,)
    conn.close()


def test_sqlite_database_persists_across_instances_and_to_cpython(dbdir: Path) -> None:
    first = _load_guest_module("sqlite", _sqlite_bindings(Instance("sqlite", dbdir)))
    with first.connect("/data/app.db") as conn:
        conn.execute("create table kv(k text primary key, v blob, n real)")
        conn.executemany("insert into kv values (?, ?, ?)", [(f"k{i}", bytes([i]) * i, i / 3) for i in range(50)])
    conn.close()

    # A second run (a new instance) reads what the first wrote ...
    second = _load_guest_module("sqlite", _sqlite_bindings(Instance("sqlite", dbdir)))
    conn = second.connect("/data/app.db")
    ours = conn.execute("select * from kv order by k").fetchall()
    # ... and so does CPython's sqlite3 on the host, identically.
    ref = sqlite3.connect(str(dbdir / "app.db"))
    assert ours == ref.execute("select * from kv order by k").fetchall()
    assert len(ours) == 50
    conn.close()
    # The other way round: CPython writes, the next connection reads. (Not
    # while one is open: the cap holds files in exclusive locking mode, so it
    # keeps its cache and does not see other writers; see sqlite.wit.)
    ref.execute("insert into kv values ('host', x'ff', 1.25)")
    ref.commit()
    ref.close()
    conn = second.connect("/data/app.db")
    assert conn.execute("select v, n from kv where k = 'host'").fetchone() == (b"\xff", 1.25)
    assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    conn.close()
    assert not (dbdir / "app.db-journal").exists()


def test_sqlite_errors_match_sqlite3_classes(gsqlite: types.ModuleType, dbdir: Path) -> None:
    ours, ref = _both(gsqlite, dbdir)
    for conn in (ours, ref):
        conn.execute("create table t(k integer primary key, v text not null unique)")
        conn.execute("create table s(n integer) strict")
        conn.execute("insert into t values (1, 'a')")

    def outcome(mod: Any, conn: Any, sql: str, params: Any = ()) -> tuple:
        try:
            conn.execute(sql, params)
        except mod.Error as exc:
            base = next(c.__name__ for c in type(exc).__mro__ if c.__module__ == mod.__name__)
            return base, getattr(exc, "sqlite_errorcode", None), getattr(exc, "sqlite_errorname", None)
        return ("ok",)

    cases = [
        ("selec 1", ()),                                   # syntax error
        ("select nope from t", ()),                        # no such column
        ("insert into t values (2, 'a')", ()),             # UNIQUE
        ("insert into t values (1, 'b')", ()),             # PRIMARY KEY
        ("insert into t values (3, NULL)", ()),            # NOT NULL
        ("insert into s values ('not a number')", ()),     # STRICT datatype
        ("select ?", (1, 2)),                              # wrong number of bindings
        ("select 1; select 2", ()),                        # two statements
        ("select :a", {"b": 1}),                           # missing named parameter
        ("select ?", ([1],)),                              # unsupported type
    ]
    for sql, params in cases:
        got = outcome(gsqlite, ours, sql, params)
        want = outcome(sqlite3, ref, sql, params)
        if len(want) == 3 and want[2] == "unknown":
            # The host's sqlite3 may predate the name (3.11 lacks the newer
            # extended codes); the class and code must still agree.
            got, want = got[:2], want[:2]
        assert got == want, (sql, got, want)

    with pytest.raises(OverflowError):
        ours.execute("select ?", (2**63,))
    with pytest.raises(gsqlite.ProgrammingError, match="executemany"):
        ours.executemany("select ?", [(1,), (2,)])

    # Text that is not UTF-8 (stored by someone else) is an error, not garbage.
    ours.execute("insert into t values (9, cast(x'ff00fe' as text))")
    with pytest.raises(gsqlite.OperationalError, match="UTF-8"):
        ours.execute("select v from t where k = 9").fetchall()

    cur = ours.cursor()
    cur.close()
    with pytest.raises(gsqlite.ProgrammingError, match="closed cursor"):
        cur.execute("select 1")
    ours.close()
    with pytest.raises(gsqlite.ProgrammingError, match="closed database"):
        ours.execute("select 1")
    ours.close()  # closing twice is fine


def test_sqlite_corrupt_file_is_database_error(gsqlite: types.ModuleType, dbdir: Path) -> None:
    (dbdir / "junk.db").write_bytes(b"this is not a database" * 100)
    conn = gsqlite.connect("/data/junk.db")
    with pytest.raises(gsqlite.DatabaseError) as info:
        conn.execute("select * from sqlite_master")
    assert info.value.sqlite_errorname == "SQLITE_NOTADB"


def test_sqlite_float_edge_values(gsqlite: types.ModuleType) -> None:
    conn = gsqlite.connect(":memory:")
    values = [0.0, -0.0, 1e308, -1e-308, math.inf, -math.inf, 5e-324]
    got = [conn.execute("select ?", (v,)).fetchone()[0] for v in values]
    assert got == values
    assert conn.execute("select ?", (math.nan,)).fetchone() == (None,)  # SQLite stores NaN as NULL


# --- composition: the caps plugged into a componentize-py guest with `wac plug` --------

_APP_WIT = """
package pylon-test:embedded-app;
world app {
  import pylon:crc32c/crc32c@0.1.0;
  import pylon:zstd/zstd@0.1.0;
  import pylon:sqlite/sqlite@0.1.0;
  export run: func() -> string;
}
"""

# Runs inside the composed component: the guest modules over the plugged caps.
_APP_PY = '''
import json, traceback
import wit_world
from wit_world.imports import crc32c
from pylon_guest import sqlite, zstd


def checks():
    out = {"backends": [sqlite.backend().name, zstd.backend().name]}
    out["crc"] = crc32c.update(0, b"123456789")
    data = b"embedded " * 10000
    frame = zstd.compress(data, 3)
    out["zstd_roundtrip"] = zstd.decompress(frame) == data
    try:
        zstd.decompress(frame, max_output=10)
    except zstd.OutputTooLargeError as exc:
        out["zstd_limit"] = exc.limit
    try:
        zstd.decompress(b"nope")
    except zstd.CorruptFrameError:
        out["zstd_corrupt"] = True
    with sqlite.connect("/data/guest.db") as conn:
        conn.execute("create table t(k integer primary key, v text, b blob)")
        conn.executemany("insert into t(v, b) values (?, ?)", [(f"v{i}", bytes([i % 256])) for i in range(1000)])
    out["rows"] = conn.execute("select count(*), sum(k), max(v) from t").fetchone()
    try:
        conn.execute("insert into t values (1, 'dup', null)")
    except sqlite.IntegrityError as exc:
        out["integrity"] = exc.sqlite_errorname
    conn.close()
    return out


class WitWorld(wit_world.WitWorld):
    def run(self) -> str:
        try:
            return json.dumps(checks())
        except Exception:
            return "ERROR " + traceback.format_exc()
'''


def test_wac_plug_composes_the_caps_into_a_componentize_py_guest(tmp_path: Path) -> None:
    (tmp_path / "wit" / "deps").mkdir(parents=True)
    for name, cap in CAPS.items():
        (tmp_path / "wit" / "deps" / f"{name}.wit").write_text(cap.wit.read_text())
    (tmp_path / "wit" / "app.wit").write_text(_APP_WIT)
    app = tmp_path / "app"
    (app / "pylon_guest").mkdir(parents=True)
    (app / "pylon_guest" / "__init__.py").write_text("")
    for module in ("sqlite", "zstd"):
        (app / "pylon_guest" / f"{module}.py").write_text((GUEST / f"{module}.py").read_text())
    (app / "app.py").write_text(_APP_PY)
    guest = tmp_path / "guest.wasm"
    toolchain.run([toolchain.componentize_py(), "-d", str(tmp_path / "wit"), "-w", "app", "componentize",
                   "-p", str(app), "app", "-o", str(guest)], what="componentize-py")

    composed = tmp_path / "composed.wasm"
    plugs = [arg for name in sorted(CAPS) for arg in ("--plug", str(build_embedded_cap(name)))]
    toolchain.run([toolchain.cargo_tool("wac"), "plug", str(guest), *plugs, "-o", str(composed)], what="wac plug")
    wit = toolchain.run([toolchain.wasm_tools(), "component", "wit", str(composed)], what="wit").stdout
    assert "import pylon:" not in wit  # every cap import is satisfied inside

    data = tmp_path / "data"
    data.mkdir()
    linker = wc.Linker(_ENGINE)
    linker.add_wasip2()
    store = wasmtime.Store(_ENGINE)
    cfg = wasmtime.WasiConfig()
    cfg.inherit_stderr()
    cfg.preopen_dir(str(data), "/data")
    store.set_wasi(cfg)
    inst = linker.instantiate(store, wc.Component.from_file(_ENGINE, str(composed)))
    run = inst.get_func(store, "run")
    reply = run(store)
    run.post_return(store)
    assert not reply.startswith("ERROR"), reply
    import json

    got = json.loads(reply)
    assert got == {
        "backends": ["embedded", "embedded"],
        "crc": 0xE3069283,
        "zstd_roundtrip": True,
        "zstd_limit": 10,
        "zstd_corrupt": True,
        "rows": [1000, 500500, "v999"],
        "integrity": "SQLITE_CONSTRAINT_PRIMARYKEY",
    }
    # The database the guest wrote, read by the host's sqlite3.
    with sqlite3.connect(str(data / "guest.db")) as ref:
        assert ref.execute("select count(*), min(v) from t").fetchone() == (1000, "v0")
