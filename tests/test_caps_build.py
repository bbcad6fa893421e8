"""Building dynlink caps (pylon.build.caps) and calling what comes out.

Providers are called through wasmtime-py (real wasmtime, component model),
which is fine for small payloads; the 256 MiB check drives the core module's
canonical-ABI exports directly, because wasmtime-py lifts a list<u8> one
byte at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import shutil
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import cbor2
import crc32c as ref
import pytest
import wasmtime
import wasmtime.component as wc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylon.build import caps, toolchain
from pylon.errors import BuildError
from pylon.wasm_sections import custom_section, encode_custom_section

REPO = Path(__file__).resolve().parents[1]
CAP_DIRS = {
    "crc32c": REPO / "caps" / "crc32c",
    "cborcalc": REPO / "caps" / "cborcalc",
    "zstd": REPO / "caps" / "zstd",  # calls tested in tests/test_zstd_dynlink.py
    "misbehave": REPO / "tests" / "caps" / "misbehave",
}


@pytest.fixture(scope="module")
def built() -> dict[str, caps.BuiltCap]:
    return {name: caps.build_cap(folder) for name, folder in CAP_DIRS.items()}


# -- calling a provider through wasmtime-py -----------------------------------

class CallError(Exception):
    """The provider returned `err(error)`: ``tag`` is the WIT case name."""

    def __init__(self, tag: str, message: str):
        super().__init__(f"{tag}: {message}")
        self.tag = tag
        self.message = message


class Provider:
    """One instance of a cap component in a Store of its own, no imports."""

    def __init__(self, component: Path, *, fuel: int | None = None, memory: int | None = None):
        config = wasmtime.Config()
        config.consume_fuel = fuel is not None
        engine = wasmtime.Engine(config)
        self.store = wasmtime.Store(engine)
        if fuel is not None:
            self.store.set_fuel(fuel)
        if memory is not None:
            self.store.set_limits(memory_size=memory)
        instance = wc.Linker(engine).instantiate(self.store, wc.Component.from_file(engine, str(component)))
        iface = instance.get_export_index(self.store, caps.PROVIDER)
        self._invoke = instance.get_func(self.store, instance.get_export_index(self.store, "invoke", iface))

    def invoke(self, method: str, payload: bytes = b"") -> bytes:
        result = self._invoke(self.store, method, payload)
        if isinstance(result, bytes):
            return result
        raise CallError(result.tag, result.payload)  # wasmtime-py hands `err` back as a Variant

    def call(self, method: str, arg: Any) -> Any:
        return cbor2.loads(self.invoke(method, cbor2.dumps(arg)))


@pytest.fixture(scope="module")
def crc(built: dict[str, caps.BuiltCap]) -> Provider:
    return Provider(built["crc32c"].path)


@pytest.fixture(scope="module")
def calc(built: dict[str, caps.BuiltCap]) -> Provider:
    return Provider(built["cborcalc"].path)


# -- discovery and manifests ----------------------------------------------------

def test_find_caps() -> None:
    found = caps.find_caps(REPO / "caps")
    assert {CAP_DIRS["crc32c"], CAP_DIRS["cborcalc"], CAP_DIRS["zstd"]} <= set(found)
    assert all(not p.name.startswith("_") for p in found)
    # Test caps with a cap.toml are found; the WAT ones (no cap.toml) are not.
    tests_caps = REPO / "tests" / "caps"
    found_tests = caps.find_caps(tests_caps)
    assert {CAP_DIRS["misbehave"], tests_caps / "handles_probe"} <= set(found_tests)
    assert all((p / "cap.toml").is_file() for p in found_tests) and found_tests == sorted(found_tests)


def test_find_caps_skips_caps_without_the_face(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "cap.toml").write_text('[cap]\nname = "a"\n[static]\nmodule = "a"\n')
    (tmp_path / "b").mkdir()
    assert caps.find_caps(tmp_path) == []
    assert caps.find_caps(tmp_path, face=None) == [tmp_path / "a"]


def _cap(tmp_path: Path, manifest: str, files: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "cap"
    folder.mkdir(exist_ok=True)
    (folder / "cap.toml").write_text(manifest)
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    return folder


GOOD_HEAD = '[cap]\nname = "t"\nversion = "0.1.0"\ndescription = "test"\n'


@pytest.mark.parametrize("manifest, message", [
    ("", "missing [cap] table"),
    ('[cap]\nname = "T x"\nversion = "1"\ndescription = "d"\n', "lowercase letters"),
    ('[cap]\nname = "t"\ndescription = "d"\n', "[cap].version"),
    (GOOD_HEAD + "[dynlink]\nsource = ['a.c']\n", "unknown key(s) source"),
    (GOOD_HEAD + "[dynlink]\nsources = ['../../etc/passwd']\n", "outside the cap folder"),
    (GOOD_HEAD + "[dynlink]\nsources = ['missing.c']\n", "does not exist"),
    (GOOD_HEAD + "[dynlink]\nsources = ['@nope/a.c']\n", "no [vendor.nope]"),
    (GOOD_HEAD + "[vendor.z]\npypi = 'zcbor'\nsha256 = '00'\n", "pinned requirement"),
    (GOOD_HEAD + "[static]\nmodule = 't'\n", "no [dynlink] table"),
    ("[cap\n", "not valid TOML"),
])
def test_manifest_errors(tmp_path: Path, manifest: str, message: str) -> None:
    with pytest.raises(BuildError) as info:
        caps.build_cap(_cap(tmp_path, manifest))
    assert message in str(info.value)


def test_not_a_cap(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="has no cap.toml"):
        caps.build_cap(tmp_path)


# -- what a build produces -----------------------------------------------------

@pytest.mark.parametrize("name", sorted(CAP_DIRS))
def test_component_exports_provider_and_imports_no_wasi(built: dict[str, caps.BuiltCap], name: str) -> None:
    cap = built[name]
    assert cap.name == name and cap.version == "0.1.0"
    assert cap.path.is_file() and cap.path.name == f"{name}.wasm"
    imports, exports = caps.component_world(cap.path)
    assert exports == {"compose:dynlink/provider@0.1.0"}
    assert imports <= {"compose:dynlink/types@0.1.0"}
    wit = toolchain.run([toolchain.wasm_tools(), "component", "wit", str(cap.path)], what="wit").stdout
    assert "wasi" not in wit
    # The core module inside imports nothing at all.
    assert caps.core_imports(cap.path.parent / "core.wasm") == []


@pytest.mark.parametrize("name", sorted(CAP_DIRS))
def test_digest_is_sha256_of_the_file(built: dict[str, caps.BuiltCap], name: str) -> None:
    import hashlib

    cap = built[name]
    assert cap.digest == "sha256:" + hashlib.sha256(cap.path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["crc32c", "cborcalc"])
def test_shim_section_is_the_shim_file(built: dict[str, caps.BuiltCap], name: str) -> None:
    section = custom_section(built[name].path.read_bytes(), caps.SHIM_SECTION)
    assert section == (CAP_DIRS[name] / "shim.py").read_bytes()


def test_no_shim_no_section(built: dict[str, caps.BuiltCap]) -> None:
    assert custom_section(built["misbehave"].path.read_bytes(), caps.SHIM_SECTION) is None


def test_second_build_is_a_cache_hit(built: dict[str, caps.BuiltCap], monkeypatch: pytest.MonkeyPatch) -> None:
    def no_tools(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a cached build ran a tool: {args}")

    monkeypatch.setattr(toolchain, "run", no_tools)
    monkeypatch.setattr(toolchain, "cargo_tool", no_tools)
    for name, folder in CAP_DIRS.items():
        start = time.perf_counter()
        again = caps.build_cap(folder)
        assert time.perf_counter() - start < 1.0
        assert again.cached
        assert (again.path, again.digest) == (built[name].path, built[name].digest)


def test_any_source_change_rebuilds(tmp_path: Path) -> None:
    folder = tmp_path / "misbehave"
    shutil.copytree(CAP_DIRS["misbehave"], folder)
    first = caps.build_cap(folder)
    source = folder / "misbehave.c"
    # A fresh token each run: the same change made by an earlier run is cached.
    source.write_text(source.read_text() + f"\n/* a comment changes the key: {uuid.uuid4()} */\n")
    second = caps.build_cap(folder)
    assert not second.cached and second.path != first.path


def test_compiler_error_becomes_build_error(tmp_path: Path) -> None:
    folder = _cap(tmp_path, GOOD_HEAD + '[dynlink]\nsources = ["broken.c"]\n', {
        "broken.c": '#include "cap.h"\nint oops(void) { return 1 +; }\n',
    })
    with pytest.raises(BuildError) as info:
        caps.build_cap(folder)
    message = str(info.value)
    assert "zig cc (t) failed" in message
    assert "broken.c:2" in message and "expected expression" in message
    assert not list(toolchain.output_dir("cap-t", "x").parent.glob("cap-t-*.partial"))


def test_wasi_import_is_refused(tmp_path: Path) -> None:
    folder = _cap(tmp_path, GOOD_HEAD + '[dynlink]\nsources = ["chatty.c"]\n', {
        "chatty.c": '#include <stdio.h>\n#include "cap.h"\n'
                    "bool exports_compose_dynlink_provider_invoke(cap_string_t *m, cap_list_u8_t *p,\n"
                    "    cap_list_u8_t *r, exports_compose_dynlink_provider_error_t *e) {\n"
                    '  (void)m; (void)p; (void)e; printf("hi\\n"); r->ptr = 0; r->len = 0; return true;\n}\n',
    })
    with pytest.raises(BuildError, match=r"imports wasi_snapshot_preview1\.\w+.*must import nothing"):
        caps.build_cap(folder)


def test_shim_syntax_error_is_a_build_error(tmp_path: Path) -> None:
    folder = tmp_path / "misbehave"
    shutil.copytree(CAP_DIRS["misbehave"], folder)
    manifest = folder / "cap.toml"
    manifest.write_text(manifest.read_text().replace('version = "0.1.0"', 'version = "0.1.0"\nshim = "shim.py"'))
    (folder / "shim.py").write_text("def broken(:\n")
    with pytest.raises(BuildError, match="shim .* does not compile"):
        caps.build_cap(folder)


def test_vendor_archive_must_match_its_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYLON_CACHE_DIR", str(tmp_path))  # a fresh download, not the cached copy
    wrong = caps.Vendor("zcbor", "zcbor==0.9.1", "0" * 64, "zcbor-0.9.1")
    with pytest.raises(BuildError, match="has sha256 [0-9a-f]{64}, but the manifest pins 0000"):
        caps.fetch_vendor(wrong)
    assert list((tmp_path / "build").iterdir()) == []  # nothing half-unpacked left behind


def _vendor_archive(tmp_path: Path) -> tuple[str, str]:
    """A vendored archive (thing-1.0/lib.c) as a file:/// URL, and its sha256."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        body = b"int thing(void) { return 1; }\n"
        info = tarfile.TarInfo("thing-1.0/lib.c")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    archive = tmp_path / "thing-1.0.tar.gz"
    archive.write_bytes(buf.getvalue())
    return archive.as_uri(), hashlib.sha256(buf.getvalue()).hexdigest()


