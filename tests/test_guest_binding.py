"""Guest bindings: C extension modules inside pylon.wasm that call a typed
import directly (pylon/build/guest_binding.py, docs/embedded.md).

Two are built: crc32c's (``caps/crc32c/guest_binding.c``, in a guest that
embeds crc32c) and compose:dynlink's ``instance.invoke``
(``guest/native/_dynlink_binding.c``, in every guest). Each must give what
componentize-py's generic import path gives, which stays in the guest and
is what these tests compare against: the real guest, real caps, real
wasmtime.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import textwrap
from pathlib import Path

import crc32c as reference
import pytest

from conftest import REPO, Pylon, lean_dynlink_plan
from pylon import paths
from pylon.build import guest_binding, manifest
from pylon.errors import BuildError


def run_ok(pylon: Pylon, code: str, *args: str, memory_mb: int = 256) -> str:
    result = pylon.composectl("run", "--memory-mb", str(memory_mb), "-c", textwrap.dedent(code), *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_embedded_crc32c_is_the_c_binding(pylon: Pylon) -> None:
    out = run_ok(pylon, """
        import crc32c, _crc32c_binding
        print(crc32c.backend(), crc32c.crc32c is _crc32c_binding.crc32c, type(crc32c.crc32c).__name__)
    """)
    assert out.split() == ["embedded", "True", "builtin_function_or_method"]


def test_crc32c_binding_agrees_with_the_generic_import_and_the_reference(pylon: Pylon, tmp_path: Path) -> None:
    rng = random.Random(7)
    cases = [(rng.randbytes(size), rng.randrange(1 << 32) if i % 2 else 0)
             for i, size in enumerate([0, 1, 3, 8, 9, 15, 16, 17, 255, 4096, 65537, 1 << 20])]
    for i, (blob, _) in enumerate(cases):
        (tmp_path / f"b{i}").write_bytes(blob)
    (tmp_path / "crcs.json").write_text(json.dumps([crc for _, crc in cases]))
    script = tmp_path / "agree.py"
    script.write_text(textwrap.dedent("""
        import json, sys, crc32c
        folder = sys.argv[1]
        crcs = json.load(open(folder + "/crcs.json"))
        for i, crc in enumerate(crcs):
            data = open(f"{folder}/b{i}", "rb").read()
            generic = crc32c._wit.update(crc, data)
            odd = b"x" + data + b"y"
            shapes = [
                crc32c.crc32c(data, crc),
                crc32c.crc32c(data, crc=crc),
                crc32c.crc32c(crc=crc, data=data),
                crc32c.crc32c(bytearray(data), crc),
                crc32c.crc32c(memoryview(odd)[1:-1], crc),      # contiguous, at an odd address
                crc32c.crc32c(memoryview(data + data)[::2], crc) if data else generic,  # strided
            ]
            strided = crc32c._wit.update(crc, bytes(memoryview(data + data)[::2])) if data else generic
            print(generic, *shapes[:5], shapes[5] == strided)
    """))
    result = pylon.composectl("run", "--dir", f"{tmp_path}:ro", str(script), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    for line, (blob, crc) in zip(result.stdout.splitlines(), cases, strict=True):
        *values, strided_ok = line.split()
        assert {int(v) for v in values} == {reference.crc32c(blob, crc)}, line
        assert strided_ok == "True"


def test_crc32c_binding_raises_where_the_generic_path_aborted_the_guest(pylon: Pylon) -> None:
    # componentize-py's generic path aborts the whole guest on a negative
    # crc (a Rust panic in its runtime); the binding raises, as Python would.
    out = run_ok(pylon, """
        import crc32c
        for call in (lambda: crc32c.crc32c(b"", -1), lambda: crc32c.crc32c(b"", 1 << 32),
                     lambda: crc32c.crc32c("text"), lambda: crc32c.crc32c(None), lambda: crc32c.crc32c(b"", "0"),
                     lambda: crc32c.crc32c(), lambda: crc32c.crc32c(b"", 0, 0), lambda: crc32c.crc32c(b"", seed=1),
                     lambda: crc32c.crc32c(b"", data=b"")):
            try:
                call()
                print("no error")
            except (TypeError, OverflowError) as exc:
                print(type(exc).__name__)
        print(crc32c.crc32c(b"123456789"))
    """)
    assert out.split() == ["OverflowError", "OverflowError", "TypeError", "TypeError", "TypeError",
                           "TypeError", "TypeError", "TypeError", "TypeError", str(0xE3069283)]


def test_dynlink_invoke_goes_through_the_c_binding_and_agrees(pylon: Pylon) -> None:
    out = run_ok(pylon, """
        import functools, random
        from pylon_guest import dynlink
        import _dynlink_binding
        cap = dynlink.load("crc32c")
        assert isinstance(cap.invoke, functools.partial) and cap.invoke.func is _dynlink_binding.invoke
        generic = cap._instance.invoke
        rng = random.Random(3)
        for size in (0, 1, 9, 4096, 1 << 20):
            data = rng.randbytes(size)
            want = generic("crc32c", data)
            assert cap.invoke("crc32c", data) == want
            assert cap.invoke("crc32c", bytearray(data)) == want
            assert cap.invoke("crc32c", memoryview(b"_" + data)[1:]) == want
        assert cap.invoke("crc32c", memoryview(b"1a2b3c4d5e6f7g8h9")[::2]) == generic("crc32c", b"123456789")
        assert cap.invoke("crc32c") == generic("crc32c", b"")
        import cbor2
        reply = cap.invoke("crc32c-update", cbor2.dumps([0, b"123456789"]))
        print(reply == cap.invoke("crc32c", b"123456789") == (0xE3069283).to_bytes(4, "little"))
    """)
    assert out == "True\n"


def test_dynlink_binding_raises_each_error_class(pylon: Pylon) -> None:
    # The WIT error cases reach the script as the same classes, with the
    # host's message, as through componentize-py's generic path.
    out = run_ok(pylon, """
        from componentize_py_types import Err
        from pylon_guest import dynlink
        cap = dynlink.load("crc32c")
        for method, payload in (("no-such-method", b"x"), ("crc32c-update", b"\\xff"), ("é", b"")):
            try:
                cap.invoke(method, payload)
            except dynlink.DynlinkError as exc:
                fast = (type(exc).__name__, str(exc))
            try:
                cap._instance.invoke(method, payload)
            except Err as err:
                slow = dynlink._translate(err)
            print(fast[0], fast == (type(slow).__name__, str(slow)))
        try:
            cap.invoke(1, b"")
        except TypeError:
            print("TypeError")
    """)
    assert out.split() == ["BadMethod", "True", "BadPayload", "True", "BadMethod", "True", "TypeError"]


@pytest.mark.parametrize("forged", ["import _dynlink_binding\n_dynlink_binding.invoke(9999, 'crc32c', b'')",
                                    "import _sqlite_binding\n_sqlite_binding.run(9999, (1,), 1)",
                                    "import _sqlite_binding\n_sqlite_binding.run_packed(-1, '', 1)"])
def test_a_forged_handle_kills_only_that_run(pylon: Pylon, forged: str) -> None:
    # The handle is checked by the component model's handle table: a script
    # that forges one traps its own guest; the host and the next run are fine.
    bad = pylon.run_code(forged)
    assert bad.returncode != 0
    assert "trapped" in bad.stderr
    assert run_ok(pylon, "import crc32c; print(crc32c.crc32c(b'123456789'))") == f"{0xE3069283}\n"


@pytest.fixture(scope="module")
def lean_plan(pylon: Pylon, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plan running the lean guest (no embedded cap) with crc32c by dynlink."""
    return lean_dynlink_plan(pylon, tmp_path_factory.mktemp("lean"), "crc32c")


