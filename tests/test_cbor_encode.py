"""The SDK's CBOR helpers (caps/_sdk/pylon_cbor.h), through real cap calls.

tests/sdk_caps/cborenc writes every reply with them. Its component is built
by the real build (pylon.build.caps) and called through wasmtime's component
model; the replies are decoded by cbor2 and compared byte for byte with what
a canonical encoder writes. One call goes all the way through a guest.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import cbor2
import pytest
import wasmtime
import wasmtime.component as wc
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Pylon
from pylon.build import caps

CAP = Path(__file__).parent / "sdk_caps" / "cborenc"


class CallError(Exception):
    def __init__(self, tag: str, message: str):
        super().__init__(f"{tag}: {message}")
        self.tag, self.message = tag, message


class Provider:
    """One instance of the cap in a Store of its own, no imports."""

    def __init__(self, component: Path):
        engine = wasmtime.Engine()
        self.store = wasmtime.Store(engine)
        instance = wc.Linker(engine).instantiate(self.store, wc.Component.from_file(engine, str(component)))
        iface = instance.get_export_index(self.store, caps.PROVIDER)
        self._invoke = instance.get_func(self.store, instance.get_export_index(self.store, "invoke", iface))

    def invoke(self, method: str, payload: bytes = b"") -> bytes:
        result = self._invoke(self.store, method, payload)
        self._invoke.post_return(self.store)
        if isinstance(result, bytes):
            return result
        raise CallError(result.tag, result.payload)


@pytest.fixture(scope="module")
def built() -> caps.BuiltCap:
    return caps.build_cap(CAP)


@pytest.fixture(scope="module")
def cap(built: caps.BuiltCap) -> Provider:
    return Provider(built.path)


def canonical(value: object) -> bytes:
    return cbor2.dumps(value, canonical=True)


@pytest.mark.parametrize("v", [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
def test_uint_heads_are_shortest(cap: Provider, v: int) -> None:
    assert cap.invoke("uint", cbor2.dumps(v)) == canonical(v)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int_round_trips_byte_identically(cap: Provider, v: int) -> None:
    assert cap.invoke("int", cbor2.dumps(v)) == canonical(v)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=70_000))
def test_bytes(cap: Provider, data: bytes) -> None:
    assert cap.invoke("bytes", data) == canonical(data)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_text(cap: Provider, text: str) -> None:
    assert cbor2.loads(cap.invoke("text", text.encode())) == text


@pytest.mark.parametrize("v", [0.0, -0.0, 1.5, -1e308, float("inf"), 5e-324])
def test_float64(cap: Provider, v: float) -> None:
    reply = cap.invoke("float", struct.pack("<d", v))
    assert reply[0] == 0xFB and len(reply) == 9 and cbor2.loads(reply) == v


def test_nan_stays_nan(cap: Provider) -> None:
    got = cbor2.loads(cap.invoke("float", struct.pack("<d", float("nan"))))
    assert got != got


@pytest.mark.parametrize("n", [0, 23, 24, 256, 65536])
def test_array_heads(cap: Provider, n: int) -> None:
    # 65536 items: the head's argument takes four bytes and the buffer grows many times.
    assert cap.invoke("range", cbor2.dumps(n)) == canonical(list(range(n)))


def test_every_kind_of_item(cap: Provider) -> None:
    expected = {
        "uints": [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1],
        "ints": [-1, -24, -25, -256, -257, -65537, -(2**63), 2**63 - 1],
        "empty": [b"", "", {}],
        "simple": [True, False, None],
        "text": "héllo",
        "float": -1.5,
    }
    reply = cap.invoke("sample")
    assert cbor2.loads(reply) == expected
    # Same bytes as cbor2 writes, save the float (the helper always writes 9 bytes).
    assert reply == cbor2.dumps(expected, canonical=False).replace(b"\xf9\xbe\x00", b"\xfb" + struct.pack(">d", -1.5))


def test_an_update_reply_is_ok_and_the_new_state(cap: Provider) -> None:
    assert cbor2.loads(cap.invoke("update", cbor2.dumps([40, 2]))) == {"ok": 42}


def test_running_out_of_room_is_limit_exceeded_and_the_instance_lives(cap: Provider) -> None:
    with pytest.raises(CallError) as info:
        cap.invoke("overflow")
    assert info.value.tag == "limit-exceeded"
    assert info.value.message == "out of memory while encoding the reply"
    assert cap.invoke("uint", cbor2.dumps(7)) == canonical(7)


@pytest.mark.parametrize("method, payload", [
    ("uint", b""), ("uint", cbor2.dumps(-1)), ("uint", cbor2.dumps(1) + b"\x00"), ("uint", b"\x1f"),
    ("uint", b"\x1b\x00"), ("int", cbor2.dumps(-(2**63) - 1)), ("int", cbor2.dumps(2**63)),
    ("update", cbor2.dumps([1])), ("update", cbor2.dumps([1, -2])), ("range", cbor2.dumps(10**7)),
    ("float", b"\x00" * 7),
])
def test_bad_payloads_are_bad_payload(cap: Provider, method: str, payload: bytes) -> None:
    with pytest.raises(CallError) as info:
        cap.invoke(method, payload)
    assert info.value.tag == "bad-payload"


def test_from_a_guest(pylon: Pylon, built: caps.BuiltCap, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(pylon.default_plan.read_text())
    pylon.composectl("plan", "add", str(plan), "cborenc", str(built.path), check=True)
    pylon.composectl("trust", "allow", "cborenc", built.digest, check=True)
    out = pylon.run_code(
        "import json; from pylon_guest import dynlink\n"
        "cap = dynlink.load('cborenc')\n"
        "s = cap.call('sample'); s['empty'][0] = s['empty'][0].hex()\n"
        "print(json.dumps([s, cap.call('update', 1, 2), cap.call('int', -(2**63))]))", plan=plan)
    assert out.returncode == 0, out.stderr
    sample, update, lowest = json.loads(out.stdout)
    assert sample["ints"][-2:] == [-(2**63), 2**63 - 1] and sample["uints"][-1] == 2**64 - 1
    assert sample["simple"] == [True, False, None] and sample["text"] == "héllo"
    assert update == {"ok": 3} and lowest == -(2**63)
