"""The zstd cap's dynlink face (caps/zstd/dynlink.c), through the real engine.

Frames go both ways against the `zstandard` package: what the cap writes must
decompress with zstandard and what zstandard writes must decompress with the
cap. Corrupt input is `bad-payload`, output past the caller's limit is
`limit-exceeded`, and neither kills the instance. The last part runs the
guest's own `pylon_guest.zstd` module (its dynlink fallback) on the host, with
`pylon_guest.dynlink` replaced by a stand-in over the same provider, so the
method names and CBOR shapes the guest sends are the ones tested here.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tomllib
import types
from pathlib import Path
from typing import Any

import cbor2
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylon.build import caps, embedded
from pylon.engine import ProviderSpec, get_engine
from pylon.errors import CapError

REPO = Path(__file__).resolve().parents[1]
CAP_DIR = REPO / "caps" / "zstd"
MiB = 1 << 20


@pytest.fixture(scope="module")
def built() -> caps.BuiltCap:
    return caps.build_cap(CAP_DIR)


def load(built: caps.BuiltCap, memory: int = 512 * MiB) -> Any:
    return get_engine().load_provider(ProviderSpec(
        name="zstd", path=str(built.path), digest=built.digest, memory_bytes=memory,
        timeout_ms=10000, max_payload_bytes=64 * MiB))


@pytest.fixture(scope="module")
def zp(built: caps.BuiltCap) -> Any:
    return load(built)


def call(p: Any, method: str, arg: Any) -> Any:
    return cbor2.loads(p.invoke(method, cbor2.dumps(arg)))


def ok(p: Any, method: str, arg: Any) -> Any:
    reply = call(p, method, arg)
    assert isinstance(reply, dict) and set(reply) == {"ok"}, reply
    return reply["ok"]


def fails(p: Any, method: str, arg: Any, kind: str, match: str | None = None) -> str:
    with pytest.raises(CapError, match=match) as info:
        p.invoke(method, arg if isinstance(arg, bytes) else cbor2.dumps(arg))
    assert info.value.kind == kind, (info.value.kind, str(info.value))
    return str(info.value)


def ref_decompress(frame: bytes) -> bytes:
    """zstandard's decompression of every frame in `frame`."""
    return zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(frame) \
        if frame else b""


def sample(n: int, seed: int = 1) -> bytes:
    """Compressible, but not trivially: random words from a small vocabulary."""
    rnd = __import__("random").Random(seed)
    words = [os.urandom(rnd.randrange(2, 12)) for _ in range(200)]
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


def test_find_caps_lists_zstd() -> None:
    assert CAP_DIR in caps.find_caps(REPO / "caps")


def test_component_imports_nothing(built: caps.BuiltCap) -> None:
    imports, exports = caps.component_world(built.path)
    assert exports == {caps.PROVIDER}
    assert imports <= caps.ALLOWED_IMPORTS
    assert caps.core_imports(built.path.parent / "core.wasm") == []


# -- one-shot round trips against zstandard ------------------------------------

def test_level_range(zp: Any) -> None:
    lo, hi = call(zp, "level-range", None)
    assert lo < 0 and hi == zstandard.MAX_COMPRESSION_LEVEL


@pytest.mark.parametrize("size", [0, 1, 100, 65536, 65537, 3 * MiB + 7])
@pytest.mark.parametrize("level", [-5, 0, 1, 3, 19])
def test_compress_reads_with_zstandard(zp: Any, size: int, level: int) -> None:
    data = sample(size, seed=size)
    frame = ok(zp, "compress", [data, level])
    params = zstandard.get_frame_parameters(frame)
    assert params.content_size == size  # recorded in the header
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    assert ok(zp, "decompress", [frame, size]) == data


@pytest.mark.parametrize("size", [0, 1, 1000, MiB + 3])
@pytest.mark.parametrize("content_size", [True, False])
@pytest.mark.parametrize("checksum", [True, False])
def test_decompress_reads_zstandard_frames(zp: Any, size: int, content_size: bool, checksum: bool) -> None:
    data = sample(size, seed=size + 1)
    frame = zstandard.ZstdCompressor(level=3, write_content_size=content_size,
                                     write_checksum=checksum).compress(data)
    assert ok(zp, "decompress", [frame, (1 << 64) - 1]) == data


