"""The zstd cap's dynlink face, generated from wit/caps/zstd.wit, through the real engine.

caps/zstd declares its interface once (``[interface]``); ``composectl cap
build`` generates the C dispatch over the same embedded.c the embedded face
uses, and the Python proxy shipped as the cap's ``pylon:shim``
(docs/cap-interface.md). ``pylon_guest.zstd`` calls that proxy when it runs
over dynlink, so these tests drive the guest module itself: on the host,
over the real component in real wasmtime (only the guest's transport,
``pylon_guest.dynlink.Cap.invoke``, is a stand-in that hands the proxy's
bytes to the engine's provider), and in the real stock guest on both
backends.

Frames go both ways against the ``zstandard`` package. Corrupt input is
:class:`CorruptFrameError`, output past the caller's limit is
:class:`OutputTooLargeError`, and neither hurts the instance. The host's
limits (the cap's memory, its handle table, the payload size) are the
host's ``limit-exceeded``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
import textwrap
import tomllib
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Pylon
from pylon.build import caps, embedded
from pylon.build.manifest import load_manifest
from pylon.engine import ProviderSpec, get_engine
from pylon.errors import CapError

REPO = Path(__file__).resolve().parents[1]
CAP_DIR = REPO / "caps" / "zstd"
GUEST_ZSTD = REPO / "guest" / "python" / "pylon_guest" / "zstd.py"
MiB = 1 << 20


@pytest.fixture(scope="module")
def built() -> caps.BuiltCap:
    return caps.build_cap(CAP_DIR)


def load(built: caps.BuiltCap, memory: int = 512 * MiB, max_handles: int = 4096) -> Any:
    """A fresh instance; the engine has sent it ``$pylon/init``."""
    return get_engine().load_provider(ProviderSpec(
        name="zstd", path=str(built.path), digest=built.digest, memory_bytes=memory,
        timeout_ms=10000, max_payload_bytes=64 * MiB, max_handles=max_handles))


# -- the guest's pylon_guest.zstd on the host, over the real cap ------------------------

class DynlinkError(Exception):
    pass


#: The guest's exception classes (pylon_guest.dynlink), by WIT error case.
ERRORS = {kind: type(name, (DynlinkError,), {}) for kind, name in [
    ("bad-payload", "BadPayload"), ("bad-method", "BadMethod"), ("limit-exceeded", "CapLimitExceeded"),
    ("trapped", "CapTrapped"), ("not-found", "CapNotFound"), ("denied", "CapDenied")]}


class HostCap:
    """Stands in for pylon_guest.dynlink.Cap over an engine provider: invoke()
    raises the guest's exception for each error case, and ``api`` is the
    cap's own shim (the generated proxy, read from the component's
    ``pylon:shim`` section) run as Cap.api runs it."""

    def __init__(self, provider: Any):
        self.provider = provider
        self._api: types.ModuleType | None = None

    def invoke(self, method: str, payload: bytes = b"") -> bytes:
        try:
            return bytes(self.provider.invoke(method, payload))
        except CapError as exc:
            raise ERRORS.get(exc.kind, DynlinkError)(str(exc)) from None

    @property
    def api(self) -> types.ModuleType:
        if self._api is None:
            source = self.provider.shim
            assert source, "the built cap has no pylon:shim section"
            module = types.ModuleType("pylon_guest.caps.zstd")
            module.cap = self  # type: ignore[attr-defined]
            sys.modules[module.__name__] = module  # as Cap.api does: dataclasses look it up
            exec(compile(source, "<cap zstd shim>", "exec", dont_inherit=True), module.__dict__)
            self._api = module
        return self._api


def guest_module(provider: Any) -> types.ModuleType:
    """guest/python/pylon_guest/zstd.py, loaded as in a guest without the
    embedded import: its backend is ``dynlink.load("zstd").api``. The caller
    installs the stand-in ``pylon_guest.dynlink`` (see :func:`dynlink_over`)."""
    spec = importlib.util.spec_from_file_location("guest_pylon_zstd", GUEST_ZSTD)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def dynlink_over(mp: pytest.MonkeyPatch, provider: Any) -> HostCap:
    """Installs a ``pylon_guest.dynlink`` whose ``load("zstd")`` is ``provider``."""
    cap = HostCap(provider)
    fake = types.ModuleType("pylon_guest.dynlink")
    for cls in (DynlinkError, *ERRORS.values()):
        setattr(fake, cls.__name__, cls)

    def load_cap(name: str) -> HostCap:
        if name != "zstd":
            raise ERRORS["not-found"](f"no cap {name!r} in this test")
        return cap

    fake.load = load_cap  # type: ignore[attr-defined]
    package = types.ModuleType("pylon_guest")
    package.dynlink = fake  # type: ignore[attr-defined]
    mp.setitem(sys.modules, "pylon_guest", package)
    mp.setitem(sys.modules, "pylon_guest.dynlink", fake)
    mp.delitem(sys.modules, "pylon_guest.caps.zstd", raising=False)
    return cap


@pytest.fixture(scope="module")
def zp(built: caps.BuiltCap) -> Any:
    return load(built)


@pytest.fixture(scope="module")
def z(zp: Any) -> Iterator[types.ModuleType]:
    """pylon_guest.zstd over the shared instance, its backend resolved."""
    with pytest.MonkeyPatch.context() as mp:
        dynlink_over(mp, zp)
        module = guest_module(zp)
        assert module.backend().name == "dynlink"
        yield module


def ref_decompress(frame: bytes) -> bytes:
    """zstandard's decompression of every frame in `frame`."""
    return zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(frame) \
        if frame else b""