PATCH = """Makes thing() return {n}.

--- a/lib.c
+++ b/lib.c
@@ -1 +1 @@
-int thing(void) {{ return 1; }}
+int thing(void) {{ return {n}; }}
"""


def test_vendor_patches_are_applied_and_name_the_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYLON_CACHE_DIR", str(tmp_path / "cache"))
    url, sha = _vendor_archive(tmp_path)
    pristine = caps.Vendor("thing", None, sha, "thing-1.0", url=url)
    assert (caps.fetch_vendor(pristine) / "lib.c").read_text() == "int thing(void) { return 1; }\n"
    assert pristine.tree_key == sha
    trees = {}
    for n in (2, 3):
        patch = tmp_path / f"return-{n}.patch"
        patch.write_text(PATCH.format(n=n))
        vendor = dataclasses.replace(pristine, patches=(patch,))
        tree = caps.fetch_vendor(vendor)
        assert (tree / "lib.c").read_text() == f"int thing(void) {{ return {n}; }}\n"
        assert not list(tree.glob("*.orig")) and not list(tree.glob("*.rej"))
        trees[n] = (tree, vendor.tree_key)
    # Each patch its own tree and key, so a changed patch never reuses the
    # old tree or the objects compiled from it; the pristine tree is untouched.
    assert len({t for t, _ in trees.values()} | {caps.fetch_vendor(pristine)}) == 3
    assert len({k for _, k in trees.values()} | {sha}) == 3
    assert (caps.fetch_vendor(pristine) / "lib.c").read_text() == "int thing(void) { return 1; }\n"