def test_a_guest_without_crc32c_embedded_has_no_crc32c_binding(pylon: Pylon, lean_plan: Path) -> None:
    out = pylon.run_code(textwrap.dedent("""
        import importlib.util, crc32c
        print(crc32c.backend(), importlib.util.find_spec("_crc32c_binding") is None,
              importlib.util.find_spec("_dynlink_binding") is not None, crc32c.crc32c(b"123456789"))
    """), plan=lean_plan)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["dynlink", "True", "True", str(0xE3069283)]


# -- the build ------------------------------------------------------------------


def test_binding_build_is_cached_and_names_its_module() -> None:
    cap = manifest.embeddable()["crc32c"]
    first = guest_binding.build_guest_binding(cap)
    assert sorted(p.name for p in first.iterdir()) == ["_crc32c_binding.cpython-314-wasm32-wasi.so"]
    assert guest_binding.build_guest_binding(cap) == first
    assert sorted(p.name for p in guest_binding.build_dynlink_binding().iterdir()) == [
        "_dynlink_binding.cpython-314-wasm32-wasi.so"]


def test_binding_that_does_not_compile_is_a_build_error_and_leaves_nothing(tmp_path: Path) -> None:
    # The crc32c cap as found in caps/, read from a copy whose binding is broken.
    cap_dir = tmp_path / "crc32c"
    shutil.copytree(REPO / "caps" / "crc32c", cap_dir)
    (cap_dir / "guest_binding.c").write_text("this is not C\n")
    cap = dataclasses.replace(manifest.embeddable()["crc32c"], dir=cap_dir)
    builds = paths.build_root()
    before = sorted(builds.glob("guest-binding-crc32c-*"))
    with pytest.raises(BuildError, match="guest_binding.c"):
        guest_binding.build_guest_binding(cap)
    assert sorted(builds.glob("guest-binding-crc32c-*")) == before


