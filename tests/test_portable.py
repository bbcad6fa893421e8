"""The portable guest (docs/portable.md) on a host that is not Pylon's engine.

``composectl build --portable`` composes the router (caps/router) into the
stock guest; the result must import only ``wasi:*``, and run under
wasmtime-py with nothing but ``Linker.add_wasip2()``: its ``wasi:cli/run``
export takes argv, environment and cwd from WASI, routes
``pylon_guest.dynlink.load`` to the caps compiled into the router, and leaves with
the script's exit status through ``wasi:cli/exit.exit-with-code``. The
engine, meanwhile, still runs the same guest through ``pylon:guest/entry``.

Every run is the real component in real wasmtime (wasmtime-py 50), checked
against host-side implementations (the ``crc32c`` and ``zstandard`` PyPI
packages) where there is something to compute.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c as host_crc32c
import pytest
import wasmtime
import wasmtime.component as wc
import zstandard

from conftest import Pylon
from pylon.build import caps, portable

RUN_EXPORT = "wasi:cli/run@0.2.12"
#: What the router serves: every cap with a hand-written dynlink face (at least
#: these two; a generated face, as sqlite's and zstd's, is not routed).
ROUTED = portable.routed_caps()
ROUTES = ", ".join(ROUTED)


@dataclass(frozen=True)
class Built:
    path: Path
    digest: str


@pytest.fixture(scope="module")
def built(pylon: Pylon, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """``composectl build --portable -o FILE``, the command a user runs."""
    out = tmp_path_factory.mktemp("portable") / "pylon-portable.wasm"
    result = pylon.composectl("build", "--portable", "-o", out, check=True, timeout=3600)
    digest, path = result.stdout.split()
    assert Path(path) == out
    assert f"routed caps: {ROUTES}" in result.stderr
    return Built(out, digest)


@pytest.fixture(scope="module")
def host(built: Built) -> Host:
    return Host(built.path)


@dataclass(frozen=True)
class Outcome:
    status: int
    stdout: str
    stderr: str


class Host:
    """wasmtime-py as a plain WASI 0.2 host: the component compiled once,
    a fresh Store per run, WASI and nothing else in the linker."""

    def __init__(self, path: Path):
        self.engine = wasmtime.Engine()
        self.component = wc.Component.from_file(self.engine, str(path))

    def run(self, tmp: Path, argv: list[str], *, env: Sequence[tuple[str, str]] = (),
            dirs: dict[str, Path] | None = None) -> Outcome:
        linker = wc.Linker(self.engine)
        linker.add_wasip2()
        store = wasmtime.Store(self.engine)
        wasi = wasmtime.WasiConfig()
        wasi.argv = argv
        wasi.env = list(env)
        out, err = tmp / "stdout", tmp / "stderr"
        wasi.stdout_file = str(out)
        wasi.stderr_file = str(err)
        for guest_path, host_path in (dirs or {}).items():
            wasi.preopen_dir(str(host_path), guest_path)
        store.set_wasi(wasi)
        instance = linker.instantiate(store, self.component)
        iface = instance.get_export_index(store, RUN_EXPORT)
        assert iface is not None, f"no {RUN_EXPORT} export"
        run = instance.get_func(store, instance.get_export_index(store, "run", iface))
        try:
            result: Any = run(store)
            # `run: func() -> result`: what `wasmtime run` shows as 0 or 1.
            status = 0 if result is None or getattr(result, "tag", "ok") == "ok" else 1
        except wasmtime.ExitTrap as exc:
            status = exc.code
        return Outcome(status, out.read_text(), err.read_text())


def run_script(host: Host, tmp_path: Path, source: str, *args: str,
               env: Sequence[tuple[str, str]] = ()) -> Outcome:
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "main.py").write_text(source)
    return host.run(tmp_path, ["pylon", "/app/main.py", *args], env=env, dirs={"/app": app})


# -- the composition ------------------------------------------------------------------


def test_imports_only_wasi_and_keeps_both_entry_points(built: Built) -> None:
    imports, exports = caps.component_world(built.path)
    assert imports, "wasm-tools listed no imports at all"
    assert sorted(i for i in imports if not i.startswith("wasi:")) == []
    assert {"wasi:cli/run@0.2.12", "pylon:guest/entry@0.1.0"} <= exports
    assert built.digest == "sha256:" + hashlib.sha256(built.path.read_bytes()).hexdigest()


def test_a_second_build_is_the_cached_one(built: Built) -> None:
    again = portable.build_portable()
    assert again.digest == built.digest
    assert again.routed == ROUTED
    assert {"cborcalc", "crc32c"} <= set(ROUTED)
    assert not {"sqlite", "zstd"} & set(ROUTED)


@pytest.mark.parametrize("args, message", [
    (["--profile", "micropython-static"], "--portable builds the cpython profile only"),
    (["--profile", "bogus"], "--portable builds the cpython profile only, not 'bogus'"),
    (["--with", "crc32c", "--without", "zstd"], "not both"),
    (["--with", "nosuch"], "cannot embed nosuch"),
])
def test_bad_build_options_are_refused_before_building(pylon: Pylon, args: list[str], message: str) -> None:
    result = pylon.composectl("build", "--portable", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# -- wasi:cli/run under wasmtime-py ---------------------------------------------------

SCRIPT = """\
import sys