def test_a_vendor_patch_that_does_not_apply_is_a_build_error(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYLON_CACHE_DIR", str(tmp_path / "cache"))
    url, sha = _vendor_archive(tmp_path)
    stale = tmp_path / "stale.patch"
    stale.write_text(PATCH.format(n=2).replace("return 1;", "return 7;"))  # made against another version
    vendor = caps.Vendor("thing", None, sha, "thing-1.0", url=url, patches=(stale,))
    with pytest.raises(BuildError, match=r"vendor thing: stale.patch does not apply to file:///.*thing-1.0.tar.gz"):
        caps.fetch_vendor(vendor)
    assert [p.name for p in (tmp_path / "cache" / "build").iterdir()] == []  # nothing half-made left behind


ALLOC_FUZZ_C = r"""
#include "cap.h"
#include "pylon_cap.h"

/* Random malloc/calloc/realloc/free over 32 slots, mixing small blocks (libc)
 * and big ones (pylon_bigalloc.c), each block stamped every 1 KiB and at its
 * end; a stamp that changes means two live blocks overlap. */
typedef struct { uint8_t *p; size_t n; uint8_t seed; } slot;
static uint32_t rng = 12345;
static uint32_t next(void) { rng = rng * 1103515245u + 12345u; return rng >> 8; }
static void stamp(slot *s) {
    for (size_t k = 0; k < s->n; k += 1024) s->p[k] = (uint8_t)(s->seed + k / 1024);
    s->p[s->n - 1] = s->seed;
}
static bool intact(const slot *s, size_t n) {
    for (size_t k = 0; k < n && k < s->n; k += 1024)
        if (s->p[k] != (uint8_t)(s->seed + k / 1024) && !(k == s->n - 1)) return false;
    return n < s->n || s->p[s->n - 1] == s->seed;
}
static size_t some_size(void) {
    return next() % 2 ? 1 + next() % 5000 : (1u << 20) + next() % (3u << 20);
}

bool exports_compose_dynlink_provider_invoke(cap_string_t *method, cap_list_u8_t *payload,
                                             cap_list_u8_t *ret,
                                             exports_compose_dynlink_provider_error_t *err) {
    slot slots[32] = {0};
    bool ok = true;
    for (int i = 0; i < 3000 && ok; i++) {
        slot *s = &slots[next() % 32];
        if (s->p) {
            ok = intact(s, s->n);
            if (next() % 3 == 0) {
                size_t n = some_size();
                uint8_t *q = realloc(s->p, n);
                if (!q) break;
                s->p = q;
                slot kept = *s;
                ok = ok && intact(&kept, n < s->n ? n : s->n);
                s->n = n;
                s->seed = (uint8_t)next();
                stamp(s);
            } else {
                free(s->p);
                s->p = NULL;
            }
        } else {
            s->n = some_size();
            bool zeroed = next() % 2;
            s->p = zeroed ? calloc(1, s->n) : malloc(s->n);
            if (!s->p) break;
            if (zeroed)
                for (size_t k = 0; k < s->n; k += 997) ok = ok && s->p[k] == 0;
            s->seed = (uint8_t)next();
            stamp(s);
        }
    }
    for (int k = 0; k < 32; k++) free(slots[k].p);
    cap_list_u8_free(payload);
    cap_string_free(method);
    return ok ? pylon_ok_u32le(ret, (uint32_t)__builtin_wasm_memory_size(0))
              : pylon_bad_payload(err, "heap corrupted");
}
"""


def test_big_block_allocator_under_random_load(tmp_path: Path) -> None:
    folder = _cap(tmp_path, GOOD_HEAD + '[dynlink]\nsources = ["fuzz.c"]\n', {"fuzz.c": ALLOC_FUZZ_C})
    provider = Provider(caps.build_cap(folder).path)
    pages = int.from_bytes(provider.invoke("fuzz"), "little")
    assert pages * 65536 < 400 << 20  # 32 live blocks of at most 4 MiB, plus reuse slack
    # Another run (the generator goes on) reuses the freed blocks: little growth.
    assert int.from_bytes(provider.invoke("fuzz"), "little") < pages * 1.25


def test_custom_section_encoding() -> None:
    section = encode_custom_section("pylon:shim", b"x" * 200)
    # id 0, size 211 as LEB128 (0xd3 0x01), name length 10, name, payload
    assert section[:3] == b"\x00\xd3\x01" and section[3] == 10 and section[4:14] == b"pylon:shim"
    module = b"\0asm\x01\0\0\0" + section
    assert custom_section(module, "pylon:shim") == b"x" * 200


# -- crc32c --------------------------------------------------------------------

def _le(value: int) -> bytes:
    return value.to_bytes(4, "little")


def test_crc32c_vectors(crc: Provider) -> None:
    assert crc.invoke("crc32c", b"123456789") == _le(0xE3069283)
    assert crc.invoke("crc32c", bytes(32)) == _le(0x8A9136AA)
    assert crc.invoke("crc32c", b"") == _le(0)


def test_crc32c_update_continues(crc: Provider) -> None:
    first = int.from_bytes(crc.invoke("crc32c", b"12345"), "little")
    assert crc.invoke("crc32c-update", cbor2.dumps([first, b"6789"])) == _le(0xE3069283)
    assert crc.invoke("crc32c-update", cbor2.dumps([0, b"123456789"])) == _le(0xE3069283)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3000), start=st.integers(0, 2**32 - 1))