def test_binding_source_outside_the_cap_is_refused(tmp_path: Path) -> None:
    cap = manifest.embeddable()["crc32c"]
    face = cap.embedded
    assert face is not None and face.binding is not None
    outside = dataclasses.replace(face, binding=dataclasses.replace(face.binding, sources=("../zstd/embedded.c",)))
    with pytest.raises(BuildError, match=r"\[embedded.binding\].sources\[0\]"):
        guest_binding.build_guest_binding(dataclasses.replace(cap, embedded=outside))


# -- sqlite's run-packed ---------------------------------------------------------


def test_sqlite_statements_run_through_the_c_binding_and_keep_no_memory(pylon: Pylon) -> None:
    # Each execute's reply is written by the host into a block from the
    # binding's cabi_realloc; the binding frees it. 20,000 executes that each
    # return ~40 KiB would be ~800 MiB kept; the run has 128 MiB.
    out = run_ok(pylon, """
        import functools, gc
        from pylon_guest import sqlite
        import _sqlite_binding
        conn = sqlite.connect(":memory:")
        conn.execute("create table t(k integer primary key, v blob)")
        conn.executemany("insert into t values (?, ?)", [(i, bytes(640)) for i in range(64)])
        cur = conn.execute("select k, v from t where k >= ?", (0,))
        stmt = conn._cache.get("select k, v from t where k >= ?")
        print(isinstance(stmt.run_packed, functools.partial) and stmt.run_packed.func is _sqlite_binding.run_packed)
        assert len(cur.fetchall()) == 64
        for i in range(20_000):
            rows = conn.execute("select k, v from t where k >= ?", (i % 8,)).fetchall()
            assert len(rows) == 64 - i % 8 and rows[0][1] == bytes(640)
        print(conn.execute("select count(*), sum(k) from t").fetchone())
    """, memory_mb=128)
    assert out.split("\n")[:2] == ["True", "(64, 2016)"]


def test_sqlite_binding_gives_what_the_generic_path_gives(pylon: Pylon) -> None:
    out = run_ok(pylon, """
        import marshal
        from pylon_guest import sqlite
        conn = sqlite.connect(":memory:")
        conn.execute("create table t(a, b)")
        values = [None, 0, -1, 2**62, -2**63, 1.5, float("inf"), "", "é€𝄞", b"", b"\\x00\\xff" * 300]
        conn.executemany("insert into t values (?, ?)", [(v, i) for i, v in enumerate(values)])
        stmt = conn._statement("select a, b from t where b >= ? order by b")
        for start in (0, 5, 11):
            packed = marshal.dumps((start,), 2).decode("latin-1")
            fast = stmt.run_packed(packed, 64)
            stmt.h.reset()
            slow = stmt.h.run_packed(packed, 64)
            stmt.h.reset()
            print(fast == slow, marshal.loads(fast)[0] == [(v, i) for i, v in enumerate(values)][start:])
        # run(): parameters marshalled and sent as Latin-1 text from C. Every
        # byte value, text past the 256-byte stack buffer, and each type.
        echo = conn._statement("select ?, ?, ?")
        for params in [(bytes(range(256)), "ÿ" * 300, 2**63 - 1), [None, 1.25, "é"], (b"", "", -2**63)]:
            fast = echo.run_params(params, 64)
            slow = echo._run_params(params, 64)
            print(fast == slow, fast[0] == [tuple(params)])
        class Opaque:
            pass
        try:
            echo.run_params((Opaque(), 1, 2), 64)
        except ValueError:
            print("ValueError")
        try:
            conn.execute("select ?, ?, ?", (Opaque(), 1, 2))
        except sqlite.ProgrammingError as exc:
            print("ProgrammingError")
        try:
            conn.execute("select * from nowhere")
        except sqlite.OperationalError as exc:
            print("OperationalError", "nowhere" in str(exc))
    """)
    assert out.split() == ["True"] * 12 + ["ValueError", "ProgrammingError", "OperationalError", "True"]