def sample(n: int, seed: int = 1) -> bytes:
    """Compressible, but not trivially: random words from a small vocabulary."""
    rnd = random.Random(seed)
    words = [rnd.randbytes(rnd.randrange(2, 12)) for _ in range(200)]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words)
    return bytes(out[:n])


# -- the build and the manifest -------------------------------------------------

def test_vendor_pin_matches_the_embedded_build() -> None:
    vendor = tomllib.loads((CAP_DIR / "cap.toml").read_text())["vendor"]["zstd"]
    src = embedded.ZSTD_SOURCE
    assert vendor["pypi"] == f"{src.package}=={src.version}"
    assert vendor["sha256"] == src.sha256


def test_both_faces_build_one_c_implementation_of_one_interface() -> None:
    m = load_manifest(CAP_DIR)
    assert m.interface is not None and m.dynlink is not None and m.embedded is not None
    assert m.interface.wit == REPO / "wit" / "caps" / "zstd.wit"
    assert (m.interface.world, m.interface.export) == ("pylon:zstd/embedded@0.1.0", "pylon:zstd/zstd@0.1.0")
    assert set(m.dynlink.sources) == set(m.embedded.sources) == {"src/zstd_core.c", "embedded.c"}
    assert m.dynlink.vendor_sources == m.embedded.vendor_sources == ("@zstd/zstd.c",)
    assert not (CAP_DIR / "dynlink.c").exists()  # no hand-written twin


def test_find_caps_lists_zstd() -> None:
    assert CAP_DIR in caps.find_caps(REPO / "caps")


def test_component_imports_nothing_and_ships_its_proxy(built: caps.BuiltCap, zp: Any) -> None:
    imports, exports = caps.component_world(built.path)
    assert exports == {caps.PROVIDER}
    assert imports <= caps.ALLOWED_IMPORTS
    # No WASI: embedded.c, the core and libzstd need none (the build refuses
    # a core module with imports; this is its output).
    assert caps.core_imports(built.path.parent / "core.wasm") == []
    from pylon.build.capgen.py_proxy import generate_proxy
    from pylon.build.capgen.wit_model import load_interface

    iface = load_interface(REPO / "wit" / "caps" / "zstd.wit", "pylon:zstd/zstd@0.1.0")
    assert zp.shim == generate_proxy(iface)