def test_crc32c_matches_reference(crc: Provider, data: bytes, start: int) -> None:
    assert crc.invoke("crc32c", data) == _le(ref.crc32c(data))
    assert crc.invoke("crc32c-update", cbor2.dumps([start, data])) == _le(ref.crc32c(data, start))


@pytest.mark.parametrize("payload", [
    b"", b"\x83\x00\x40\x00", cbor2.dumps([1, "text"]), cbor2.dumps([2**32, b"x"]),
    cbor2.dumps([-1, b"x"]), cbor2.dumps([1, b"abc"])[:-1], cbor2.dumps([1, b"abc"]) + b"!",
])
def test_crc32c_update_bad_payload(crc: Provider, payload: bytes) -> None:
    with pytest.raises(CallError) as info:
        crc.invoke("crc32c-update", payload)
    assert info.value.tag == "bad-payload" and "crc32c-update" in info.value.message


def test_crc32c_bad_method(crc: Provider) -> None:
    with pytest.raises(CallError) as info:
        crc.invoke("crc64", b"x")
    assert info.value.tag == "bad-method" and "crc64" in info.value.message


class CoreProvider:
    """A cap's core module driven through its canonical-ABI exports directly
    (what a Rust host's lift/lower does), so a big payload crosses as one
    memcpy instead of wasmtime-py's byte-at-a-time list lifting."""

    def __init__(self, cap: caps.BuiltCap):
        self.store = wasmtime.Store()
        module = wasmtime.Module.from_file(self.store.engine, str(cap.path.parent / "core.wasm"))
        self.exports = wasmtime.Instance(self.store, module, []).exports(self.store)  # no imports at all
        self.exports["_initialize"](self.store)
        self.memory = self.exports["memory"]

    def _put(self, blob: bytes) -> int:
        ptr = self.exports["cabi_realloc"](self.store, 0, 0, 1, len(blob))
        self.memory.write(self.store, blob, ptr)
        return ptr

    def invoke(self, method: str, payload: bytes) -> bytes:
        name = method.encode()
        ret = self.exports[f"{caps.PROVIDER}#invoke"](
            self.store, self._put(name), len(name), self._put(payload), len(payload))
        head = self.memory.read(self.store, ret, ret + 16)
        assert head[0] == 0, f"err case {head[4]}"  # result::ok
        ptr, length = int.from_bytes(head[4:8], "little"), int.from_bytes(head[8:12], "little")
        reply = self.memory.read(self.store, ptr, ptr + length)
        self.exports[f"cabi_post_{caps.PROVIDER}#invoke"](self.store, ret)
        return reply

    @property
    def memory_size(self) -> int:
        return self.memory.data_len(self.store)