def test_sqlite_over_dynlink_keeps_the_proxys_method(pylon: Pylon, sqlite_dynlink_plan: Path) -> None:
    out = pylon.run_code(textwrap.dedent("""
        from pylon_guest import sqlite
        conn = sqlite.connect(":memory:")
        print(sqlite.backend().name, conn.execute("select 40 + ?", (2,)).fetchone()[0])
        stmt = conn._cache.get("select 40 + ?")
        print(stmt.run_packed == stmt.h.run_packed)
    """), plan=sqlite_dynlink_plan)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["dynlink", "42", "True"]


def test_sqlite_binding_packs_and_unpacks_byte_for_byte_as_marshal(pylon: Pylon) -> None:
    # The binding writes parameters and reads replies itself for the common
    # types and hands everything else to marshal: either way the bytes and
    # the objects must be exactly marshal's (version 2), errors included.
    out = run_ok(pylon, """
        import enum, marshal, math, random
        import _sqlite_binding as b

        class Small(enum.IntEnum):
            ONE = 1

        ints = [0, 1, -1, 2**31 - 1, -2**31, 2**31, -2**31 - 1, 2**45, 2**60, -2**60, 2**62, 2**63 - 1,
                -2**63 + 1, -2**63, 2**63, -2**63 - 1, 2**64, 2**100, -2**100]
        floats = [0.0, -0.0, 1.5, -2.25e300, float("inf"), float("-inf"), float("nan"), 5e-324]
        texts = ["", "a", "é", "€", "𝄞", "x" * 1000 + "é", "\\ud800", "a\\udfffb", "\\x00"]
        blobs = [b"", bytes(range(256)), b"\\x80" * 700, bytearray(b"ba"), memoryview(b"mv")]
        others = [None, True, False, Small.ONE, {"k": 1}, {1, 2}, 1j, object(), ()]
        nested = [(1, (2, [3, (4,)])), [[[[[[[[[[1]]]]]]]]]], ([],), ((),)]
        rng = random.Random(5)
        atoms = ints + floats + texts + blobs + others
        cases = [tuple(rng.sample(atoms, rng.randrange(0, 6))) for _ in range(400)]
        cases += [[a] for a in atoms] + [tuple(atoms)] + nested + [a for a in atoms]

        def outcome(f, *args):
            try:
                return ("ok", f(*args))
            except Exception as exc:
                return ("error", type(exc).__name__)

        bad = 0
        for case in cases:
            want = outcome(marshal.dumps, case, 2)
            got = outcome(b.pack, case)
            if want != got:
                bad += 1
                print("pack differs:", repr(case)[:200], want, got)
            if want[0] == "ok":
                again = outcome(b.unpack, want[1])
                expect = outcome(marshal.loads, want[1])
                if repr(again) != repr(expect):
                    bad += 1
                    print("unpack differs:", repr(case)[:200])
        # Damaged or unexpected replies: whatever marshal.loads says.
        samples = [marshal.dumps(c, 2) for c in cases[:60] if outcome(marshal.dumps, c, 2)[0] == "ok"]
        damaged = [b"", b"(", b"i\\x01", b"l\\x01\\x00\\x00\\x00\\x00\\x00", b"l\\x01\\x00\\x00\\x00\\xff\\xff",
                   b"(\\xff\\xff\\xff\\x7fN", b"u\\x02\\x00\\x00\\x00\\xff\\xfe", b"{0", b"\\x00"]
        for blob in samples:
            for _ in range(20):
                cut = bytearray(blob[: rng.randrange(0, len(blob) + 1)])
                if cut and rng.random() < 0.5:
                    cut[rng.randrange(len(cut))] = rng.randrange(256)
                damaged.append(bytes(cut))
        for blob in damaged:
            want, got = outcome(marshal.loads, blob), outcome(b.unpack, blob)
            if repr(want) != repr(got):
                bad += 1
                print("damaged differs:", blob[:40], want, got)
        print("cases", len(cases), "damaged", len(damaged), "bad", bad)
    """)
    assert out.splitlines()[-1].endswith("bad 0"), out[-3000:]