# -- one-shot round trips against zstandard ------------------------------------

def test_level_range(z: types.ModuleType) -> None:
    lo, hi = z.backend().api.level_range()
    assert lo < 0 and hi == zstandard.MAX_COMPRESSION_LEVEL


@pytest.mark.parametrize("size", [0, 1, 100, 65536, 65537, 3 * MiB + 7])
@pytest.mark.parametrize("level", [-5, 0, 1, 3, 19])
def test_compress_reads_with_zstandard(z: types.ModuleType, size: int, level: int) -> None:
    data = sample(size, seed=size)
    frame = z.compress(data, level)
    assert zstandard.get_frame_parameters(frame).content_size == size  # recorded in the header
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    assert z.decompress(frame, max_output=size) == data


@pytest.mark.parametrize("size", [0, 1, 1000, MiB + 3])
@pytest.mark.parametrize("content_size", [True, False])
@pytest.mark.parametrize("checksum", [True, False])
def test_decompress_reads_zstandard_frames(z: types.ModuleType, size: int, content_size: bool,
                                           checksum: bool) -> None:
    data = sample(size, seed=size + 1)
    frame = zstandard.ZstdCompressor(level=3, write_content_size=content_size,
                                     write_checksum=checksum).compress(data)
    assert z.decompress(frame, max_output=(1 << 64) - 1) == data


@pytest.mark.parametrize("size", [65536, 131072, MiB, 4 * MiB])
def test_output_that_exactly_fills_the_buffer(z: types.ModuleType, size: int) -> None:
    # Without a declared size, output grows in power-of-two steps from 64 KiB;
    # a frame ending exactly at a step is complete, not truncated.
    data = sample(size, seed=size)
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    assert z.decompress(frame, max_output=1 << 70) == data  # a limit past u64 is clamped
    assert z.decompress(frame * 2) == data * 2
    with z.ZstdDecompressor(max_output=2 * size) as d:
        assert d.decompress(frame) == data
        assert d.eof


def test_decompress_concatenated_frames(z: types.ModuleType) -> None:
    parts = [sample(n, seed=n) for n in (10, 0, 70000, 5)]
    frames = b"".join(zstandard.ZstdCompressor(level=1).compress(p) for p in parts)
    frames += zstandard.ZstdCompressor(write_content_size=False).compress(b"tail")
    assert z.decompress(frames, max_output=1 << 30) == b"".join(parts) + b"tail"


def test_streamed_zstandard_frame(z: types.ModuleType) -> None:
    data = sample(2 * MiB + 1, seed=9)
    cobj = zstandard.ZstdCompressor(level=5).compressobj()
    frame = b"".join(cobj.compress(data[i:i + 100000]) for i in range(0, len(data), 100000)) + cobj.flush()
    assert zstandard.get_frame_parameters(frame).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert z.decompress(frame, max_output=len(data)) == data


def test_bytes_like_arguments_and_bad_types(z: types.ModuleType) -> None:
    data = sample(5000, seed=2)
    frame = z.compress(bytearray(data))
    assert z.decompress(memoryview(frame)) == data
    with pytest.raises(TypeError):
        z.compress("text")
    with pytest.raises(ValueError, match="out of range"):
        z.compress(b"x", 1 << 40)
    with pytest.raises(ValueError, match="max_output"):
        z.decompress(frame, max_output=-1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=5000), level=st.integers(-20, 22))
def test_round_trip_property(z: types.ModuleType, data: bytes, level: int) -> None:
    frame = z.compress(data, level)
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    ref = zstandard.ZstdCompressor(level=max(level, 1)).compress(data)
    assert z.decompress(ref, max_output=len(data)) == data


def test_level_is_clamped_like_the_embedded_face(z: types.ModuleType) -> None:
    # zstd clamps levels to its range rather than refusing them.
    for level in (1000, -(1 << 31)):
        assert zstandard.ZstdDecompressor().decompress(z.compress(b"abc" * 100, level)) == b"abc" * 100


