"""The cap's side of generated dynlink faces (docs/cap-interface.md):
pylon.build.capgen.c_dispatch, the SDK's handle table, and SQLite's face.

The components are real (built by ``build_cap`` with zig, wit-bindgen and
wasm-tools) and run in real wasmtime: wasmtime-py instantiates the provider
directly, so the host's part (``$pylon/init``, ``$pylon/release-all``) is
played here byte for byte. A guest-side test at the end runs the same calls
through the engine, the stock guest and ``pylon_guest.dynlink``.
"""

from __future__ import annotations

import json
import marshal
import math
import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wasmtime import Engine, Store
from wasmtime.component import Component, Linker

from conftest import REPO
from pylon.build import toolchain
from pylon.build.capgen.wit_model import parse_interface
from pylon.build.caps import build_cap, core_imports
from pylon.errors import BuildError

PROBE = REPO / "tests" / "caps" / "typed_probe"
SQLITE = REPO / "caps" / "sqlite"
PROVIDER = "compose:dynlink/provider@0.1.0"


class Failed(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message


class Provider:
    """One instance of a provider component, called like the host calls it."""

    def __init__(self, path: Path, *, init: bool = True, max_handles: int = 4096, key: bytes | None = None):
        engine = Engine()
        self.store = Store(engine)
        inst = Linker(engine).instantiate(self.store, Component.from_file(engine, str(path)))
        iface = inst.get_export_index(self.store, PROVIDER)
        assert iface is not None
        index = inst.get_export_index(self.store, "invoke", iface)
        assert index is not None
        self.fn = inst.get_func(self.store, index)
        if init:
            assert self.invoke("$pylon/init", [key or os.urandom(32), max_handles]) is None

    def raw(self, method: str, payload: bytes) -> bytes:
        out = self.fn(self.store, method, payload)
        if not isinstance(out, bytes):  # the error variant
            raise Failed(out.tag, out.payload)
        return out

    def invoke(self, method: str, args: Any) -> Any:
        return cbor2.loads(self.raw(method, cbor2.dumps(args)))


@pytest.fixture(scope="module")
def probe_wasm() -> Path:
    return build_cap(PROBE).path


@pytest.fixture(scope="module")
def probe(probe_wasm: Path) -> Provider:
    return Provider(probe_wasm)


@pytest.fixture(scope="module")
def sqlite_wasm() -> Path:
    return build_cap(SQLITE).path


# -- the build ------------------------------------------------------------------

def test_the_generated_face_exports_only_the_provider_and_ships_a_proxy(probe_wasm: Path) -> None:
    record = json.loads((probe_wasm.parent / "built.json").read_text())
    assert record["shim"] is True  # the generated guest proxy (pylon.build.capgen.py_proxy)
    text = toolchain.run([toolchain.wasm_tools(), "component", "wit", str(probe_wasm)], what="wit").stdout
    assert f"export {PROVIDER};" in text and "pylon:probe" not in text


def _doc(types: list[dict[str, Any]], params: list[dict[str, Any]]) -> dict[str, Any]:
    return {"packages": [{"name": "t:t@0.1.0"}],
            "interfaces": [{"name": "i", "package": 0, "types": {}, "functions": {
                "f": {"name": "f", "kind": "freestanding", "params": params}}}],
            "types": types}


def test_flags_are_refused_naming_the_type() -> None:
    doc = _doc([{"name": "perms", "kind": {"flags": {"flags": [{"name": "read"}]}}}],
               [{"name": "p", "type": 0}])
    with pytest.raises(BuildError, match="perms is a flags, which is not supported"):
        parse_interface(doc, "t:t/i@0.1.0")


def test_option_of_option_is_refused() -> None:
    doc = _doc([{"name": None, "kind": {"option": "u8"}}, {"name": None, "kind": {"option": 0}}],
               [{"name": "p", "type": 1}])
    with pytest.raises(BuildError, match=r"option<option<\.\.\.>> is not supported"):
        parse_interface(doc, "t:t/i@0.1.0")


def test_a_flags_type_in_a_wit_file_fails_the_build(tmp_path: Path) -> None:
    cap = tmp_path / "flagcap"
    shutil.copytree(PROBE, cap)
    wit = cap / "probe.wit"
    wit.write_text(wit.read_text().replace("  enum color {", "  flags perms { read, write }\n  use-perms: func(p: perms);\n  enum color {"))  # noqa: E501
    with pytest.raises(BuildError, match="perms is a flags"):
        build_cap(cap)


# -- SipHash ----------------------------------------------------------------------

def test_siphash_matches_the_papers_reference_vector(tmp_path: Path) -> None:
    """Appendix A of the SipHash paper: key 00..0f, message 00..0e."""
    main = tmp_path / "main.c"
    main.write_text(textwrap.dedent("""
        #include <stdio.h>
        #include "pylon_handles.h"
        int main(void) {
            uint8_t key[16], msg[15];
            for (int i = 0; i < 16; i++) key[i] = (uint8_t)i;
            for (int i = 0; i < 15; i++) msg[i] = (uint8_t)i;
            printf("%016llx\\n", (unsigned long long)pylon_siphash24(key, msg, sizeof msg));
            printf("%016llx\\n", (unsigned long long)pylon_siphash24(key, msg, 0));
            return 0;
        }
    """))
    exe = tmp_path / "siphash"
    toolchain.run([*toolchain.zig(), "cc", "-O1", "-I", str(REPO / "caps" / "_sdk"), str(main),
                   str(REPO / "caps" / "_sdk" / "pylon_handles.c"), "-o", str(exe)], what="zig cc siphash test")
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    # The paper's vector, and the first of its reference implementation's
    # vectors.h (the empty message): 310e0edd47db6f72 as little-endian bytes.
    assert out == ["a129ca6149be45e5", "726fdb47dd0e0e31"]


# -- values -----------------------------------------------------------------------

INTS = {"s8": (-(1 << 7), (1 << 7) - 1), "s16": (-(1 << 15), (1 << 15) - 1), "s32": (-(1 << 31), (1 << 31) - 1),
        "s64": (-(1 << 63), (1 << 63) - 1), "u8": (0, 255), "u16": (0, 65535), "u32": (0, (1 << 32) - 1),
        "u64": (0, (1 << 64) - 1)}


@pytest.mark.parametrize("kind", sorted(INTS))
def test_integers_round_trip_at_their_limits_and_refuse_past_them(probe: Provider, kind: str) -> None:
    lo, hi = INTS[kind]
    for v in (lo, hi, 0, 1):
        assert probe.invoke(f"echo-{kind}", [v]) == v
    for bad in (lo - 1, hi + 1):
        with pytest.raises(Failed) as e:
            probe.invoke(f"echo-{kind}", [bad])
        assert e.value.kind == "bad-payload"
        why = "a CBOR bignum" if bad < -(1 << 64) or bad >= 1 << 64 else f"expected an integer in {kind}'s range"
        assert e.value.message.startswith(f"argument 0 (v) of echo-{kind}: ") and why in e.value.message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(s=st.text(max_size=50), b=st.binary(max_size=300), i=st.integers(-(1 << 63), (1 << 63) - 1),
       f=st.floats(allow_nan=False))
def test_values_round_trip(probe: Provider, s: str, b: bytes, i: int, f: float) -> None:
    assert probe.invoke("echo-string", [s]) == s
    assert probe.invoke("echo-bytes", [b]) == b
    assert probe.invoke("echo-s64", [i]) == i
    assert probe.invoke("echo-f64", [f]) == f
    assert probe.invoke("echo-strings", [[s, s]]) == [s, s]


def test_every_shape_round_trips(probe: Provider) -> None:
    p = [3, -4, "p"]
    cases = {
        "echo-bool": [True, False], "echo-char": ["a", "é", "😀"], "echo-string": ["", "x" * 1000],
        "echo-bytes": [b"", b"\x00\xff"], "echo-points": [[], [p, [0, 0, ""]]], "echo-strings": [[], ["a", ""]],
        "echo-option": [None, "", "x"], "echo-option-u32": [None, 0, 7], "echo-tuple": [[1, "a", 2.5]],
        "echo-point": [p], "echo-shape": [[0, None], [1, 2.5], [2, "n"], [3, p]], "echo-color": [0, 1, 2],
        "echo-list-option": [[None, 1, -(1 << 63)]], "echo-f32": [1.5, -0.0, math.inf],
    }
    for method, values in cases.items():
        for v in values:
            assert probe.invoke(method, [v]) == v, (method, v)
    assert probe.invoke("maybe-fail", ["x", False]) == [0, "x"]
    assert probe.invoke("maybe-fail", ["x", True]) == [1, [7, "x"]]
    assert probe.invoke("check", [True]) == [0, None] and probe.invoke("check", [False]) == [1, None]
    assert probe.invoke("check-ok", [4]) == [0, 5] and probe.invoke("check-ok", [0]) == [1, None]
    assert probe.invoke("check-err", [True]) == [1, "it failed"] and probe.invoke("check-err", [False]) == [0, None]
    assert probe.invoke("mix", [1, -2, 0.5, b"\x01\x02", [10, 20, "e"]]) == 32.5
    assert probe.invoke("mix", [1, 2, 3, b"", None]) == 6.0
    assert probe.invoke("nothing", []) is None


def test_lenient_decoding_accepts_other_widths(probe: Provider) -> None:
    assert probe.raw("echo-u8", b"\x81\x19\x00\x05") == b"\x05"  # a 2-byte head for 5
    assert probe.raw("echo-f64", b"\x81\xf9\x3e\x00") == cbor2.dumps(1.5)  # a half float
    assert probe.invoke("echo-f32", [3]) == 3.0  # an integer where a float goes


@pytest.mark.parametrize(("method", "payload", "message"), [
    ("echo-bool", [1], "argument 0 (v) of echo-bool: expected a bool"),
    ("echo-string", [b"x"], "argument 0 (v) of echo-string: expected a text string"),
    ("echo-char", ["ab"], "argument 0 (v) of echo-char: expected a text string of one character"),
    ("echo-point", [[1, 2]], "argument 0 (v) of echo-point: expected a point record: an array of 3"),
    ("echo-shape", [[9, None]], "argument 0 (v) of echo-shape: expected a shape variant"),
    ("echo-color", [3], "argument 0 (v) of echo-color: expected a color enum case"),
    ("maybe-fail", ["x", 1], "argument 1 (fail) of maybe-fail: expected a bool"),
    ("mix", [1, 2, 3, b"", [1, 2, 3]], "argument 4 (e) of mix: argument"),
    ("echo-u8", 5, "echo-u8 takes 1 argument: the request must be a CBOR array of 1"),
    ("echo-u8", [1, 2], "echo-u8 takes 1 argument"),
])
def test_wrong_shapes_are_bad_payload_naming_the_argument(probe: Provider, method: str, payload: Any,
                                                          message: str) -> None:
    with pytest.raises(Failed) as e:
        probe.invoke(method, payload)
    assert e.value.kind == "bad-payload"
    if message.endswith(": argument"):  # the nested point's own text follows
        assert e.value.message.startswith(message[: -len(" argument")])
    else:
        assert e.value.message.startswith(message), e.value.message


def test_malformed_cbor_and_bad_utf8_are_bad_payload(probe: Provider) -> None:
    for payload, why in [(b"\x81\x78\x05ab", "ends early"), (b"\x81\x62\xff\xfe", "not valid UTF-8"),
                         (b"\x81\x7f\x61a\xff", "indefinite"), (b"\x81\x60\x00", "bytes after the last argument")]:
        with pytest.raises(Failed) as e:
            probe.raw("echo-string", payload)
        assert e.value.kind == "bad-payload" and why in e.value.message, e.value.message


def test_unknown_methods_are_bad_method(probe: Provider) -> None:
    with pytest.raises(Failed) as e:
        probe.invoke("no-such", [])
    assert (e.value.kind, e.value.message) == ("bad-method", "unknown method: no-such")


# -- handles ----------------------------------------------------------------------

def test_resources_live_and_die_with_their_handles(probe_wasm: Path) -> None:
    p = Provider(probe_wasm)
    c = p.invoke("[constructor]counter", [5])
    assert isinstance(c, bytes) and len(c) == 16
    assert p.invoke("[method]counter.add", [c, 3]) == 8
    assert p.invoke("[method]counter.get", [c]) == 8
    assert p.invoke("[static]counter.peek", [c]) == 8  # borrow: still live
    d = p.invoke("[method]counter.split", [c])
    z = p.invoke("[static]counter.zero", [])
    assert p.invoke("[static]counter.try-new", [-1]) == [1, "negative start"]
    ok, t = p.invoke("[static]counter.try-new", [2])
    assert ok == 0 and p.invoke("[static]counter.maybe", [False]) is None
    m = p.invoke("[static]counter.maybe", [True])
    assert p.invoke("live", []) == 5
    assert p.invoke("[method]counter.absorb", [c, d]) == 16  # own: d moved in and destroyed
    assert p.invoke("live", []) == 4
    with pytest.raises(Failed) as e:
        p.invoke("[method]counter.get", [d])
    assert e.value.message == "argument 0 (self) of [method]counter.get is not a live counter handle"
    for h in (z, t, m):
        assert p.invoke("[drop]counter", [h]) is None
    assert p.invoke("live", []) == 1
    with pytest.raises(Failed) as e:
        p.invoke("[drop]counter", [z])  # twice
    assert e.value.kind == "bad-payload" and "is not a live counter handle" in e.value.message
    assert p.invoke("$pylon/release-all", None) == 1
    assert p.invoke("live", []) == 0


def test_forged_and_foreign_tokens_are_refused(probe_wasm: Path) -> None:
    a, b = Provider(probe_wasm), Provider(probe_wasm)
    ca = a.invoke("[constructor]counter", [1])
    cb = b.invoke("[constructor]counter", [1])
    assert ca[:8] == cb[:8]  # same slot and type...
    forged = [cb,  # ...but another instance's tag
              ca[:8] + bytes(8), ca[:15] + bytes([ca[15] ^ 1]),
              ca[:4] + (1).to_bytes(4, "little") + ca[8:],  # another resource type
              (7).to_bytes(4, "little") + ca[4:], ca[:15], "not bytes"]
    for token in forged:
        with pytest.raises(Failed) as e:
            a.invoke("[method]counter.get", [token])
        assert e.value.message == "argument 0 (self) of [method]counter.get is not a live counter handle"
    a.invoke("[drop]counter", [ca])
    again = a.invoke("[constructor]counter", [2])
    assert again[:8] == ca[:8] and again != ca  # the slot is reused, the tag is new
    with pytest.raises(Failed):
        a.invoke("[method]counter.get", [ca])


def test_max_handles_refuses_and_destroys_what_the_call_made(probe_wasm: Path) -> None:
    p = Provider(probe_wasm, max_handles=2)
    p.invoke("[constructor]counter", [1])
    c = p.invoke("[constructor]counter", [2])
    with pytest.raises(Failed) as e:
        p.invoke("[method]counter.split", [c])
    assert e.value.kind == "limit-exceeded" and "max-handles = 2" in e.value.message
    assert p.invoke("live", []) == 2  # the split-off counter was destroyed
    p.invoke("[drop]counter", [c])
    p.invoke("[static]counter.zero", [])
    assert p.invoke("$pylon/release-all", None) == 2


def test_the_host_methods(probe_wasm: Path) -> None:
    bare = Provider(probe_wasm, init=False)
    with pytest.raises(Failed) as e:
        bare.invoke("live", [])
    assert e.value.kind == "bad-method" and "$pylon/init" in e.value.message
    with pytest.raises(Failed) as e:
        bare.invoke("$pylon/init", [b"short", 5])
    assert e.value.kind == "bad-payload"
    assert bare.invoke("$pylon/init", [bytes(32), 5]) is None
    with pytest.raises(Failed) as e:
        bare.invoke("$pylon/init", [bytes(32), 5])
    assert "already initialised" in e.value.message
    assert bare.invoke("$pylon/release-all", None) == 0


# -- SQLite -----------------------------------------------------------------------

def test_sqlite_over_raw_invoke(sqlite_wasm: Path) -> None:
    db = Provider(sqlite_wasm)
    ok, conn = db.invoke("[static]connection.open", [":memory:"])
    assert ok == 0 and len(conn) == 16
    assert db.invoke("[method]connection.execute", [conn, "create table t (k integer primary key, v text)"]) \
        == [0, None]
    ok, stmt = db.invoke("[method]connection.prepare", [conn, "insert into t values (?, ?)"])
    assert ok == 0
    batch = db.invoke("[method]statement.run", [stmt, [[1, 7], [3, "seven"]], 10])
    assert batch == [0, [[], True, 1, 7]]
    ok, sel = db.invoke("[method]connection.prepare", [conn, "select v, k * 2 from t"])
    assert db.invoke("[method]statement.columns", [sel]) == ["v", "k * 2"]
    packed = db.invoke("[method]statement.run-packed", [sel, marshal.dumps((), 2).decode("latin-1"), 10])
    assert marshal.loads(packed) == ([("seven", 14)], True, 0, 7)
    assert db.invoke("[method]statement.finalize", [sel]) is None
    assert db.invoke("[method]connection.prepare", [conn, "select nope"])[0] == 1
    assert db.invoke("[method]connection.execute", [conn, "select random(), date('now')"]) == [0, None]
    ok, row = db.invoke("[method]connection.prepare", [conn, "select date('now') is null"])
    assert db.invoke("[method]statement.step", [row]) == [0, [[1, 1]]]  # no clock: NULL
    # The connection and three statements (finalize leaves its handle live).
    assert db.invoke("$pylon/release-all", None) == 4


def test_sqlite_refuses_a_file_path(sqlite_wasm: Path) -> None:
    db = Provider(sqlite_wasm)
    assert db.invoke("[static]connection.open", ["/data/x.db"]) == [1, [14, "unable to open database file"]]


def test_sqlite_core_module_imports_nothing(sqlite_wasm: Path) -> None:
    # build_cap checks the core module; the component imports only types.
    text = toolchain.run([toolchain.wasm_tools(), "component", "wit", str(sqlite_wasm)], what="wit").stdout
    assert "wasi:" not in text and f"export {PROVIDER};" in text
    assert core_imports  # (the check itself lives in pylon.build.caps._compile)
