"""The MicroPython static profile: build, run, GC soundness, error paths.

The exnref flavour runs on our engine (wasmtime-py until pylon._engine has
``run_core_p1``); the legacy flavour runs on Node.js, a registry runtime
without the component model (scripts/install-system-deps.sh installs it).
Builds are cached by source hash, so only the first run compiles (~40 s each).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pylon.paths
from pylon.build.micropython import build_micropython, load_static_cap
from pylon.errors import BuildError, CapError, EngineError
from pylon.static_runner import iwasm, node, run_static, script_invocation

crc32c_ref = pytest.importorskip("crc32c")

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


@pytest.fixture(scope="session")
def exnref_module() -> Path:
    return build_micropython(["crc32c"], "exnref")


@pytest.fixture(scope="session")
def legacy_module() -> Path:
    return build_micropython(["crc32c"], "legacy")


def run(module: Path, script: Path, *args: str, runtime: str = "engine", env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs a script in a child process so its stdout/stderr can be captured."""
    cmd = [PY, "-m", "pylon.static_runner", "--runtime", runtime]
    for k, v in (env or {}).items():
        cmd += ["--env", f"{k}={v}"]
    cmd += [str(module), str(script), *args]
    # The child imports the same pylon as this process (checkout or installed wheel).
    child_env = {**os.environ, "PYTHONPATH": str(Path(pylon.paths.__file__).resolve().parents[1])}
    child_env.pop("RUST_BACKTRACE", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------ checksums

CRC_SCRIPT = """
    import sys, crc32c
    # Every file named on the command line: whole-buffer checksum, then the
    # same data in two chained pieces (crc argument), one line each.
    for name in sys.argv[1:]:
        with open(name, "rb") as f:
            data = f.read()
        half = len(data) // 3
        chained = crc32c.crc32c(data[half:], crc32c.crc32c(data[:half]))
        print(name, crc32c.crc32c(data), chained)
    print("vectors", hex(crc32c.crc32c(b"123456789")), hex(crc32c.crc32c(bytes(32))),
          crc32c.crc32c(bytearray(b"abc")), crc32c.crc32c(memoryview(b"xabcx")[1:4]))
"""


def test_crc32c_matches_reference_on_random_data(exnref_module: Path, tmp_path: Path) -> None:
    script = write(tmp_path, "sums.py", CRC_SCRIPT)
    rng = random.Random(20261125)
    sizes = [0, 1, 7, 8, 9, 63, 64, 65, 1000, 4096 + 3, 100_000, 1 << 20]
    files = []
    for i, size in enumerate(sizes):
        f = tmp_path / f"data{i}.bin"
        f.write_bytes(rng.randbytes(size))
        files.append(f)
    result = run(exnref_module, script, *map(str, files))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(files) + 1
    for f, line in zip(files, lines[:len(files)], strict=True):
        name, whole, chained = line.split()
        expected = crc32c_ref.crc32c(f.read_bytes())
        assert name == str(f)
        assert int(whole) == expected, f"{f.stat().st_size} bytes"
        assert int(chained) == expected
    abc = crc32c_ref.crc32c(b"abc")
    assert lines[-1] == f"vectors 0xe3069283 0x8a9136aa {abc} {abc}"


def test_crc32c_rejects_non_buffers(exnref_module: Path, tmp_path: Path) -> None:
    script = write(tmp_path, "bad.py", """
        import crc32c
        try:
            crc32c.crc32c("text")
        except TypeError as e:
            print("TypeError")
    """)
    result = run(exnref_module, script)
    assert (result.returncode, result.stdout.strip()) == (0, "TypeError")


# ---------------------------------------------------------- scripts and I/O

def test_argv_streams_exit_status_and_sibling_imports(exnref_module: Path, tmp_path: Path) -> None:
    write(tmp_path, "helper.py", """
        def double(x):
            return 2 * x
    """)
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    write(pkg, "__init__.py", "NAME = 'pkg'\n")
    write(pkg, "sub.py", "VALUE = 5\n")
    script = write(tmp_path, "main.py", """
        import sys
        import helper
        import pkg.sub
        print("argv", sys.argv[1:])
        print(helper.double(21), pkg.NAME, pkg.sub.VALUE)
        print("to stderr", file=sys.stderr)
        sys.exit(int(sys.argv[1]))
    """)
    result = run(exnref_module, script, "7", "two words")
    assert result.returncode == 7, result.stderr
    assert result.stdout == "argv ['7', 'two words']\n42 pkg 5\n"
    assert result.stderr == "to stderr\n"


def test_exit_status_zero_and_sys_exit_message(exnref_module: Path, tmp_path: Path) -> None:
    ok = write(tmp_path, "ok.py", "print('fine')\n")
    assert run(exnref_module, ok).returncode == 0
    msg = write(tmp_path, "msg.py", "import sys\nsys.exit('bye')\n")
    result = run(exnref_module, msg)
    assert (result.returncode, result.stderr) == (1, "bye\n")


def test_syntax_error_is_a_traceback_and_exit_1(exnref_module: Path, tmp_path: Path) -> None:
    script = write(tmp_path, "broken.py", "x = 1\ndef f(:\n    pass\n")
    result = run(exnref_module, script)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "SyntaxError" in result.stderr
    assert str(script) in result.stderr and "line 2" in result.stderr


def test_uncaught_exception_is_a_traceback_and_exit_1(exnref_module: Path, tmp_path: Path) -> None:
    script = write(tmp_path, "boom.py", """
        def inner():
            raise ValueError("boom")
        def outer():
            inner()
        print("before")
        outer()
    """)
    result = run(exnref_module, script)
    assert result.returncode == 1
    assert result.stdout == "before\n"
    assert "Traceback (most recent call last):" in result.stderr
    assert "in inner" in result.stderr and "in outer" in result.stderr
    assert result.stderr.rstrip().endswith("ValueError: boom")


def test_missing_script_is_a_clear_error(exnref_module: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="no such script"):
        script_invocation(tmp_path / "nope.py")


# ----------------------------------------------------------------------- GC

HEAVY = """
    import gc
    def make(i):
        return {"i": i, "s": "x%d" % i, "l": [i, i * 2, (i, str(i))], "b": bytes([i & 255]) * 3}

    keep = []
    total = 0
    for r in range(60):
        batch = [make(r * 1000 + j) for j in range(1000)]
        keep.append(batch[r])
        total += sum(d["l"][1] for d in batch)
        junk = [str(k) * 10 for k in range(500)]
        del junk
        try:
            raise ValueError("e%d" % r)
        except ValueError as e:
            assert str(e) == "e%d" % r
    assert total == sum(2 * (r * 1000 + j) for r in range(60) for j in range(1000))
    for r, d in enumerate(keep):
        n = r * 1000 + r
        assert d["i"] == n and d["s"] == "x%d" % n and d["l"][2] == (n, str(n)), d
        assert d["b"] == bytes([n & 255]) * 3
    big = {}
    for i in range(5000):
        big["k%d" % i] = [i] * 3
    assert all(big["k%d" % i][2] == i for i in range(5000))
    s = sorted([(i * 7919) % 10007 for i in range(5000)], key=lambda x: -x)
    assert s == sorted(s, reverse=True) and len(s) == 5000
    # Non-local returns (wasm exceptions) must not leak the shadow stack.
    n = 0
    for i in range(100000):
        try:
            raise KeyError(i)
        except KeyError:
            n += 1
    assert n == 100000
    gc.collect()
    print("heavy ok", total)
"""


def test_heavy_allocation_survives_many_collections(exnref_module: Path, tmp_path: Path) -> None:
    # A 2 MiB heap against ~60 MB allocated: the GC runs dozens of times while
    # C frames hold fresh objects in wasm locals.
    script = write(tmp_path, "heavy.py", HEAVY)
    result = run(exnref_module, script, env={"PYLON_MP_HEAP": "2m"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("heavy ok ")


def test_deep_recursion_is_a_recursion_error(exnref_module: Path, tmp_path: Path) -> None:
    script = write(tmp_path, "deep.py", """
        def f(n):
            return f(n + 1)
        try:
            f(0)
        except RuntimeError as e:
            print(type(e).__name__)
    """)
    result = run(exnref_module, script)
    assert (result.returncode, result.stdout.strip()) == (0, "RuntimeError"), result.stderr


# ------------------------------------------------------------- EH flavours

def test_both_flavours_build_and_differ(exnref_module: Path, legacy_module: Path) -> None:
    assert exnref_module.read_bytes()[:4] == b"\0asm"
    assert legacy_module.read_bytes()[:4] == b"\0asm"
    assert exnref_module.read_bytes() != legacy_module.read_bytes()


def test_legacy_flavour_is_refused_by_wasmtime_with_a_hint(legacy_module: Path, tmp_path: Path) -> None:
    script = write(tmp_path, "ok.py", "print(1)\n")
    argv, preopens = script_invocation(script)
    with pytest.raises(EngineError, match="--eh exnref"):
        run_static(legacy_module, argv, (), preopens)


needs_node = pytest.mark.skipif(node() is None, reason="Node.js 18+ not installed "
                                "(scripts/install-system-deps.sh)")


@needs_node
def test_legacy_flavour_runs_on_node(legacy_module: Path, tmp_path: Path) -> None:
    script = write(tmp_path, "sums.py", CRC_SCRIPT)
    data = tmp_path / "d.bin"
    data.write_bytes(random.Random(7).randbytes(50_000))
    result = run(legacy_module, script, str(data), runtime="node")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0].split()
    assert int(first[1]) == int(first[2]) == crc32c_ref.crc32c(data.read_bytes())


@needs_node
def test_legacy_flavour_heavy_allocation_and_errors_on_node(legacy_module: Path, tmp_path: Path) -> None:
    heavy = write(tmp_path, "heavy.py", HEAVY)
    result = run(legacy_module, heavy, runtime="node", env={"PYLON_MP_HEAP": "2m"})
    assert result.returncode == 0, result.stderr
    boom = write(tmp_path, "boom.py", "import sys\nprint('x', file=sys.stderr)\nraise OSError(5)\n")
    result = run(legacy_module, boom, runtime="node")
    assert result.returncode == 1
    assert result.stderr.startswith("x\nTraceback") and "OSError: 5" in result.stderr


@needs_node
def test_exnref_flavour_does_not_load_on_node(exnref_module: Path, tmp_path: Path) -> None:
    script = write(tmp_path, "ok.py", "print(1)\n")
    result = run(exnref_module, script, runtime="node")
    assert result.returncode != 0 and "CompileError" in result.stderr


needs_iwasm = pytest.mark.skipif(iwasm() is None, reason="WAMR iwasm not built (optional: "
                                 "docs/micropython-static.md; PYLON_IWASM or PATH)")


@needs_iwasm
def test_legacy_flavour_runs_on_iwasm(legacy_module: Path, exnref_module: Path, tmp_path: Path) -> None:
    script = write(tmp_path, "sums.py", CRC_SCRIPT)
    data = tmp_path / "d.bin"
    data.write_bytes(random.Random(9).randbytes(20_000))
    result = run(legacy_module, script, str(data), runtime="iwasm")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0].split()
    assert int(first[1]) == crc32c_ref.crc32c(data.read_bytes())
    boom = write(tmp_path, "boom.py", "import sys\nsys.exit(3)\n")
    assert run(legacy_module, boom, runtime="iwasm").returncode == 3
    # WAMR rejects the exnref encoding outright.
    assert run(exnref_module, boom, runtime="iwasm").returncode != 0


# -------------------------------------------------------------- bad input

def test_unknown_cap() -> None:
    with pytest.raises(CapError, match="unknown cap 'nosuchcap'"):
        build_micropython(["nosuchcap"], "exnref")


def test_unknown_eh_flavour() -> None:
    with pytest.raises(BuildError, match="exnref, legacy"):
        build_micropython([], "wasm-eh-2")


def test_cap_without_static_manifest(tmp_path: Path) -> None:
    (tmp_path / "plain" / "src").mkdir(parents=True)
    (tmp_path / "plain" / "src" / "plain.c").write_text("int plain(void) { return 1; }\n")
    with pytest.raises(CapError, match=r"cap 'plain' has no static manifest: add a \[static\] table"):
        build_micropython(["plain"], "exnref", caps_dir=tmp_path)


def test_manifest_pointing_outside_the_cap(tmp_path: Path) -> None:
    cap = tmp_path / "sneaky"
    cap.mkdir()
    (cap / "cap.toml").write_text('[static]\nmodule = "sneaky"\nbinding = ["../../etc/passwd"]\n')
    with pytest.raises(CapError, match="leaves the cap's folder"):
        load_static_cap("sneaky", tmp_path)


def test_crc32c_manifest_is_declared_not_hard_coded() -> None:
    cap = load_static_cap("crc32c")
    assert cap.module == "crc32c"
    assert [p.name for p in cap.sources] == ["crc32c.c"]
    assert [p.name for p in cap.binding] == ["modcrc32c.c"]


def test_compile_error_in_a_cap_shows_the_compilers_message(tmp_path: Path) -> None:
    cap = tmp_path / "broken"
    (cap / "src").mkdir(parents=True)
    (cap / "src" / "broken.c").write_text("int broken(void) { return 1 }\n")  # missing ';'
    (cap / "mod.c").write_text(textwrap.dedent("""
        #include "py/obj.h"
        static const mp_rom_map_elem_t g[] = {
            { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_broken) },
        };
        static MP_DEFINE_CONST_DICT(gd, g);
        const mp_obj_module_t mp_module_broken = { .base = { &mp_type_module }, .globals = (mp_obj_dict_t *)&gd };
        MP_REGISTER_MODULE(MP_QSTR_broken, mp_module_broken);
    """))
    (cap / "cap.toml").write_text('[static]\nmodule = "broken"\nsources = ["src/broken.c"]\nbinding = ["mod.c"]\n')
    with pytest.raises(BuildError) as info:
        build_micropython(["broken"], "exnref", caps_dir=tmp_path)
    message = str(info.value)
    assert "compiling broken.c (cap broken)" in message
    assert "broken.c:1:" in message and "error:" in message and "';'" in message