import cbor2
import crc32c
from pylon_guest import dynlink

print("argv:", sys.argv[1:])
cap = dynlink.load("crc32c")
data = bytes(range(256)) * 1000
print("dynlink:", int.from_bytes(cap.invoke("crc32c", data), "little"))
head = int.from_bytes(cap.invoke("crc32c", data[:1000]), "little")
print("update:", int.from_bytes(cap.invoke("crc32c-update", cbor2.dumps([head, data[1000:]])), "little"))
print("module:", crc32c.crc32c(data), crc32c.backend())
print("shim:", cap.api.crc32c(b"123456789") == 0xE3069283)
sys.exit(3)
"""


def test_script_prints_reads_argv_uses_crc32c_and_exits_3(host: Host, tmp_path: Path) -> None:
    outcome = run_script(host, tmp_path, SCRIPT, "a", "b c")
    expected = host_crc32c.crc32c(bytes(range(256)) * 1000)
    assert outcome.stdout == (
        "argv: ['a', 'b c']\n"
        f"dynlink: {expected}\n"
        f"update: {expected}\n"
        f"module: {expected} embedded\n"
        "shim: True\n"
    ), outcome.stderr
    assert outcome.status == 3, outcome.stderr


def test_dash_c_environment_and_cwd_come_from_wasi(host: Host, tmp_path: Path) -> None:
    code = "import os, sys; print(sys.argv, os.environ['GREETING'], sorted(os.environ), os.getcwd())"
    outcome = host.run(tmp_path, ["pylon", "-c", code, "x", "-y"], env=[("GREETING", "hello"), ("B", "2")])
    # wasmtime-py gives no initial cwd: the guest starts at WASI's root.
    assert outcome.stdout == "['-c', 'x', '-y'] hello ['B', 'GREETING'] /\n", outcome.stderr
    assert outcome.status == 0


@pytest.mark.parametrize("code, status, stderr", [
    ("pass", 0, ""),
    ("import sys; sys.exit(0)", 0, ""),
    ("import sys; sys.exit(None)", 0, ""),
    ("import sys; sys.exit(1)", 1, ""),
    ("import sys; sys.exit(255)", 255, ""),
    ("import sys; sys.exit(256)", 0, ""),  # as on POSIX: the status is 8 bits
    ("import sys; sys.exit(-1)", 255, ""),
    ("import sys; sys.exit('bye')", 1, "bye\n"),
    ("1 / 0", 1, "ZeroDivisionError: division by zero"),
    ("raise KeyboardInterrupt", 1, "KeyboardInterrupt"),
])
def test_exit_status(host: Host, tmp_path: Path, code: str, status: int, stderr: str) -> None:
    outcome = host.run(tmp_path, ["pylon", "-c", code])
    assert outcome.status == status, outcome.stderr
    assert stderr in outcome.stderr
    if not stderr:
        assert outcome.stderr == ""


@pytest.mark.parametrize("argv, message", [
    (["pylon"], "pylon: nothing to run (no script and no -c)"),
    ([], "pylon: nothing to run (no script and no -c)"),
    (["pylon", "-c"], "pylon: -c needs an argument"),
    (["pylon", "/nowhere/script.py"], "pylon: can't open file '/nowhere/script.py'"),
])
def test_usage_errors_exit_2(host: Host, tmp_path: Path, argv: list[str], message: str) -> None:
    outcome = host.run(tmp_path, argv)
    assert outcome.status == 2
    assert message in outcome.stderr
    assert outcome.stdout == ""


# -- the router ---------------------------------------------------------------------


def test_router_serves_cborcalc_and_zstd_runs_embedded(host: Host, tmp_path: Path) -> None:
    # zstd's dynlink face is generated (one handle table per component), so
    # the router does not serve it: pylon_guest.zstd runs on the guest's
    # embedded face, and asking for the dynlink one is CapNotFound.
    script = """\
from pylon_guest import dynlink, zstd
calc = dynlink.load("cborcalc")
print(calc.call("sum", [1, 2, 3.5]), calc.call("upper", "abc"), calc.api is not None)
data = b"portable " * 5000
frame = zstd.compress(data, 3)
assert zstd.decompress(frame, max_output=len(data)) == data
open("/app/frame.zst", "wb").write(frame)
for ask in (lambda: dynlink.load("zstd"), lambda: zstd.use_backend("dynlink")):
    try:
        ask()
    except dynlink.CapNotFound as exc:
        print("CapNotFound", "zstd" in str(exc))