@pytest.mark.parametrize("size", [65536, 131072, MiB, 4 * MiB])
def test_output_that_exactly_fills_the_buffer(zp: Any, size: int) -> None:
    # Without a declared size, output grows in power-of-two steps from 64 KiB;
    # a frame ending exactly at a step is complete, not truncated.
    data = sample(size, seed=size)
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    assert ok(zp, "decompress", [frame, (1 << 64) - 1]) == data
    assert ok(zp, "decompress", [frame * 2, (1 << 64) - 1]) == data * 2
    h = call(zp, "decompressor.new", 2 * size)
    assert ok(zp, "decompressor.decompress", [h, frame]) == data
    assert call(zp, "decompressor.at-frame-end", h) is True
    call(zp, "decompressor.drop", h)


def test_decompress_concatenated_frames(zp: Any) -> None:
    parts = [sample(n, seed=n) for n in (10, 0, 70000, 5)]
    frames = b"".join(zstandard.ZstdCompressor(level=1).compress(p) for p in parts)
    frames += zstandard.ZstdCompressor(write_content_size=False).compress(b"tail")
    assert ok(zp, "decompress", [frames, 1 << 30]) == b"".join(parts) + b"tail"


def test_streamed_zstandard_frame(zp: Any) -> None:
    data = sample(2 * MiB + 1, seed=9)
    cobj = zstandard.ZstdCompressor(level=5).compressobj()
    frame = b"".join(cobj.compress(data[i:i + 100000]) for i in range(0, len(data), 100000)) + cobj.flush()
    assert zstandard.get_frame_parameters(frame).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert ok(zp, "decompress", [frame, len(data)]) == data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=5000), level=st.integers(-20, 22))
def test_round_trip_property(zp: Any, data: bytes, level: int) -> None:
    frame = ok(zp, "compress", [data, level])
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    ours = ok(zp, "decompress", [zstandard.ZstdCompressor(level=max(level, 1)).compress(data), len(data)])
    assert ours == data


def test_sixteen_mib_both_ways_in_bounded_memory(built: caps.BuiltCap) -> None:
    # 96 MiB is enough for a 16 MiB payload plus a 16 MiB output, and stays
    # enough call after call: large blocks are reused, not leaked.
    p = load(built, memory=96 * MiB)
    for seed in range(4):
        data = os.urandom(16 * MiB) if seed % 2 else sample(16 * MiB, seed=seed)
        frame = ok(p, "compress", [data, 3])
        assert zstandard.ZstdDecompressor().decompress(frame) == data
        ref = zstandard.ZstdCompressor(level=3).compress(data)
        assert ok(p, "decompress", [ref, 16 * MiB]) == data


# -- corrupt input ----------------------------------------------------------------

