"""Guest memory across many cap calls: a call must not leave its payload behind.

componentize-py 0.25.1 copies a ``bytes`` argument of an import into a block it
never frees (``maybe_pop_list`` in its runtime), so each call through a cap
used to leak its request, embedded or through dynlink. The guest build frees
that copy when the call returns (pylon/build/wasm_listfree.py). The real guest,
real caps, real wasmtime: a leak shows as a run that reaches its memory limit,
or as headroom that shrinks.
"""
from __future__ import annotations

import textwrap

import pytest

from conftest import Pylon

#: Run in the guest: how many MiB it can still allocate, in 1 MiB blocks
#: (then freed). Its drop across a loop of calls is the memory the loop kept.
HEADROOM = textwrap.dedent("""
    import gc

    def headroom():
        blocks = []
        try:
            while True:
                blocks.append(bytearray(1 << 20))
        except MemoryError:
            pass
        n = len(blocks)
        del blocks
        gc.collect()
        return n
""")


def run(pylon: Pylon, code: str, memory_mb: int) -> str:
    result = pylon.composectl("run", "--memory-mb", str(memory_mb), "-c", HEADROOM + textwrap.dedent(code))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_many_dynlink_calls_with_16_kib_fit_in_128_mib(pylon: Pylon) -> None:
    # 20,000 x 16 KiB is 312 MiB of requests: leaked, the run would hit its
    # 128 MiB limit long before the end.
    out = run(pylon, """
        from pylon_guest import dynlink
        cap = dynlink.load("crc32c")
        data = bytes(range(256)) * 64
        first = cap.invoke("crc32c", data)
        for i in range(20_000):
            assert cap.invoke("crc32c", data) == first
        print("done", len(first))
    """, memory_mb=128)
    assert out == "done 4\n"


@pytest.mark.parametrize("size", [0, 1 << 10, 64 << 10])
def test_dynlink_calls_keep_no_memory(pylon: Pylon, size: int) -> None:
    calls = 2000 if size > 1 << 10 else 10_000
    out = run(pylon, f"""
        from pylon_guest import dynlink
        cap = dynlink.load("crc32c")
        data = bytes({size})
        cap.invoke("crc32c", data)
        before = headroom()
        for _ in range({calls}):
            cap.invoke("crc32c", data)
        print(before - headroom())
    """, memory_mb=256)
    # 2000 x 64 KiB leaked would be 125 MiB; allow the allocator some slack.
    assert int(out) <= 2, out


@pytest.mark.parametrize("backend", ["dynlink", "embedded"])
def test_replies_larger_than_the_request_keep_no_memory(pylon: Pylon, backend: str) -> None:
    # A reply larger than its request goes into a fresh buffer from the
    # guest's realloc; neither that nor the request may stay behind.
    out = run(pylon, f"""
        from pylon_guest import zstd
        zstd.use_backend({backend!r})
        data = bytes(range(256)) * 256
        frame = zstd.compress(data, 3)
        assert len(frame) < len(data)
        assert zstd.decompress(frame, max_output=1 << 20) == data
        before = headroom()
        for _ in range(500):
            assert zstd.decompress(frame, max_output=1 << 20) == data
        print(before - headroom())
    """, memory_mb=128)
    assert int(out) <= 2, out


def test_errors_name_the_method_as_the_guest_gave_it(pylon: Pylon) -> None:
    out = run(pylon, """
        from pylon_guest import dynlink
        cap = dynlink.load("crc32c")
        try:
            cap.invoke("no-such-method", b"x" * 100)
        except dynlink.BadMethod as exc:
            print(repr(str(exc)))
        print(cap.invoke("crc32c", b"") == (0).to_bytes(4, "little"))
        want = cap.invoke("crc32c", b"abc")
        print(cap.invoke("crc32c", bytearray(b"abc")) == want == cap.invoke("crc32c", memoryview(b"xabc")[1:]))
    """, memory_mb=128)
    message, empty_ok, bytes_like_ok = out.splitlines()
    assert "no-such-method" in message and "\\x00" not in message, message
    assert empty_ok == bytes_like_ok == "True"


def test_embedded_calls_keep_no_memory(pylon: Pylon) -> None:
    out = run(pylon, """
        import crc32c
        assert crc32c.backend() == "embedded"
        data = bytes(64 << 10)
        crc32c.crc32c(data)
        before = headroom()
        for _ in range(1000):
            crc32c.crc32c(data)
        print(before - headroom())
    """, memory_mb=256)
    assert int(out) <= 2, out
