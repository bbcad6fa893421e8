"""Property-based fuzzing of host -> provider calls on the real stock caps.

Every ``Provider.invoke(method, payload)`` on crc32c, cborcalc, zstd and the
misbehave test cap, with arbitrary method names (unicode, empty, very long),
arbitrary bytes, arbitrary CBOR values, hostile CBOR (deep nesting, truncated,
mutated), zstd frames and bombs, and payload sizes around
``max_payload_bytes``, must:

* return ``bytes`` no longer than the payload limit, or raise
  :class:`pylon.errors.CapError` whose ``.kind`` is a WIT error case; never
  another exception, never a crash of the host process;
* refuse bad method names (``bad-method``) and oversized payloads
  (``limit-exceeded``) before the cap runs;
* leave the provider alive after ``ok``, ``bad-method`` and ``bad-payload``
  (a probe call still answers correctly), and dead after ``trapped`` (every
  later call is refused with kind ``trapped``);
* leave the engine able to load a fresh provider that answers correctly.

The number of examples is bounded so CI stays fast (150 per test); for a long
run set ``PYLON_FUZZ_EXAMPLES``, e.g. ``PYLON_FUZZ_EXAMPLES=20000 pytest
tests/test_invoke_fuzz.py`` (the same variable scales tests/test_plan_fuzz.py).
The last test runs thousands of random calls in a child Python process and
checks it exits cleanly with no traceback and no Rust panic on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import crc32c as reference
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylon.build import caps
from pylon.engine import ProviderSpec, get_engine
from pylon.errors import CapError

REPO = Path(__file__).resolve().parents[1]
KiB = 1 << 10
MiB = 1 << 20

EXAMPLES = int(os.environ.get("PYLON_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

#: The WIT error cases (wit/dynlink/dynlink.wit, `variant error`).
KINDS = frozenset({"denied", "not-found", "bad-method", "trapped", "limit-exceeded", "bad-payload"})
#: The payload limit of every provider here: small, so sizes around it are cheap.
LIMIT = 64 * KiB
#: What the engine accepts as a method name before the cap sees it
#: (engine/src/provider.rs: 1-128 printable ASCII characters).
MAX_METHOD_LEN = 128
CHECK_VALUE = 0xE3069283  # CRC-32C of b"123456789"


def valid_method(method: str) -> bool:
    return 0 < len(method) <= MAX_METHOD_LEN and all("\x21" <= c <= "\x7e" for c in method)


def _cbor_end(data: bytes, i: int, depth: int = 0) -> int:
    """Where the CBOR item starting at ``i`` ends; ValueError when it is not
    well-formed. Structure only (cbor2.loads would also apply tag semantics,
    and refuse e.g. tag 100 over null, which is well-formed CBOR)."""
    if depth > 10_000 or i >= len(data):
        raise ValueError("truncated or too deep")
    major, info = data[i] >> 5, data[i] & 31
    i += 1
    if info == 31:
        if major in (2, 3):
            while data[i:i + 1] != b"\xff":
                if i >= len(data) or data[i] >> 5 != major or data[i] & 31 == 31:
                    raise ValueError("bad chunk")
                i = _cbor_end(data, i, depth + 1)
            return i + 1
        if major in (4, 5):
            count = 0
            while data[i:i + 1] != b"\xff":
                i = _cbor_end(data, i, depth + 1)
                count += 1
            if major == 5 and count % 2:
                raise ValueError("odd map")
            return i + 1
        raise ValueError("bad indefinite item")
    if info < 24:
        arg = info
    elif info < 28:
        n = 1 << (info - 24)
        if i + n > len(data):
            raise ValueError("truncated head")
        arg = int.from_bytes(data[i:i + n], "big")
        i += n
    else:
        raise ValueError("reserved additional info")
    if major in (2, 3):
        if i + arg > len(data):
            raise ValueError("truncated string")
        if major == 3:
            data[i:i + arg].decode("utf-8")
        return i + arg
    if major in (4, 5):
        for _ in range(arg * (2 if major == 5 else 1)):
            i = _cbor_end(data, i, depth + 1)
        return i
    if major == 6:
        return _cbor_end(data, i, depth + 1)
    return i  # unsigned, negative, simple values and floats


def well_formed(data: bytes) -> bool:
    """Whether ``data`` is exactly one well-formed CBOR item."""
    try:
        return _cbor_end(data, 0) == len(data)
    except (ValueError, RecursionError):
        return False


# -- the caps -------------------------------------------------------------------


@dataclass(frozen=True)
class Cap:
    folder: Path
    methods: tuple[str, ...]
    memory_bytes: int
    timeout_ms: int
    #: A call that must answer correctly while the instance lives.
    probe: tuple[str, bytes]
    probe_ok: Callable[[bytes], bool]


CAPS = {
    "crc32c": Cap(REPO / "caps" / "crc32c", ("crc32c", "crc32c-update"), 16 * MiB, 5000,
                  ("crc32c", b"123456789"), lambda r: r == CHECK_VALUE.to_bytes(4, "little")),
    "cborcalc": Cap(REPO / "caps" / "cborcalc", ("echo", "sum", "stats", "upper", "describe", "merge"),
                    64 * MiB, 5000, ("sum", cbor2.dumps([1, 2, 39])), lambda r: cbor2.loads(r) == 42),
    # The generated face of wit/caps/zstd.wit (docs/cap-interface.md).
    "zstd": Cap(REPO / "caps" / "zstd",
                ("compress", "decompress", "level-range", "[constructor]compressor",
                 "[method]compressor.compress", "[method]compressor.flush", "[method]compressor.finish",
                 "[drop]compressor", "[constructor]decompressor", "[method]decompressor.decompress",
                 "[method]decompressor.at-frame-end", "[drop]decompressor"),
                128 * MiB, 5000, ("level-range", cbor2.dumps([])),
                lambda r: cbor2.loads(r)[1] == zstandard.MAX_COMPRESSION_LEVEL),
    # Short deadline: `loop` spins until it.
    "misbehave": Cap(REPO / "tests" / "caps" / "misbehave", ("echo", "trap", "loop", "hog"), 32 * MiB, 200,
                     ("echo", b"probe"), lambda r: r == b"probe"),
}


@pytest.fixture(scope="module")
def built() -> dict[str, caps.BuiltCap]:
    return {name: caps.build_cap(cap.folder) for name, cap in CAPS.items()}


def spec(name: str, b: caps.BuiltCap) -> ProviderSpec:
    cap = CAPS[name]
    return ProviderSpec(name=name, path=str(b.path), digest=b.digest, memory_bytes=cap.memory_bytes,
                        timeout_ms=cap.timeout_ms, max_payload_bytes=LIMIT)


class Live:
    """One provider per cap, replaced by a fresh one when it dies."""

    def __init__(self, built: dict[str, caps.BuiltCap]):
        self.built = built
        self.providers: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        if name not in self.providers:
            self.providers[name] = get_engine().load_provider(spec(name, self.built[name]))
        return self.providers[name]

    def bury(self, name: str) -> None:
        self.providers.pop(name)


@pytest.fixture(scope="module")
def live(built: dict[str, caps.BuiltCap]) -> Live:
    return Live(built)


def invoke(provider: Any, method: str, payload: bytes) -> tuple[str, bytes | CapError]:
    """("ok", reply) or (kind, error); any other exception propagates and fails the test."""
    try:
        reply = provider.invoke(method, payload)
    except CapError as exc:
        assert getattr(exc, "kind", None) in KINDS, (getattr(exc, "kind", None), str(exc))
        return exc.kind, exc
    assert type(reply) is bytes, type(reply)
    assert len(reply) <= LIMIT, f"a reply of {len(reply)} bytes passed the {LIMIT}-byte limit"
    return "ok", reply


def call(live: Live, name: str, method: str, payload: bytes) -> tuple[str, bytes | CapError]:
    """One fuzzed call with every invariant checked; returns its outcome."""
    provider = live.get(name)
    outcome, result = invoke(provider, method, payload)
    # The engine's own checks come before the cap runs (the provider was alive).
    if not valid_method(method):
        assert outcome == "bad-method", (method[:50], outcome, result)
    elif len(payload) > LIMIT:
        assert outcome == "limit-exceeded", (method, len(payload), outcome, result)
        assert "payload" in str(result)
    # Is the instance still alive? The probe answers correctly, or is refused as dead.
    probe_method, probe_payload = CAPS[name].probe
    probe, answer = invoke(provider, probe_method, probe_payload)
    if probe == "ok":
        assert CAPS[name].probe_ok(answer), (name, answer)
        assert outcome != "trapped", f"{name} answered after trapping on {method!r}: {result}"
    else:
        assert probe == "trapped", (name, probe, answer)
        assert outcome in ("trapped", "limit-exceeded"), (
            f"{name} died after an {outcome!r} answer to {method!r}: {answer}")
        # Dead stays dead, whatever is asked next.
        assert invoke(provider, "crc32c", b"")[0] == "trapped"
        assert invoke(provider, "", b"")[0] == "trapped"
        live.bury(name)
    return outcome, result


# -- strategies -------------------------------------------------------------------

ascii_names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=MAX_METHOD_LEN + 4)
odd_names = st.sampled_from([
    "", " ", "crc32c ", " crc32c", "crc32c\x00", "echo\n", "é", "ECHO", "\u202eecho", "\U0001f600",
    "a" * MAX_METHOD_LEN, "a" * (MAX_METHOD_LEN + 1), "compress\x7f", "\ufeffsum",
])


def method_names(name: str) -> st.SearchStrategy[str]:
    """Mostly the cap's own methods (so calls get past the name), else anything."""
    known = st.sampled_from(CAPS[name].methods)
    other = st.one_of(
        known.map(str.upper),
        st.tuples(known, st.text(max_size=3)).map("".join),
        ascii_names,
        st.text(max_size=200),  # any unicode: controls, non-ASCII, combining marks
        odd_names,
        st.integers(MAX_METHOD_LEN + 1, 100_000).map(lambda n: "m" * n),
    )
    return st.integers(0, 9).flatmap(lambda i: known if i < 6 else other)