def test_crc32c_256_mib_in_about_one_payload_of_memory(built: dict[str, caps.BuiltCap]) -> None:
    size = 256 << 20
    data = bytes(range(256)) * (size // 256)
    core = CoreProvider(built["crc32c"])
    assert core.invoke("crc32c", data) == _le(ref.crc32c(data))
    after_first = core.memory_size
    assert after_first < size + (4 << 20)  # the payload plus a little (libc malloc alone: 2x)
    # Freed blocks are reused, split and merged: later calls need no more memory.
    for n in (size, 3 << 20, 100 << 20, size // 2, size):
        chunk = data[:n]
        assert core.invoke("crc32c", chunk) == _le(ref.crc32c(chunk))
    assert core.memory_size == after_first


def test_cborcalc_echo_of_a_large_byte_string(built: dict[str, caps.BuiltCap]) -> None:
    blob = bytes(range(251)) * ((32 << 20) // 251)
    payload = cbor2.dumps(blob)
    core = CoreProvider(built["cborcalc"])
    assert core.invoke("echo", payload) == payload
    assert core.memory_size < 2 * len(payload) + (4 << 20)  # payload + reply


# -- cborcalc ------------------------------------------------------------------

def _same(a: Any, b: Any) -> bool:
    """Equality that also checks types (1 == 1.0 == True in plain Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


scalars = (st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=True) | st.text(max_size=40)
           | st.binary(max_size=40) | st.booleans() | st.none())
keys = st.integers(-(2**63), 2**64 - 1) | st.text(max_size=10)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6)
                      | st.dictionaries(keys, inner, max_size=6), max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=values)
def test_cborcalc_echo_round_trips(calc: Provider, value: Any) -> None:
    assert _same(calc.call("echo", value), value)


@pytest.mark.parametrize("value", [
    0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
    -1, -24, -25, -256, -257, -(2**32), -(2**63),
    0.0, -0.0, 1.5, 1e300, float("inf"), float("-inf"), "", "é€😀", b"", b"\0" * 1000,
    [1, [2, [3, [4]]]], {"a": {"b": {"c": None}}}, {1: "x", "1": "y"}, cbor2.CBORTag(4711, "tagged"),
    cbor2.undefined,
])
def test_cborcalc_echo_edges(calc: Provider, value: Any) -> None:
    assert calc.call("echo", value) == value


def test_cborcalc_echo_accepts_indefinite_and_half_floats(calc: Provider) -> None:
    assert calc.invoke("echo", b"\x9f\x01\x82\x02\x03\xff") == b"\x82\x01\x82\x02\x03"
    assert calc.invoke("echo", b"\xbf\x61a\x01\xff") == b"\xa1\x61a\x01"
    assert calc.call("echo", 0.5) == 0.5
    assert cbor2.loads(calc.invoke("echo", b"\xf9\x3e\x00")) == 1.5  # float16


def test_cborcalc_methods(calc: Provider) -> None:
    assert _same(calc.call("sum", [1, 2, 3]), 6)
    assert _same(calc.call("sum", [-5, 2]), -3)
    assert _same(calc.call("sum", [1, 2.5]), 3.5)
    assert _same(calc.call("sum", []), 0)
    assert _same(calc.call("sum", [2**64 - 1, 1]), float(2**64))
    assert calc.call("stats", [1, 2, 3.5, -4]) == {"count": 4, "mean": 0.625, "min": -4, "max": 3.5}
    assert calc.call("stats", []) == {"count": 0, "mean": None, "min": None, "max": None}
    assert calc.call("upper", "héllo, world") == "HéLLO, WORLD"
    assert calc.call("describe", {"x": [1, "ab", b"c", 2.0, None, True]}) == {
        "type": "map", "length": 1, "entries": {"x": {
            "type": "array", "length": 6, "items": [
                {"type": "int"}, {"type": "text", "length": 2}, {"type": "bytes", "length": 1},
                {"type": "float"}, {"type": "null"}, {"type": "bool"}]}}}
    assert calc.call("describe", cbor2.CBORTag(4711, "u")) == {
        "type": "tag", "tag": 4711, "value": {"type": "text", "length": 1}}
    merged = calc.call("merge", [{"a": 1, "b": 2}, {}, {"b": [3], 1: 4}])
    assert merged == {"a": 1, "b": [3], 1: 4} and list(merged) == ["a", "b", 1]


@pytest.mark.parametrize("method, payload, message", [
    ("echo", b"", "empty payload"),
    ("echo", b"\x01\x02", "trailing bytes"),
    ("echo", b"\x82\x01", "truncated"),
    ("echo", b"\x5f\x41a\xff", "indefinite-length"),
    ("echo", b"\xf0", "simple value"),
    ("echo", cbor2.dumps(-(2**63) - 1), "below -2^63"),
    ("echo", b"\x81" * 70 + b"\x00", "deeper than 64"),
    ("sum", cbor2.dumps([1, "2"]), "sum expects an array of numbers"),
    ("stats", cbor2.dumps({"a": 1}), "stats expects"),
    ("upper", cbor2.dumps(b"bytes"), "upper expects a text string"),
    ("merge", cbor2.dumps([{}, []]), "merge expects an array of maps"),
])
def test_cborcalc_bad_payload(calc: Provider, method: str, payload: bytes, message: str) -> None:
    with pytest.raises(CallError) as info:
        calc.invoke(method, payload)
    assert info.value.tag == "bad-payload" and message in info.value.message


def test_cborcalc_bad_method(calc: Provider) -> None:
    with pytest.raises(CallError) as info:
        calc.invoke("divide", cbor2.dumps([1, 0]))
    assert (info.value.tag, info.value.message) == ("bad-method", "unknown method: divide")


# -- shims, run the way the guest runs them --------------------------------------

def _load_shim(component: Path, provider: Provider) -> dict[str, Any]:
    """Executes the shim like pylon_guest.dynlink does: a module whose ``cap`` is the cap."""

    class Cap:
        def invoke(self, method: str, payload: bytes = b"") -> bytes:
            return provider.invoke(method, payload)

        def call(self, method: str, *args: Any) -> Any:
            payload = cbor2.dumps(args[0] if len(args) == 1 else list(args) if args else None)
            return cbor2.loads(self.invoke(method, payload))

    source = custom_section(component.read_bytes(), caps.SHIM_SECTION)
    assert source is not None
    namespace: dict[str, Any] = {"__name__": "pylon_guest.caps.shim", "cap": Cap()}
    exec(compile(source.decode(), f"<shim {component.name}>", "exec"), namespace)
    return namespace


def test_crc32c_shim(built: dict[str, caps.BuiltCap], crc: Provider) -> None:
    shim = _load_shim(built["crc32c"].path, crc)
    assert shim["crc32c"](b"123456789") == 0xE3069283
    assert shim["crc32c"](bytearray(b"6789"), shim["crc32c"](b"12345")) == 0xE3069283
    with pytest.raises(ValueError):
        shim["crc32c"](b"x", -1)


def test_cborcalc_shim(built: dict[str, caps.BuiltCap], calc: Provider) -> None:
    shim = _load_shim(built["cborcalc"].path, calc)
    assert shim["echo"]({"k": [1, 2.5]}) == {"k": [1, 2.5]}
    assert shim["sum"]((1, 2, 3)) == 6
    assert shim["stats"]([2, 4])["mean"] == 3.0
    assert shim["upper"]("abc") == "ABC"
    assert shim["describe"](b"xy") == {"type": "bytes", "length": 2}
    assert shim["merge"]({"a": 1}, {"a": 2, "b": 3}) == {"a": 2, "b": 3}


# -- misbehave (the host's limit tests use it; here only that it misbehaves) -------

def test_misbehave(built: dict[str, caps.BuiltCap]) -> None:
    path = built["misbehave"].path
    p = Provider(path)
    assert p.invoke("echo", b"abc") == b"abc"
    assert p.invoke("echo", b"") == b""
    with pytest.raises(wasmtime.WasmtimeError):
        Provider(path).invoke("trap")
    with pytest.raises(wasmtime.WasmtimeError):
        Provider(path, fuel=5_000_000).invoke("loop")
    got = int.from_bytes(Provider(path, memory=32 << 20).invoke("hog"), "little")
    assert 0 < got <= 32 << 20
    with pytest.raises(wasmtime.WasmtimeError):
        Provider(path, memory=32 << 20).invoke("hog", b"trap")
    with pytest.raises(CallError, match="bad-method"):
        p.invoke("explode")