print(zstd.backend().name)
"""
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text(script)
    outcome = host.run(tmp_path, ["pylon", "/app/main.py"], dirs={"/app": app})
    assert outcome.status == 0, outcome.stderr
    assert outcome.stdout == "6.5 ABC True\nCapNotFound True\nCapNotFound True\nembedded\n"
    # The guest's frame, made by the embedded zstd, decompresses on the host.
    assert zstandard.ZstdDecompressor().decompress((app / "frame.zst").read_bytes()) == b"portable " * 5000


def test_unrouted_names_are_not_found_and_the_guest_goes_on(host: Host, tmp_path: Path) -> None:
    script = """\
from pylon_guest import dynlink
for name in ["sqlite", "zstd", "", "CRC32C", "crc32c\\x00", "crc32c ", "x" * 100_000, "a" + "\\u00e9" * 100,
             "../crc32c"]:
    try:
        dynlink.load(name)
    except dynlink.CapNotFound as exc:
        print(type(exc).__name__, exc)
    else:
        print("resolved", name[:20])
print("alive", dynlink.load("crc32c").invoke("crc32c", b"123456789").hex())
"""
    outcome = run_script(host, tmp_path, script)
    assert outcome.status == 0, outcome.stderr
    # Names are echoed up to 64 bytes, cut on a character boundary: 64 bytes
    # of "a" + "é"... would split an "é", and a WIT string must stay UTF-8.
    shown = ["sqlite", "zstd", "", "CRC32C", "crc32c\x00", "crc32c ", "x" * 64 + "...", "a" + "\u00e9" * 31 + "...",
             "../crc32c"]
    tail = f"' is not routed by this portable pylon (it routes: {ROUTES})"
    assert outcome.stdout.split("\n") == [
        *(f"CapNotFound cap '{name}{tail}" for name in shown), "alive 839206e3", ""]


def test_bad_methods_and_payloads_are_errors_not_traps(host: Host, tmp_path: Path) -> None:
    script = """\
from pylon_guest import dynlink
crc, calc = dynlink.load("crc32c"), dynlink.load("cborcalc")
calls = [(crc, "nope", b""), (crc, "crc32c-update", b"\\xff\\x00"), (crc, "crc32c-update", b""),
         (calc, "sum", b"\\x82\\x43abc\\x0a"), (calc, "upper", b"not cbor"),
         (calc, "upper", b"\\x18\\x63"), (calc, "", b"")]
for cap, method, payload in calls:
    try:
        cap.invoke(method, payload)
    except dynlink.DynlinkError as exc:
        print(type(exc).__name__)
print("alive", crc.invoke("crc32c", b"123456789").hex())
"""
    outcome = run_script(host, tmp_path, script)
    assert outcome.status == 0, outcome.stderr
    assert outcome.stdout.splitlines() == [
        "BadMethod", "BadPayload", "BadPayload", "BadPayload", "BadPayload", "BadPayload", "BadMethod",
        "alive 839206e3",
    ]


def test_a_large_payload_crosses_inside_the_component(host: Host, tmp_path: Path) -> None:
    # Guest -> router is a copy between two memories of one composition, not a
    # host call: 32 MiB take no time worth speaking of even under wasmtime-py,
    # which would lower a list<u8> crossing the host one value at a time.
    script = """\
import time
from pylon_guest import dynlink
data = bytes(range(256)) * (1 << 17)
start = time.perf_counter()
reply = dynlink.load("crc32c").invoke("crc32c", data)
print(int.from_bytes(reply, "little"), time.perf_counter() - start < 5)
"""
    outcome = run_script(host, tmp_path, script)
    assert outcome.status == 0, outcome.stderr
    assert outcome.stdout == f"{host_crc32c.crc32c(bytes(range(256)) * (1 << 17))} True\n"


# -- the engine keeps its own entry point ------------------------------------------------


def test_the_engine_still_runs_the_guest_through_its_entry(pylon: Pylon) -> None:
    # The stock guest (built from the same world, with the new export) under
    # composectl: argv and the full exit status, as before.
    result = pylon.run_code("import sys; print(sys.argv); sys.exit(3)", "a")
    assert result.returncode == 3, result.stderr
    assert result.stdout == "['-c', 'a']\n"


# -- a guest without the embedded crc32c: the module itself goes through the router ------


def test_without_embedded_crc32c_the_module_falls_back_to_the_router(pylon: Pylon, tmp_path: Path) -> None:
    out = tmp_path / "lean-portable.wasm"
    result = pylon.composectl("build", "--portable", "--without", "crc32c", "-o", out, check=True, timeout=3600)
    assert "embedded caps: sqlite, zstd;" in result.stderr
    imports, _ = caps.component_world(out)
    assert sorted(i for i in imports if not i.startswith("wasi:")) == []
    data = bytes(range(256)) * 64
    code = (f"import crc32c, sys; print(crc32c.backend(), crc32c.crc32c({data!r}), "
            "crc32c.crc32c(b'6789', crc32c.crc32c(b'12345'))); sys.exit(3)")
    outcome = Host(out).run(tmp_path, ["pylon", "-c", code])
    assert outcome.stdout == f"dynlink {host_crc32c.crc32c(data)} {0xE3069283}\n", outcome.stderr
    assert outcome.status == 3