def test_corrupt_frames_are_bad_payload(zp: Any) -> None:
    data = sample(200000, seed=3)
    frame = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)
    bad = {
        "garbage": os.urandom(1000),
        "bad magic": b"\x00" + frame[1:],
        "truncated": frame[:-10],
        "header only": frame[:6],
        "flipped": frame[:len(frame) // 2] + bytes([frame[len(frame) // 2] ^ 0xFF]) + frame[len(frame) // 2 + 1:],
        "checksum": frame[:-1] + bytes([frame[-1] ^ 1]),
        "trailing garbage": frame + b"\x01\x02\x03\x04\x05\x06",
    }
    for what, blob in bad.items():
        message = fails(zp, "decompress", [blob, 1 << 30], "bad-payload", "corrupt zstd data")
        assert message.startswith("corrupt zstd data: "), (what, message)
    # The instance is still alive and well.
    assert ok(zp, "decompress", [frame, len(data)]) == data


def test_empty_input_is_empty_output(zp: Any) -> None:
    assert ok(zp, "decompress", [b"", 0]) == b""


# -- the size limit ----------------------------------------------------------------

def bomb(size: int, *, content_size: bool) -> bytes:
    """A small frame of `size` zero bytes."""
    cobj = zstandard.ZstdCompressor(level=1, write_content_size=content_size).compressobj(
        size=size if content_size else -1)
    chunk = bytes(MiB)
    parts = [cobj.compress(chunk) for _ in range(size // MiB)]
    return b"".join(parts) + cobj.flush()


@pytest.mark.parametrize("content_size", [True, False])
def test_limit_exact_and_one_under(zp: Any, content_size: bool) -> None:
    data = sample(300000, seed=4)
    frame = zstandard.ZstdCompressor(write_content_size=content_size).compress(data)
    assert ok(zp, "decompress", [frame, len(data)]) == data
    message = fails(zp, "decompress", [frame, len(data) - 1], "limit-exceeded")
    assert message == f"decompressed output would exceed the limit of {len(data) - 1} bytes"
    fails(zp, "decompress", [frame, 0], "limit-exceeded", "limit of 0 bytes")


@pytest.mark.parametrize("content_size", [True, False])
def test_bomb_is_refused_and_the_cap_survives(zp: Any, content_size: bool) -> None:
    frame = bomb(1 << 30, content_size=content_size)  # 1 GiB of zeros
    assert len(frame) < 100 * 1024
    fails(zp, "decompress", [frame, 16 * MiB], "limit-exceeded", f"limit of {16 * MiB} bytes")
    # The guest's default limit (256 MiB) holds inside a 512 MiB instance.
    fails(zp, "decompress", [frame, 256 * MiB], "limit-exceeded", f"limit of {256 * MiB} bytes")
    assert ok(zp, "decompress", [zstandard.ZstdCompressor().compress(b"fine"), 4]) == b"fine"


def test_streaming_limit_counts_every_chunk(zp: Any) -> None:
    frame = bomb(8 * MiB, content_size=False)
    h = call(zp, "decompressor.new", 5 * MiB)
    got = 0
    with pytest.raises(CapError) as info:
        for i in range(0, len(frame), 100):
            got += len(ok(zp, "decompressor.decompress", [h, frame[i:i + 100]]))
    assert info.value.kind == "limit-exceeded"
    assert f"limit of {5 * MiB} bytes" in str(info.value)
    assert got <= 5 * MiB
    assert call(zp, "decompressor.drop", h) is None


# -- streams --------------------------------------------------------------------

def test_compressor_stream(zp: Any) -> None:
    data = sample(3 * MiB, seed=5)
    h = call(zp, "compressor.new", 6)
    assert isinstance(h, int) and h > 0
    out = b"".join(ok(zp, "compressor.compress", [h, data[i:i + 65536]]) for i in range(0, MiB, 65536))
    out += ok(zp, "compressor.flush", h)
    # After flush, everything so far decompresses (the frame is still open).
    dobj = zstandard.ZstdDecompressor().decompressobj()
    assert dobj.decompress(out) == data[:MiB]
    out += ok(zp, "compressor.compress", [h, data[MiB:]])
    out += ok(zp, "compressor.finish", [h])  # [handle] works as well as handle
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == data
    # After finish the same compressor starts a new frame.
    second = ok(zp, "compressor.compress", [h, b"again"]) + ok(zp, "compressor.finish", h)
    assert ref_decompress(out + second) == data + b"again"
    assert call(zp, "compressor.drop", h) is None
    fails(zp, "compressor.finish", h, "bad-payload", "no live compressor")


def test_decompressor_stream(zp: Any) -> None:
    data = sample(2 * MiB, seed=6)
    frames = zstandard.ZstdCompressor(write_content_size=False).compress(data) * 2
    h = call(zp, "decompressor.new", 4 * MiB)
    assert call(zp, "decompressor.at-frame-end", h) is True  # nothing fed yet
    out = b""
    for i in range(0, len(frames), 4096):
        out += ok(zp, "decompressor.decompress", [h, frames[i:i + 4096]])
        if i + 4096 < len(frames) // 2:
            assert call(zp, "decompressor.at-frame-end", h) is False
    assert out == data * 2
    assert call(zp, "decompressor.at-frame-end", [h]) is True
    fails(zp, "decompressor.decompress", [h, b"not zstd data"], "bad-payload", "corrupt zstd data")
    assert call(zp, "decompressor.drop", h) is None


def test_handles_are_typed_and_not_reused(zp: Any) -> None:
    c = call(zp, "compressor.new", 3)
    d = call(zp, "decompressor.new", 100)
    assert c != d
    fails(zp, "compressor.flush", d, "bad-payload", "no live compressor")
    fails(zp, "decompressor.at-frame-end", c, "bad-payload", "no live decompressor")
    fails(zp, "compressor.compress", [123456789, b"x"], "bad-payload", "no live compressor")
    call(zp, "compressor.drop", c)
    fails(zp, "compressor.drop", c, "bad-payload", "no live compressor")
    assert call(zp, "compressor.new", 3) not in (c, d)
    call(zp, "decompressor.drop", d)


def test_many_streams_then_dropped(zp: Any) -> None:
    hs = [call(zp, "compressor.new", 1) for _ in range(40)]
    frames = [ok(zp, "compressor.compress", [h, b"%d" % h]) + ok(zp, "compressor.finish", h) for h in hs]
    assert [zstandard.ZstdDecompressor().decompressobj().decompress(f) for f in frames] == [b"%d" % h for h in hs]
    for h in hs:
        call(zp, "compressor.drop", h)


# -- malformed calls ----------------------------------------------------------------

@pytest.mark.parametrize(("method", "payload"), [
    ("compress", cbor2.dumps(b"just bytes")),
    ("compress", cbor2.dumps([b"x", 1 << 40])),
    ("compress", cbor2.dumps([b"x", 3, 4])),
    ("compress", cbor2.dumps([b"x", 3]) + b"\x00"),
    ("compress", b"\x82\x5f\x41x\xff\x03"),  # indefinite-length bytes
    ("decompress", cbor2.dumps([b"x", -1])),
    ("decompress", b"\x82\x45ab"),  # byte string longer than the payload
    ("decompress", b""),
    ("compressor.new", cbor2.dumps("3")),
    ("decompressor.new", cbor2.dumps(-1)),
    ("compressor.compress", cbor2.dumps([b"x", 1])),
    ("decompressor.at-frame-end", cbor2.dumps([1, 2])),
])
def test_wrong_shapes_are_bad_payload(zp: Any, method: str, payload: bytes) -> None:
    fails(zp, method, payload, "bad-payload")


def test_unknown_method(zp: Any) -> None:
    fails(zp, "compress-all", cbor2.dumps(None), "bad-method", "unknown method: compress-all")


def test_level_is_clamped_like_the_embedded_face(zp: Any) -> None:
    # zstd clamps levels to its range rather than refusing them.
    frame = ok(zp, "compress", [b"abc" * 100, 1000])
    assert zstandard.ZstdDecompressor().decompress(frame) == b"abc" * 100
    frame = ok(zp, "compress", [b"abc" * 100, -(1 << 31)])
    assert zstandard.ZstdDecompressor().decompress(frame) == b"abc" * 100


# -- the guest module's dynlink fallback, on the host ---------------------------------

@pytest.fixture()
def guest_zstd(zp: Any, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """guest/python/pylon_guest/zstd.py with `pylon_guest.dynlink` standing in for the
    guest's: the same exception classes by WIT case, the same CBOR call
    convention, over the engine provider."""
    fake = types.ModuleType("pylon_guest.dynlink")

    class DynlinkError(Exception):
        pass

    classes = {kind: type(name, (DynlinkError,), {}) for kind, name in [
        ("bad-payload", "BadPayload"), ("limit-exceeded", "CapLimitExceeded"),
        ("bad-method", "BadMethod"), ("trapped", "CapTrapped")]}
    for cls in classes.values():
        setattr(fake, cls.__name__, cls)

    class Cap:
        def call(self, method: str, *args: Any) -> Any:
            payload = cbor2.dumps(args[0] if len(args) == 1 else list(args) if args else None)
            try:
                return cbor2.loads(zp.invoke(method, payload))
            except CapError as exc:
                raise classes.get(exc.kind, DynlinkError)(str(exc)) from None

    fake.load = lambda name: Cap()  # type: ignore[attr-defined]
    package = types.ModuleType("pylon_guest")
    package.dynlink = fake  # type: ignore[attr-defined]

    monkeypatch.setitem(sys.modules, "pylon_guest", package)
    monkeypatch.setitem(sys.modules, "pylon_guest.dynlink", fake)
    spec = importlib.util.spec_from_file_location("guest_pylon_zstd",
                                                  REPO / "guest" / "python" / "pylon_guest" / "zstd.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    assert module.backend().name == "dynlink"
    return module


def test_guest_module_over_dynlink(guest_zstd: types.ModuleType) -> None:
    z = guest_zstd
    data = sample(500000, seed=7)
    frame = z.compress(data, 7)
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    assert z.decompress(zstandard.ZstdCompressor().compress(data)) == data
    assert z.decompress(frame, max_output=len(data)) == data

    with pytest.raises(z.CorruptFrameError, match=r"^corrupt zstd data: "):
        z.decompress(b"not a zstd frame at all")
    with pytest.raises(z.OutputTooLargeError) as info:
        z.decompress(frame, max_output=1000)
    assert info.value.limit == 1000
    assert isinstance(info.value, z.ZstdError)

    c = z.ZstdCompressor(level=3)
    out = c.compress(data[:1000]) + c.compress(data[1000:2000], c.FLUSH_BLOCK)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == data[:2000]
    out += c.compress(data[2000:]) + c.flush()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == data
    c.close()

    d = z.ZstdDecompressor(max_output=len(data))
    assert d.eof
    got = d.decompress(out[:100])
    assert not d.eof
    got += d.decompress(out[100:])
    assert got == data and d.eof
    with pytest.raises(z.OutputTooLargeError) as info:
        d.decompress(zstandard.ZstdCompressor().compress(b"one byte too many"))
    assert info.value.limit == len(data)
    d.close()
    with pytest.raises(ValueError, match="closed"):
        d.decompress(b"")

    with z.ZstdDecompressor() as d2:
        with pytest.raises(z.CorruptFrameError):
            d2.decompress(b"not zstd data")