def test_empty_error_messages_are_not_freed_as_blocks() -> None:
    # The host places an empty string at the non-pointer cabi_realloc returns
    # for zero bytes; the binding freed it and the guest trapped in free().
    import pylon

    class Refuses:
        def empty(self) -> None:
            raise pylon.CapRefused("", kind="not-found")

    result = pylon.Sandbox(caps={"c": Refuses()}, tmp_mb=0).run(textwrap.dedent("""
        from pylon_guest import dynlink
        cap = dynlink.load("c")
        messages = set()
        for _ in range(3000):
            try:
                cap.call("empty")
            except dynlink.CapNotFound as exc:
                messages.add(str(exc))
        print(sorted(messages))
    """))
    assert result.exit_code == 0, result.stderr[-3000:]
    assert result.stdout == b"['']\n"


def test_sqlite_cursor_in_c_behaves_as_the_python_cursor_and_sqlite3(pylon: Pylon) -> None:
    # CursorCore.execute / fetchone (caps/sqlite/guest_binding.c) take the
    # common case from C and hand the rest to the Python cursor. The same
    # scenario (errors, pending rows, interleaved cursors, row factories,
    # closed cursors and connections) must read the same three ways.
    script = REPO / "tests" / "guest_scripts" / "sqlite_cursor_scenario.py"
    outs = {}
    for mode in ("builtin", "c", "python"):
        result = pylon.composectl("run", str(script), mode)
        assert result.returncode == 0, result.stderr[-3000:]
        outs[mode] = result.stdout.splitlines()
    assert outs["c"][:-3] == outs["python"][:-3] == outs["builtin"]
    assert len(outs["builtin"]) == 57
    assert outs["c"][-3:] == ["C route: True", "executes through Cursor._execute: 0", "collected: True"]
    assert outs["python"][-3:] == ["C route: True", "executes through Cursor._execute: 6", "collected: True"]


def test_zstd_binding_gives_what_the_generic_path_gives(pylon: Pylon) -> None:
    # caps/zstd/guest_binding.c: the host places each result inside the bytes
    # object returned. Same bytes, same exceptions and messages as the
    # generic import path (pylon_guest.zstd's dynlink-shaped route), for
    # every buffer shape, empty input and output, and each error case.
    out = run_ok(pylon, """
        import random
        import _zstd_binding
        from pylon_guest import zstd
        b = zstd.backend()
        print(b.name, b.binding is _zstd_binding)

        def generic(fn, *args):
            try:
                return b.call(fn, *args)
            except zstd.ZstdError as exc:
                return (type(exc).__name__, str(exc))

        def fast(fn, data, *args):
            try:
                return fn(data, *args)
            except zstd.ZstdError as exc:
                return (type(exc).__name__, str(exc))

        rng = random.Random(5)
        agree = []
        for size in (0, 1, 100, 4096, 70_000, 1 << 20):
            text = bytes(rng.choice(b"abcde fgh\\n") for _ in range(min(size, 5000))) * max(1, size // 5000)
            for level in (-5, 1, 3, 19):
                frame = zstd.compress(text, level)
                agree.append(frame == generic(b.api.compress, text, level))
                agree.append(zstd.decompress(frame) == text == generic(b.api.decompress, frame, 1 << 30))
            odd = b"x" + text + b"y"
            agree.append(zstd.compress(memoryview(odd)[1:-1], 3) == zstd.compress(bytearray(text), 3)
                         == generic(b.api.compress, text, 3))
            strided = memoryview(text + text)[::2]
            agree.append(zstd.compress(strided, 3) == generic(b.api.compress, bytes(strided), 3))
        print(all(agree), len(agree))
        frame = zstd.compress(b"z" * 5000, 3)
        cases = [(b"nope", 100), (frame[:-2], 1 << 20), (frame, 4999), (frame, 5000), (b"", 0),
                 (frame + frame[:9], 1 << 20)]
        for data, limit in cases:
            a = fast(_zstd_binding.decompress, data, limit)
            g = generic(b.api.decompress, data, limit)
            print(a == g, a if isinstance(a, tuple) else len(a))
        print(fast(_zstd_binding.compress, b"x", 1 << 20) == generic(b.api.compress, b"x", 1 << 20))
    """, memory_mb=512)
    lines = out.splitlines()
    assert lines[0] == "embedded True"
    assert lines[1] == "True 60"
    assert lines[2:] == [
        "True ('CorruptFrameError', 'corrupt zstd data: not a zstd frame (bad magic number or header)')",
        "True ('CorruptFrameError', 'corrupt zstd data: truncated zstd frame (input ended inside a frame)')",
        "True ('OutputTooLargeError', 'decompressed output would exceed the limit of 4999 bytes "
        "(pass a larger max_output if the data is trusted)')",
        "True 5000",
        "True 0",
        "True ('CorruptFrameError', 'corrupt zstd data: truncated zstd frame (input ended inside a frame)')",
        "True",
    ]