# -- the carried patch: 64-bit bit containers on wasm32 ---------------------------
# caps/zstd/patches/ changes how often zstd's decoders refill their bitstreams
# (docs/patches.md). Decoding is deterministic, so every frame must come out
# exactly as zstandard (native, 64-bit) decodes it, whichever paths it takes:
# each literal encoding, long offsets, long-distance matching.

def test_the_bit_container_patch_is_applied() -> None:
    vendor = load_manifest(CAP_DIR).vendors["zstd"]
    assert [p.name for p in vendor.patches] == ["zstd-1.5.7-wasm32-bit-container.patch"]
    assert vendor.edits and vendor.tree_key == f"{vendor.sha256}+{vendor.edits}"
    source = (caps.fetch_vendor(vendor) / "zstd.c").read_text()
    assert "typedef U64 BitContainerType;" in source and "BIT_CONTAINER_64" in source


def _shapes() -> dict[str, bytes]:
    rnd = random.Random(5)
    text = sample(MiB, seed=11)
    return {
        "words": text,
        "random": rnd.randbytes(MiB // 2),  # raw literals and blocks
        "zeros": bytes(2 * MiB),  # RLE
        "two letters": bytes(rnd.choice(b"ab") for _ in range(MiB // 2)),  # 1-bit Huffman codes
        "skewed": bytes(min(255, int(rnd.expovariate(0.3))) for _ in range(MiB // 2)),
        "mixed": b"".join(rnd.choice([rnd.randbytes(rnd.randrange(1, 300)), text[rnd.randrange(MiB):][:3000],
                                      bytes(rnd.randrange(1, 900))]) for _ in range(1500)),
        # A repeat 600 KiB back: offsets past a 32-bit container's single read.
        "far repeats": (rnd.randbytes(600 << 10) + text[:300 << 10]) * 3,
    }


SHAPES = _shapes()


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("params", ["-5", "1", "3", "9", "19", "19 long"])
def test_frames_of_every_shape_decode_as_zstandard_does(z: types.ModuleType, shape: str, params: str) -> None:
    data = SHAPES[shape]
    level = int(params.split()[0])
    if params.endswith("long"):
        cparams = zstandard.ZstdCompressionParameters.from_level(level, window_log=27, enable_ldm=True)
        compressor = zstandard.ZstdCompressor(compression_params=cparams)
    else:
        compressor = zstandard.ZstdCompressor(level=level)
    frame = compressor.compress(data)
    assert z.decompress(frame, max_output=len(data)) == data
    # And the patched encoder's frames read back natively.
    assert zstandard.ZstdDecompressor().decompress(z.compress(data, level)) == data


ORIGINALS = [sample(300_000, seed=4), SHAPES["mixed"][:400_000], SHAPES["skewed"][:200_000]]
FRAMES = [zstandard.ZstdCompressor(level=level, write_checksum=True).compress(data)
          for level, data in zip((3, 19, 1), ORIGINALS, strict=True)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, len(FRAMES) - 1),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4))
def test_damaged_frames_are_refused_cleanly(z: types.ModuleType, which: int, flips: list[tuple[float, int]]) -> None:
    """A hostile frame may steer the decoder anywhere: the patched one must
    refuse it as corrupt or too large (no trap, no hang, the instance fine) or,
    where the damage changed nothing that matters, decode the original: the
    frames carry checksums, so wrong output cannot pass. (Without checksums,
    damaged Huffman streams decode to different garbage in different decoder
    loops, native ones included, so there is no one right output to compare.)"""
    frame = bytearray(FRAMES[which])
    for at, xor in flips:
        frame[6 + int(at * (len(frame) - 6))] ^= xor  # past the magic and header byte
    try:
        out = z.decompress(bytes(frame), max_output=4 * MiB)
    except (z.CorruptFrameError, z.OutputTooLargeError):  # the latter: a damaged declared size
        return
    assert out == ORIGINALS[which]


# -- corrupt input ----------------------------------------------------------------

def test_corrupt_frames_raise_corrupt_frame_error(z: types.ModuleType) -> None:
    data = sample(200000, seed=3)
    frame = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)
    mid = len(frame) // 2
    bad = {
        "garbage": os.urandom(1000),
        "bad magic": b"\x00" + frame[1:],
        "truncated": frame[:-10],
        "header only": frame[:6],
        "flipped": frame[:mid] + bytes([frame[mid] ^ 0xFF]) + frame[mid + 1:],
        "checksum": frame[:-1] + bytes([frame[-1] ^ 1]),
        "trailing garbage": frame + b"\x01\x02\x03\x04\x05\x06",
    }
    for what, blob in bad.items():
        with pytest.raises(z.CorruptFrameError, match=r"^corrupt zstd data: \S") as info:
            z.decompress(blob, max_output=1 << 30)
        assert isinstance(info.value, z.ZstdError), what
    # The instance is still alive and well.
    assert z.decompress(frame, max_output=len(data)) == data


def test_empty_input_is_empty_output(z: types.ModuleType) -> None:
    assert z.decompress(b"", max_output=0) == b""


# -- max_output -------------------------------------------------------------------

def bomb(size: int, *, content_size: bool) -> bytes:
    """A small frame of `size` zero bytes."""
    cobj = zstandard.ZstdCompressor(level=1, write_content_size=content_size).compressobj(
        size=size if content_size else -1)
    chunk = bytes(MiB)
    parts = [cobj.compress(chunk) for _ in range(size // MiB)]
    return b"".join(parts) + cobj.flush()


@pytest.mark.parametrize("content_size", [True, False])
def test_limit_exact_and_one_under(z: types.ModuleType, content_size: bool) -> None:
    data = sample(300000, seed=4)
    frame = zstandard.ZstdCompressor(write_content_size=content_size).compress(data)
    assert z.decompress(frame, max_output=len(data)) == data
    for limit in (len(data) - 1, 0):
        with pytest.raises(z.OutputTooLargeError) as info:
            z.decompress(frame, max_output=limit)
        assert info.value.limit == limit
        assert str(info.value).startswith(f"decompressed output would exceed the limit of {limit} bytes")


@pytest.mark.parametrize("content_size", [True, False])
def test_bomb_is_refused_and_the_cap_survives(z: types.ModuleType, content_size: bool) -> None:
    frame = bomb(1 << 30, content_size=content_size)  # 1 GiB of zeros
    assert len(frame) < 100 * 1024
    with pytest.raises(z.OutputTooLargeError) as info:
        z.decompress(frame, max_output=16 * MiB)
    assert info.value.limit == 16 * MiB
    # The guest's default limit (256 MiB) holds inside a 512 MiB instance.
    with pytest.raises(z.OutputTooLargeError) as info:
        z.decompress(frame)
    assert info.value.limit == z.DEFAULT_MAX_OUTPUT
    assert z.decompress(zstandard.ZstdCompressor().compress(b"fine"), max_output=4) == b"fine"


def test_streaming_limit_counts_every_chunk(z: types.ModuleType) -> None:
    frame = bomb(8 * MiB, content_size=False)
    d = z.ZstdDecompressor(max_output=5 * MiB)
    got = 0
    with pytest.raises(z.OutputTooLargeError) as info:
        for i in range(0, len(frame), 100):
            got += len(d.decompress(frame[i:i + 100]))
    assert info.value.limit == 5 * MiB
    assert got <= 5 * MiB
    d.close()


# -- streams are handles --------------------------------------------------------------

def test_compressor_stream(z: types.ModuleType) -> None:
    data = sample(3 * MiB, seed=5)
    c = z.ZstdCompressor(level=6)
    out = b"".join(c.compress(data[i:i + 65536]) for i in range(0, MiB, 65536))
    out += c.flush(c.FLUSH_BLOCK)
    # After a block flush everything so far decompresses (the frame is still open).
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == data[:MiB]
    out += c.compress(data[MiB:]) + c.flush()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == data
    # After the frame ends the same compressor starts a new one.
    second = c.compress(b"again", c.FLUSH_FRAME)
    assert ref_decompress(out + second) == data + b"again"
    assert c.flush(c.CONTINUE) == b""
    with pytest.raises(ValueError, match="unknown flush mode"):
        c.flush(7)
    c.close()
    c.close()  # idempotent
    with pytest.raises(ValueError, match="ZstdCompressor is closed"):
        c.flush()


def test_decompressor_stream(z: types.ModuleType) -> None:
    data = sample(2 * MiB, seed=6)
    frames = zstandard.ZstdCompressor(write_content_size=False).compress(data) * 2
    with z.ZstdDecompressor(max_output=4 * MiB) as d:
        assert d.eof  # nothing fed yet
        out = b""
        for i in range(0, len(frames), 4096):
            out += d.decompress(frames[i:i + 4096])
            if i + 4096 < len(frames) // 2:
                assert not d.eof
        assert out == data * 2
        assert d.eof
        with pytest.raises(z.CorruptFrameError):
            d.decompress(b"not zstd data")
    with pytest.raises(ValueError, match="closed"):
        d.decompress(b"")


def test_streams_are_generated_handles(z: types.ModuleType, zp: Any) -> None:
    # Each stream holds a proxy object whose token is the cap's 16-byte
    # handle; the cap checks the token's resource type and liveness on
    # every use (docs/cap-interface.md, "Handles").
    c, d = z.ZstdCompressor(), z.ZstdDecompressor(max_output=100)
    ct, dt = c._h._h, d._h._h
    assert len(ct) == len(dt) == 17 and ct[0] == dt[0] == 0x50 and ct != dt
    with pytest.raises(CapError, match="not a live compressor handle") as info:
        zp.invoke("[method]compressor.flush", b"\x81" + dt)
    assert info.value.kind == "bad-payload"
    with pytest.raises(CapError, match="not a live decompressor handle"):
        zp.invoke("[method]decompressor.at-frame-end", b"\x81" + ct)
    with pytest.raises(CapError, match="not a live compressor handle"):
        zp.invoke("[method]compressor.compress", b"\x82\x50" + bytes(16) + b"\x41x")
    c.close()
    # A closed handle is dead in the cap, and its slot's next owner gets a new tag.
    with pytest.raises(CapError, match="not a live compressor handle"):
        zp.invoke("[drop]compressor", b"\x81" + ct)
    again = z.ZstdCompressor()
    assert again._h._h != ct
    again.close()
    d.close()


def test_many_streams_then_dropped(z: types.ModuleType) -> None:
    cs = [z.ZstdCompressor(level=1) for _ in range(40)]
    frames = [c.compress(b"%d" % i, c.FLUSH_FRAME) for i, c in enumerate(cs)]
    assert [ref_decompress(f) for f in frames] == [b"%d" % i for i in range(40)]
    for c in cs:
        c.close()


# -- the host's limits ---------------------------------------------------------------

def test_the_handle_table_limit_is_limit_exceeded(built: caps.BuiltCap) -> None:
    with pytest.MonkeyPatch.context() as mp:
        provider = load(built, memory=64 * MiB, max_handles=8)
        dynlink_over(mp, provider)
        zm = guest_module(provider)
        held = [zm.ZstdCompressor() for _ in range(8)]
        with pytest.raises(ERRORS["limit-exceeded"], match="8"):
            zm.ZstdDecompressor()
        held.pop().close()
        with zm.ZstdDecompressor(max_output=10) as d:  # a slot is free again
            assert d.eof
        for c in held:
            c.close()


# 96 MiB: the request, the callee's copy of the argument, zstd's output and a
# reply buffer sized once (pylon_wr_reserve) fit; a reply buffer that doubled
# from 256 bytes did not.
@pytest.mark.parametrize("memory_mib", [128, 96])
def test_sixteen_mib_both_ways_in_bounded_memory(built: caps.BuiltCap, memory_mib: int) -> None:
    # A 16 MiB request, the argument the face decodes from it, zstd's output
    # and the encoded reply, plus zstd's context; and again call after call:
    # large blocks are reused, not leaked.
    with pytest.MonkeyPatch.context() as mp:
        provider = load(built, memory=memory_mib * MiB)
        dynlink_over(mp, provider)
        zm = guest_module(provider)
        for seed in range(4):
            data = os.urandom(16 * MiB) if seed % 2 else sample(16 * MiB, seed=seed)
            frame = zm.compress(data, 3)
            assert zstandard.ZstdDecompressor().decompress(frame) == data
            ref = zstandard.ZstdCompressor(level=3).compress(data)
            assert zm.decompress(ref, max_output=16 * MiB) == data


@pytest.mark.parametrize(("memory_mib", "output_mib"), [(32, 64), (64, 40)])
def test_output_the_instance_cannot_hold_fails_and_the_cap_lives(built: caps.BuiltCap, memory_mib: int,
                                                                 output_mib: int) -> None:
    # max_output is the caller's limit; the instance's memory is the host's.
    # Past it the call fails as zstd's "out of memory" (its output buffer)
    # or the face's limit-exceeded (the reply), never as OutputTooLargeError
    # and never a trap: the next call works.
    with pytest.MonkeyPatch.context() as mp:
        provider = load(built, memory=memory_mib * MiB)
        dynlink_over(mp, provider)
        zm = guest_module(provider)
        with pytest.raises((zm.ZstdError, ERRORS["limit-exceeded"]), match="out of memory") as info:
            zm.decompress(bomb(output_mib * MiB, content_size=False), max_output=1 << 30)
        assert not isinstance(info.value, zm.OutputTooLargeError)
        assert zm.decompress(zm.compress(b"still here")) == b"still here"


# -- malformed calls at the provider ---------------------------------------------------

@pytest.mark.parametrize(("method", "payload"), [
    ("compress", cbor2.dumps(b"just bytes")),
    ("compress", cbor2.dumps([b"x", 1 << 40])),
    ("compress", cbor2.dumps([b"x", 3, 4])),
    ("compress", cbor2.dumps([b"x", 3]) + b"\x00"),
    ("compress", cbor2.dumps(["x", 3])),
    ("decompress", cbor2.dumps([b"x", -1])),
    ("decompress", b"\x82\x45ab"),  # byte string longer than the payload
    ("decompress", b""),
    ("[constructor]compressor", cbor2.dumps(["3"])),
    ("[constructor]decompressor", cbor2.dumps([-1])),
    ("[method]compressor.compress", cbor2.dumps([1, b"x"])),
    ("[method]decompressor.at-frame-end", cbor2.dumps([bytes(16), 2])),
    ("[drop]decompressor", cbor2.dumps([bytes(16)])),
])
def test_wrong_shapes_are_bad_payload(zp: Any, method: str, payload: bytes) -> None:
    with pytest.raises(CapError) as info:
        zp.invoke(method, payload)
    assert info.value.kind == "bad-payload", (info.value.kind, str(info.value))
    assert method in str(info.value)


@pytest.mark.parametrize("method", ["compress-all", "compressor.new", "decompressor.drop"])
def test_unknown_and_old_method_names(zp: Any, method: str) -> None:
    # The hand-written face's names (compressor.new, ...) are gone.
    with pytest.raises(CapError, match=method) as info:
        zp.invoke(method, cbor2.dumps([]))
    assert info.value.kind == "bad-method"


# -- in the real guest, on both backends ------------------------------------------------

GUEST_SCRIPT = """
import json, sys
from pylon_guest import zstd
zstd.use_backend(sys.argv[1])
out = {"backend": zstd.backend().name}
data = open("plain", "rb").read()
open("guest.zst", "wb").write(zstd.compress(data, 9))
out["native"] = zstd.decompress(open("native.zst", "rb").read()) == data
errors = []
for call in (lambda: zstd.decompress(b"\\x28\\xb5\\x2f\\xfd garbage"),
             lambda: zstd.decompress(open("bomb.zst", "rb").read(), max_output=1 << 20),
             lambda: zstd.compress("text")):
    try:
        call()
    except zstd.OutputTooLargeError as e:
        errors.append(["OutputTooLargeError", e.limit])
    except zstd.ZstdError as e:
        errors.append([type(e).__name__, str(e).split(":")[0]])
    except TypeError as e:
        errors.append(["TypeError"])
out["errors"] = errors
c = zstd.ZstdCompressor(level=5)
stream = c.compress(data[:1000]) + c.compress(data[1000:2000], c.FLUSH_BLOCK)
stream += c.compress(data[2000:]) + c.flush()
c.close()
with zstd.ZstdDecompressor(max_output=len(data)) as d:
    out["eof"] = [d.eof]
    got = d.decompress(stream[:100])
    out["eof"].append(d.eof)
    got += d.decompress(stream[100:])
    out["eof"].append(d.eof)
    out["stream"] = got == data
    try:
        d.decompress(zstd.compress(b"one byte too many"))
    except zstd.OutputTooLargeError as e:
        out["stream_limit"] = e.limit
try:
    d.decompress(b"")
except ValueError as e:
    out["closed"] = str(e)
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend", ["embedded", "dynlink"])
def test_pylon_guest_zstd_in_the_guest(pylon: Pylon, tmp_path: Path, backend: str) -> None:
    # The stock guest embeds zstd; the default plan (composectl setup) names
    # the cap's generated dynlink face "zstd": one API over both.
    data = random.Random(7).randbytes(1 << 20) + b"pylon" * 200_000
    (tmp_path / "plain").write_bytes(data)
    (tmp_path / "native.zst").write_bytes(zstandard.ZstdCompressor(level=5).compress(data))
    (tmp_path / "bomb.zst").write_bytes(zstandard.ZstdCompressor().compress(bytes(64 << 20)))
    (tmp_path / "z.py").write_text(GUEST_SCRIPT)
    result = pylon.composectl("run", "--dir", f"{tmp_path}:rw", str(tmp_path / "z.py"), backend)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == {
        "backend": backend,
        "native": True,
        "errors": [["CorruptFrameError", "corrupt zstd data"], ["OutputTooLargeError", 1 << 20], ["TypeError"]],
        "eof": [True, False, True],
        "stream": True,
        "stream_limit": len(data),
        "closed": "ZstdDecompressor is closed",
    }
    assert zstandard.ZstdDecompressor().decompress((tmp_path / "guest.zst").read_bytes(),
                                                   max_output_size=len(data)) == data


def test_the_cap_memory_limit_in_the_guest(pylon: Pylon, tmp_path: Path) -> None:
    # The plan's memory-mb for the cap bounds what a dynlink decompression can
    # hold whatever max_output says: zstd runs out of memory (ZstdError, not
    # OutputTooLargeError) and the cap, and the run, go on.
    doc = json.loads(pylon.default_plan.read_text())
    doc["caps"]["zstd"]["limits"] = {"memory-mb": 32}
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(doc))
    (tmp_path / "bomb.zst").write_bytes(zstandard.ZstdCompressor().compress(bytes(64 << 20)))
    code = textwrap.dedent(f"""
        from pylon_guest import zstd
        zstd.use_backend("dynlink")
        frame = open({str(tmp_path / "bomb.zst")!r}, "rb").read()
        try:
            zstd.decompress(frame, max_output=1 << 30)
        except zstd.ZstdError as e:
            print(type(e).__name__, str(e).replace(" ", "-"))
        print(zstd.decompress(zstd.compress(b"alive")).decode())
    """)
    result = pylon.composectl("run", "--plan", str(plan), "--dir", str(tmp_path), "-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["ZstdError", "out-of-memory", "alive"]