cbor_leaves = st.one_of(
    st.none(), st.booleans(), st.just(cbor2.undefined),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.integers(min_value=-(1 << 64), max_value=(1 << 64) - 1),
    st.floats(), st.floats(width=32), st.floats(width=16),
    st.text(max_size=40), st.binary(max_size=80),
)
cbor_values = st.recursive(
    cbor_leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=8),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-5, 5)), kids, max_size=6),
        st.builds(cbor2.CBORTag, st.integers(6, (1 << 64) - 1), kids),
    ),
    max_leaves=30,
)


def near_limit(parts: tuple[int, bytes]) -> bytes:
    delta, pattern = parts
    size = LIMIT + delta
    return (pattern * (size // len(pattern) + 1))[:size]


def mutate(parts: tuple[bytes, int, int, int]) -> bytes:
    data, cut, at, xor = parts
    data = data[: len(data) - cut % (len(data) + 1)] if cut else data
    if data and xor:
        i = at % len(data)
        data = data[:i] + bytes([data[i] ^ xor]) + data[i + 1:]
    return data


def zeros_frame(n: int) -> bytes:
    return zstandard.ZstdCompressor(level=1).compress(bytes(n))


def nested(parts: tuple[bytes, int]) -> bytes:
    head, depth = parts
    return head * depth + b"\x00"


payloads = st.one_of(
    st.binary(max_size=300),
    cbor_values.map(cbor2.dumps),
    st.tuples(cbor_values.map(cbor2.dumps), st.integers(0, 40), st.integers(0, 1 << 16),
              st.integers(0, 255)).map(mutate),
    st.tuples(st.integers(-4, 4), st.binary(min_size=1, max_size=16)).map(near_limit),
    # Deep nesting: arrays, maps, tags, indefinite arrays; up to past the payload limit.
    st.tuples(st.sampled_from([b"\x81", b"\xa1\x00", b"\xc6", b"\x9f"]),
              st.one_of(st.integers(1, 600), st.integers(1, LIMIT + 2))).map(nested),
    # The shapes the methods take, with arbitrary contents.
    st.tuples(st.integers(-(1 << 65), 1 << 65), st.binary(max_size=200)).map(lambda t: cbor2.dumps([t[0], t[1]])),
    st.tuples(st.binary(max_size=200), st.integers(-(1 << 65), 1 << 65)).map(lambda t: cbor2.dumps(list(t))),
    st.lists(st.one_of(st.integers(), st.floats()), max_size=50).map(cbor2.dumps),
    # zstd frames: small real ones, and zero bombs whose output straddles the reply limit.
    st.tuples(st.integers(0, 4 * LIMIT), st.integers(-1, 1 << 40))
      .map(lambda t: cbor2.dumps([zeros_frame(t[0]), t[1]])),
    st.tuples(st.binary(max_size=500), st.integers(0, 1 << 20))
      .map(lambda t: cbor2.dumps([zstandard.ZstdCompressor().compress(t[0]), t[1]])),
    st.sampled_from([b"trap", b"", b"\xff", b"\x1f", b"\x5f\xff"]),
)


def cbor_of(*parts: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.tuples(*parts).map(lambda t: cbor2.dumps(t[0] if len(t) == 1 else list(t)))


def args_of(*parts: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """A generated face's request: always an array of the arguments."""
    return st.tuples(*parts).map(lambda t: cbor2.dumps(list(t)))


#: Handles: guessed 16-byte tokens (never live), and other shapes in their place.
handles = st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20), st.integers(-2, 12))
levels = st.one_of(st.integers(-10, 25), st.integers(-(1 << 63), (1 << 64) - 1))
frames = st.one_of(
    st.integers(0, 4 * LIMIT).map(zeros_frame),
    st.binary(max_size=2000).map(zstandard.ZstdCompressor(level=3).compress),
    st.tuples(st.binary(max_size=2000).map(zstandard.ZstdCompressor(write_content_size=False).compress),
              st.integers(0, 1 << 16), st.integers(0, 1 << 16), st.integers(0, 255)).map(mutate),
)
limits = st.one_of(st.integers(0, 8 * LIMIT), st.integers(-1, (1 << 64) - 1))
numbers = st.lists(st.one_of(st.integers(-(1 << 70), 1 << 70), st.floats()), max_size=40)

#: (method, payload) pairs in the shapes each cap's methods take, with arbitrary contents.
SHAPED: dict[str, st.SearchStrategy[tuple[str, bytes]]] = {
    "crc32c": st.one_of(
        st.tuples(st.just("crc32c"), st.binary(max_size=4000)),
        st.tuples(st.just("crc32c-update"), cbor_of(st.integers(-1, (1 << 33)), st.binary(max_size=2000))),
    ),
    "cborcalc": st.one_of(
        st.tuples(st.sampled_from(["echo", "describe"]), cbor_values.map(cbor2.dumps)),
        st.tuples(st.sampled_from(["sum", "stats"]), numbers.map(cbor2.dumps)),
        st.tuples(st.just("upper"), st.text(max_size=500).map(cbor2.dumps)),
        st.tuples(st.just("merge"), st.lists(st.dictionaries(st.text(max_size=5), cbor_values, max_size=5),
                                             max_size=6).map(cbor2.dumps)),
    ),
    "zstd": st.one_of(
        st.tuples(st.just("compress"), args_of(st.binary(max_size=3000), levels)),
        st.tuples(st.just("decompress"), args_of(frames, limits)),
        st.tuples(st.sampled_from(["[constructor]compressor", "[constructor]decompressor"]),
                  args_of(st.one_of(levels, limits))),
        st.tuples(st.sampled_from(["[method]compressor.compress", "[method]decompressor.decompress"]),
                  args_of(handles, st.one_of(st.binary(max_size=2000), frames))),
        st.tuples(st.sampled_from(["[method]compressor.flush", "[method]compressor.finish", "[drop]compressor",
                                   "[method]decompressor.at-frame-end", "[drop]decompressor"]),
                  st.one_of(args_of(handles), cbor_of(handles), cbor_of(st.lists(handles, max_size=2)))),
        st.tuples(st.just("level-range"), st.one_of(st.just(cbor2.dumps([])), st.binary(max_size=10))),
    ),
    "misbehave": st.tuples(st.sampled_from(["echo", "echo", "echo", "hog", "hog", "trap", "loop"]),
                           st.one_of(st.binary(max_size=200), st.just(b"trap"),
                                     st.tuples(st.integers(-4, 4),
                                               st.binary(min_size=1, max_size=16)).map(near_limit))),
}


def calls(name: str) -> st.SearchStrategy[tuple[str, bytes]]:
    """Half shaped calls, half any method name with any payload."""
    return st.one_of(SHAPED[name], st.tuples(method_names(name), payloads))


# -- the properties ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CAPS))
def test_any_call_is_an_answer_or_a_typed_error(live: Live, name: str) -> None:
    @FUZZ
    @given(c=calls(name))
    def run(c: tuple[str, bytes]) -> None:
        method, payload = c
        outcome, result = call(live, name, method, payload)
        if outcome == "ok" and name == "crc32c" and method == "crc32c":
            assert result == reference.crc32c(payload).to_bytes(4, "little")
        if outcome == "ok" and name in ("cborcalc", "zstd"):
            assert well_formed(result), result[:200]  # these caps reply with one CBOR item

    run()


@FUZZ
@given(value=cbor_values)
def test_cbor_values_echo_through_cborcalc(live: Live, value: Any) -> None:
    payload = cbor2.dumps(value)
    for method in CAPS["cborcalc"].methods:
        outcome, result = call(live, "cborcalc", method, payload)
        if outcome == "ok":
            assert well_formed(result), (method, result[:200])
        else:
            assert outcome in ("bad-payload", "limit-exceeded"), (method, outcome, result)


@FUZZ
@given(delta=st.integers(-3, 3), pattern=st.binary(min_size=1, max_size=8))
def test_payload_sizes_around_the_limit(live: Live, delta: int, pattern: bytes) -> None:
    payload = near_limit((delta, pattern))
    outcome, result = call(live, "misbehave", "echo", payload)
    if len(payload) <= LIMIT:
        assert (outcome, result) == ("ok", payload)
    else:
        assert outcome == "limit-exceeded" and f"payload of {len(payload)} bytes" in str(result), result
    outcome, result = call(live, "crc32c", "crc32c", payload)
    if len(payload) <= LIMIT:
        assert (outcome, result) == ("ok", reference.crc32c(payload).to_bytes(4, "little"))
    else:
        assert outcome == "limit-exceeded"


@FUZZ
@given(size=st.one_of(st.integers(LIMIT - 16, LIMIT + 16), st.integers(0, 8 * LIMIT)))
def test_replies_over_the_limit_are_refused(live: Live, size: int) -> None:
    """A small request whose reply is ``size`` zero bytes (in a CBOR ``result``).

    Fails on the old engine, which never checked replies: a 65,537-byte reply
    passed a 65,536-byte limit."""
    outcome, result = call(live, "zstd", "decompress", cbor2.dumps([zeros_frame(size), 1 << 40]))
    if outcome == "ok":
        assert cbor2.loads(result) == [0, bytes(size)]
    else:
        assert outcome == "limit-exceeded" and "reply" in str(result), (outcome, result)
        assert size > LIMIT - 16


def test_method_names_python_cannot_encode(live: Live) -> None:
    """A lone surrogate is a Python str no WIT string can carry (a guest cannot
    send one). The host API refuses it: as bad-method, or as Python's own
    UnicodeEncodeError before the engine is reached; nothing else."""
    for method in ("\ud800", "echo\udfff"):
        try:
            live.get("misbehave").invoke(method, b"")
        except CapError as exc:
            assert exc.kind == "bad-method", exc.kind
        except UnicodeEncodeError:
            pass
        else:
            pytest.fail(f"{method!r} was accepted as a method name")
    assert live.get("misbehave").invoke("echo", b"fine") == b"fine"


def test_payload_must_be_bytes(live: Live) -> None:
    for payload in (bytearray(b"x"), memoryview(b"x"), "text", None, 3):
        with pytest.raises(TypeError):
            live.get("crc32c").invoke("crc32c", payload)  # type: ignore[arg-type]


def test_fresh_providers_answer_after_fuzzing(live: Live, built: dict[str, caps.BuiltCap]) -> None:
    """Whatever the earlier tests did to their instances, the engine still
    loads new ones that work (runs after the fuzz tests: file order)."""
    engine = get_engine()
    for name, cap in CAPS.items():
        fresh = engine.load_provider(spec(name, built[name]))
        reply = fresh.invoke(*cap.probe)
        assert cap.probe_ok(reply), (name, reply)
    crc = engine.load_provider(spec("crc32c", built["crc32c"]))
    assert int.from_bytes(crc.invoke("crc32c", b"123456789"), "little") == CHECK_VALUE


# -- a child process under thousands of random calls ---------------------------------

CHILD = textwrap.dedent('''
    import collections, json, random, sys
    import cbor2
    from pylon.engine import ProviderSpec, get_engine
    from pylon.errors import CapError

    config = json.loads(sys.argv[1])
    KINDS = set(config["kinds"])
    LIMIT = config["limit"]
    rng = random.Random(config["seed"])
    engine = get_engine()
    providers = {}

    def provider(name):
        if name not in providers:
            c = config["caps"][name]
            providers[name] = engine.load_provider(ProviderSpec(
                name=name, path=c["path"], digest=c["digest"], memory_bytes=c["memory"],
                timeout_ms=c["timeout"], max_payload_bytes=LIMIT))
        return providers[name]

    def junk_text():
        n = rng.choice([0, 1, 5, 40, 129, 5000])
        return "".join(chr(rng.choice([rng.randrange(0x20, 0x7f), rng.randrange(0, 0x20),
                                       rng.randrange(0x80, 0xd800), rng.randrange(0xe000, 0x110000)]))
                       for _ in range(n))

    def value(depth=0):
        r = rng.random()
        if depth > 4 or r < 0.5:
            return rng.choice([None, True, -1, 2**64 + 5, -2**70, 1.5, float("nan"), "é",
                               b"\\x00" * rng.randrange(50)])
        if r < 0.75:
            return [value(depth + 1) for _ in range(rng.randrange(6))]
        return {str(i): value(depth + 1) for i in range(rng.randrange(4))}

    def payload():
        r = rng.random()
        if r < 0.3:
            return rng.randbytes(rng.randrange(300))
        if r < 0.55:
            return cbor2.dumps(value())
        if r < 0.7:
            data = cbor2.dumps([rng.randbytes(rng.randrange(100)), rng.randrange(-2**33, 2**33)])
            return data[: rng.randrange(len(data) + 1)]
        if r < 0.8:
            return bytes([rng.randrange(256)]) * (LIMIT + rng.randrange(-2, 3))
        if r < 0.9:
            return rng.choice([b"\\x81", b"\\xa1\\x00", b"\\x9f"]) * rng.randrange(1, 5000) + b"\\x00"
        return rng.choice([b"", b"trap", b"\\xff"])

    seen = collections.Counter()
    names = sorted(config["caps"])
    for _ in range(config["calls"]):
        name = rng.choice(names)
        methods = config["caps"][name]["methods"]
        method = rng.choice(methods) if rng.random() < 0.7 else junk_text()
        if method == "loop" and rng.random() < 0.8:
            method = "echo"  # keep the run short: each loop costs a deadline
        try:
            reply = provider(name).invoke(method, payload())
            assert type(reply) is bytes and len(reply) <= LIMIT
            seen["ok"] += 1
        except CapError as exc:
            assert exc.kind in KINDS, exc.kind
            seen[exc.kind] += 1
            if exc.kind == "trapped" or exc.kind == "limit-exceeded":
                providers.pop(name, None)  # maybe dead: start over with a fresh one
    crc = provider("crc32c").invoke("crc32c", b"123456789")
    assert int.from_bytes(crc, "little") == 0xE3069283
    print(json.dumps(seen))
''')


def test_child_process_survives_thousands_of_random_calls(built: dict[str, caps.BuiltCap], tmp_path: Path) -> None:
    config = {
        "kinds": sorted(KINDS), "limit": LIMIT, "seed": 20240909, "calls": max(3000, 20 * EXAMPLES),
        "caps": {name: {"path": str(built[name].path), "digest": built[name].digest,
                        "memory": cap.memory_bytes,
                        "timeout": 50 if name == "misbehave" else min(cap.timeout_ms, 2000),
                        "methods": list(cap.methods)}
                 for name, cap in CAPS.items()},
    }
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ)
    env.pop("RUST_BACKTRACE", None)
    result = subprocess.run([sys.executable, str(script), json.dumps(config)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "Traceback" not in result.stderr, result.stderr[-5000:]
    assert "panicked" not in result.stderr, result.stderr[-5000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert sum(seen.values()) == config["calls"]
    assert {"ok", "bad-method", "bad-payload", "limit-exceeded", "trapped"} <= set(seen), seen