def test_zstd_binding_keeps_no_memory(pylon: Pylon) -> None:
    # Each result is a bytes object made by the binding's cabi_realloc, and an
    # error's message is placed in one too. 3,000 results of 256 KiB kept by
    # a reference too many would be ~750 MiB in a 128 MiB run.
    out = run_ok(pylon, """
        from pylon_guest import zstd
        data = bytes(range(256)) * 1024
        frame = zstd.compress(data, 1)
        for _ in range(3000):
            assert zstd.decompress(frame) == data
            try:
                zstd.decompress(frame, max_output=10)
            except zstd.OutputTooLargeError:
                pass
            try:
                zstd.decompress(frame[:-3])
            except zstd.CorruptFrameError:
                pass
        print("ok")
    """, memory_mb=128)
    assert out.strip() == "ok"


def test_sqlite_executemany_through_the_binding_keeps_no_memory(pylon: Pylon) -> None:
    # run_many packs each batch into a buffer of its own and frees it, and
    # frees the message of an error the host returns. 4,000 batches of ~41
    # KiB of packed rows would keep ~160 MiB in a 128 MiB run.
    out = run_ok(pylon, """
        import functools
        from pylon_guest import sqlite
        import _sqlite_binding
        conn = sqlite.connect(":memory:")
        conn.execute("create table t(k integer primary key, v blob)")
        rows = [(i, bytes(640)) for i in range(64)]
        stmt = conn._statement("insert or replace into t values (?, ?)")
        print(stmt.run_many.func is _sqlite_binding.run_many)
        for _ in range(4000):
            assert conn.executemany("insert or replace into t values (?, ?)", rows).rowcount == 64
            try:
                conn.executemany("insert into t values (?, ?)", rows[:1])
            except sqlite.IntegrityError:
                pass
        print(conn.execute("select count(*) from t").fetchone()[0])
    """, memory_mb=128)
    assert out.split() == ["True", "64"]


def test_sqlite_random_workloads_read_as_with_sqlite3(pylon: Pylon) -> None:
    # Seeded random sequences of DB-API calls (tests/guest_scripts/
    # sqlite_random_ops.py): inserts by position and by name, reads by
    # fetchone, fetchmany, fetchall and iteration, with and without Row, two
    # cursors interleaved, updates, deletes, executemany, commits, rollbacks
    # and failing calls. pylon_guest.sqlite must answer each as the guest's
    # own sqlite3 does. (This found a failed execute leaving the previous
    # statement's rows to fetch.)
    script = REPO / "tests" / "guest_scripts" / "sqlite_random_ops.py"
    seeds = [str(s) for s in range(1, 9)]
    outs = {}
    for module in ("builtin", "pylon"):
        result = pylon.composectl("run", str(script), module, *seeds)
        assert result.returncode == 0, result.stderr[-3000:]
        outs[module] = result.stdout.splitlines()
    assert len(outs["builtin"]) == 250 * len(seeds)
    for theirs, ours in zip(outs["builtin"], outs["pylon"], strict=True):
        assert ours == theirs
