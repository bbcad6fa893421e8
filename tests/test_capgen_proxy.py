"""pylon.build.capgen.py_proxy: the generated guest proxy of a cap's dynlink face.

Two halves. On the host, the generated source runs under CPython against a
stand-in ``cap`` whose only job is to hand the proxy's request bytes to cbor2
and cbor2's bytes back: pure encoding and decoding properties, checked against
cbor2 (both ways, hypothesis), and the names checked against componentize-py's
own bindings of the same WIT. In a real guest, the proxy of
tests/caps/typed_probe (built by ``composectl cap build``, its C dispatch
generated too) round-trips every shape, raises ``Err`` with typed values, and
drops handles once on close, ``with`` and garbage collection.
"""

from __future__ import annotations

import gc
import inspect
import json
import math
import shutil
import subprocess
import sys
import textwrap
import types
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylon.build.capgen.py_proxy import generate_proxy
from pylon.build.capgen.wit_model import Interface, load_interface

REPO = Path(__file__).resolve().parents[1]
PROBE_DIR = REPO / "tests" / "caps" / "typed_probe"
PROBE_WIT = PROBE_DIR / "probe.wit"
PROBE = "pylon:probe/probe@0.1.0"
SQLITE_WIT = REPO / "wit" / "caps" / "sqlite.wit"
SQLITE = "pylon:sqlite/sqlite@0.1.0"


@pytest.fixture(scope="module")
def probe_iface() -> Interface:
    return load_interface(PROBE_WIT, PROBE)


class EchoCap:
    """Stands in for pylon_guest.dynlink.Cap: cbor2 decodes each request and
    cbor2 encodes the reply (the first argument back, for the echo-* methods),
    so what the proxy writes is read by cbor2 and what cbor2 writes is read
    by the proxy."""

    def __init__(self, canonical: bool = False):
        self.canonical = canonical
        self.requests: list[tuple[str, Any]] = []
        self.replies: dict[str, Any] = {}
        self.next_token = 0

    def invoke(self, method: str, payload: bytes) -> bytes:
        args = cbor2.loads(payload)
        assert isinstance(args, list), (method, payload)
        self.requests.append((method, args))
        if method in self.replies:
            return cbor2.dumps(self.replies[method], canonical=self.canonical)
        if method in ("[constructor]counter", "[static]counter.zero", "[method]counter.split"):
            self.next_token += 1
            return b"\x50" + self.next_token.to_bytes(16, "little")
        if method.startswith("[drop]"):
            assert len(args) == 1 and isinstance(args[0], bytes) and len(args[0]) == 16
            return b"\xf6"
        return cbor2.dumps(args[0] if args else None, canonical=self.canonical)

    def sent(self, method: str) -> list[Any]:
        return [args for m, args in self.requests if m == method]


_compiled: dict[str, Any] = {}


def exec_proxy(iface: Interface, cap: Any) -> types.ModuleType:
    """The proxy of ``iface`` as a fresh module over ``cap``, as Cap.api makes it."""
    code = _compiled.get(iface.qualified)
    if code is None:
        code = _compiled[iface.qualified] = compile(generate_proxy(iface), "<proxy>", "exec", dont_inherit=True)
    module = types.ModuleType("proxy_under_test")
    module.cap = cap  # type: ignore[attr-defined]
    exec(code, module.__dict__)
    return module


@pytest.fixture(scope="module")
def echo(probe_iface: Interface) -> tuple[types.ModuleType, EchoCap]:
    cap = EchoCap()
    return exec_proxy(probe_iface, cap), cap


# -- strategies: (typed value for the proxy, the plain CBOR value it must become) --

u = {bits: st.integers(0, (1 << bits) - 1) for bits in (8, 16, 32, 64)}
s = {bits: st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1) for bits in (8, 16, 32, 64)}
f64 = st.floats(allow_nan=False)
text = st.text(max_size=40)
char = st.characters(exclude_categories=("Cs",))


def points(m: types.ModuleType) -> Any:
    return st.builds(m.Point, s[32], s[32], text)


def plain_point(p: Any) -> list[Any]:
    return [p.x, p.y, p.label]


def shapes(m: types.ModuleType) -> Any:
    return st.one_of(st.just(m.Shape_Nothing()), st.builds(m.Shape_Circle, f64), st.builds(m.Shape_Named, text),
                     st.builds(m.Shape_At, points(m)))


def plain_shape(m: types.ModuleType, v: Any) -> list[Any]:
    return {m.Shape_Nothing: lambda: [0, None], m.Shape_Circle: lambda: [1, v.value],
            m.Shape_Named: lambda: [2, v.value], m.Shape_At: lambda: [3, plain_point(v.value)]}[type(v)]()


def cases(m: types.ModuleType) -> list[tuple[str, Any, Any]]:
    """(function, strategy of its argument, argument -> plain CBOR)."""
    same = lambda v: v  # noqa: E731
    return [
        ("echo_bool", st.booleans(), same),
        *[(f"echo_s{b}", s[b], same) for b in (8, 16, 32, 64)],
        *[(f"echo_u{b}", u[b], same) for b in (8, 16, 32, 64)],
        ("echo_f64", f64, same),
        ("echo_f32", st.floats(width=32, allow_nan=False), same),
        ("echo_char", char, same),
        ("echo_string", st.text(max_size=300), same),
        ("echo_bytes", st.binary(max_size=70000), same),
        ("echo_points", st.lists(points(m), max_size=30), lambda v: [plain_point(p) for p in v]),
        ("echo_strings", st.lists(text, max_size=30), same),
        ("echo_option", st.none() | text, same),
        ("echo_option_u32", st.none() | u[32], same),
        ("echo_tuple", st.tuples(u[8], text, f64), list),
        ("echo_point", points(m), plain_point),
        ("echo_shape", shapes(m), lambda v: plain_shape(m, v)),
        ("echo_color", st.sampled_from(list(m.Color)), lambda v: v.value),
        ("echo_list_option", st.lists(st.none() | s[64], max_size=30), same),
    ]


def same_value(a: Any, b: Any) -> bool:
    """Equality that tells -0.0 from 0.0 and types apart (a tuple is not a list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return math.copysign(1, a) == math.copysign(1, b) and (a == b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if is_dataclass(a):
        return all(same_value(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))
    return bool(a == b)


@pytest.mark.parametrize("canonical", [False, True], ids=["cbor2-default", "cbor2-canonical"])
@pytest.mark.parametrize("index", range(23))
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_shape_round_trips_through_cbor2(probe_iface: Interface, index: int, canonical: bool,
                                               data: st.DataObject) -> None:
    cap = EchoCap(canonical=canonical)  # canonical: floats in their shortest width, other header sizes
    m = exec_proxy(probe_iface, cap)
    name, strategy, plain = cases(m)[index]
    value = data.draw(strategy)
    method = name.replace("_", "-")
    got = getattr(m, name)(value)
    (sent,) = cap.sent(method)
    assert same_value(sent, [plain(value)]), (sent, value)
    expected = tuple(value) if name == "echo_tuple" else value
    assert same_value(got, expected), (got, value)


def test_several_arguments_and_results(echo: tuple[types.ModuleType, EchoCap]) -> None:
    m, cap = echo
    cap.replies["mix"] = 12.5
    assert m.mix(1, -2, 0.5, b"\x01\x02", m.Point(1, 2, "p")) == 12.5
    assert cap.sent("mix")[-1] == [1, -2, 0.5, b"\x01\x02", [1, 2, "p"]]
    cap.replies["mix"] = 3  # an integer where a float is due: accepted, as a float
    assert m.mix(1, 2, 0.0, b"", None) == 3.0 and type(m.mix(1, 2, 0.0, b"", None)) is float
    assert cap.sent("mix")[-1] == [1, 2, 0.0, b"", None]
    assert m.nothing() is None and cap.sent("nothing") == [[]]

    cap.replies["maybe-fail"] = [0, "fine"]
    assert m.maybe_fail("fine", False) == "fine"
    cap.replies["maybe-fail"] = [1, [7, "boom"]]
    with pytest.raises(m.Err) as info:
        m.maybe_fail("boom", True)
    assert info.value.value == m.Failure(7, "boom")
    cap.replies["check"] = [1, None]
    with pytest.raises(m.Err) as info:
        m.check(False)
    assert info.value.value is None
    cap.replies["check"] = [0, None]
    assert m.check(True) is None
    cap.replies["check-ok"] = [0, 70000]
    assert m.check_ok(1) == 70000
    cap.replies["check-err"] = [1, "no"]
    with pytest.raises(m.Err, match="no"):
        m.check_err(True)
    del cap.replies["check-err"], cap.replies["check-ok"], cap.replies["check"], cap.replies["maybe-fail"]


def test_a_reply_of_the_wrong_shape_is_a_clear_error(echo: tuple[types.ModuleType, EchoCap]) -> None:
    m, cap = echo
    cap.replies["echo-point"] = [1, 2]
    try:
        with pytest.raises(ValueError, match=r"reply of echo-point does not have the shape"):
            m.echo_point(m.Point(1, 2, "x"))
    finally:
        del cap.replies["echo-point"]


def test_bad_arguments_fail_before_the_call(echo: tuple[types.ModuleType, EchoCap]) -> None:
    m, cap = echo
    before = len(cap.requests)
    with pytest.raises(TypeError):
        m.echo_s32("1")
    with pytest.raises(ValueError, match="one code point"):
        m.echo_char("ab")
    with pytest.raises(TypeError, match="Shape"):
        m.echo_shape(m.Point(1, 2, "x"))
    with pytest.raises(OverflowError):
        m.echo_u64(1 << 64)
    with pytest.raises(TypeError, match="expected a Counter"):
        m.Counter.peek(object())
    assert len(cap.requests) == before


@settings(max_examples=300, deadline=None)
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 64) + 1, (1 << 64) - 1) | st.floats(allow_nan=False)
    | st.text() | st.binary(),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
    max_leaves=20), canonical=st.booleans())
def test_the_readers_fast_path_agrees_with_cbor2(echo: tuple[types.ModuleType, EchoCap], value: Any,
                                                 canonical: bool) -> None:
    m, _ = echo
    data = cbor2.dumps(value, canonical=canonical)
    got, end = m._load(data, 0)
    assert end == len(data)
    assert got == value


def test_the_reader_falls_back_to_cbor2_for_tags_and_indefinite_lengths(
        echo: tuple[types.ModuleType, EchoCap]) -> None:
    m, cap = echo
    indefinite = b"\x9f\x61a\x62bc\xff"  # [_ "a", "bc"]
    assert m._decode(indefinite, "x", None) == ["a", "bc"]
    assert m._decode(b"\xc2\x49\x01" + bytes(8), "x", None) == 1 << 64  # a bignum tag
    with pytest.raises(ValueError, match="reply of x is not CBOR"):
        m._decode(b"\x82\x01", "x", None)


# -- handles, on the stand-in (the real cap below counts them too) ------------------


def test_handles_close_once_with_and_gc(echo: tuple[types.ModuleType, EchoCap]) -> None:
    m, cap = echo
    c = m.Counter(5)
    assert cap.sent("[constructor]counter")[-1] == [5]
    token = c._h[1:]
    c.close()
    c.close()
    assert cap.sent("[drop]counter").count([token]) == 1 and c.closed
    with pytest.raises(ValueError, match="this counter handle is closed"):
        c.get()
    with m.Counter.zero() as z:
        ztoken = z._h[1:]
    assert cap.sent("[drop]counter").count([ztoken]) == 1
    g = m.Counter(1)
    gtoken = g._h[1:]
    del g
    gc.collect()
    assert cap.sent("[drop]counter").count([gtoken]) == 1
    # own<counter> moves it into the call: no drop, and it is closed here.
    a, b = m.Counter(1), m.Counter(2)
    btoken = b._h[1:]
    cap.replies["[method]counter.absorb"] = 3
    assert a.absorb(b) == 3
    assert cap.sent("[method]counter.absorb")[-1] == [a._h[1:], btoken] and b.closed
    del b
    gc.collect()
    assert [btoken] not in cap.sent("[drop]counter")
    # borrow leaves it live.
    cap.replies["[static]counter.peek"] = 1
    assert m.Counter.peek(a) == 1 and not a.closed
    cap.replies["[static]counter.maybe"] = None
    assert m.Counter.maybe(False) is None
    cap.replies["[static]counter.maybe"] = bytes(range(16))
    got = m.Counter.maybe(True)
    assert isinstance(got, m.Counter) and got._h[1:] == bytes(range(16))
    cap.replies["[static]counter.try-new"] = [1, "negative"]
    with pytest.raises(m.Err, match="negative"):
        m.Counter.try_new(-1)
    cap.replies["[static]counter.try-new"] = [0, bytes(16)]
    assert isinstance(m.Counter.try_new(1), m.Counter)
    for k in ("[method]counter.absorb", "[static]counter.peek", "[static]counter.maybe", "[static]counter.try-new"):
        del cap.replies[k]


def test_a_collected_handle_of_a_dead_cap_is_silent(probe_iface: Interface) -> None:
    class Dead(EchoCap):
        def invoke(self, method: str, payload: bytes) -> bytes:
            if method.startswith("[drop]"):
                raise RuntimeError("the cap trapped")
            return super().invoke(method, payload)

    m = exec_proxy(probe_iface, Dead())
    c = m.Counter(1)
    unraisable: list[Any] = []
    old, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        del c
        gc.collect()
    finally:
        sys.unraisablehook = old
    assert unraisable == []


# -- names: the same as componentize-py's bindings of the same WIT -------------------


def public(obj: Any) -> set[str]:
    return {n for n in vars(obj) if not n.startswith("_")}


def test_names_match_componentize_pys_bindings(tmp_path: Path, probe_iface: Interface) -> None:
    tool = shutil.which("componentize-py", path=str(Path(sys.executable).parent))
    assert tool, "componentize-py is part of the dev environment"
    for wit, export in ((PROBE_WIT, PROBE), (SQLITE_WIT, SQLITE)):
        iface_name = export.split("/")[1].split("@")[0]
        work = tmp_path / iface_name
        work.mkdir()
        (work / "api.wit").write_text(wit.read_text() + f"\nworld imp {{ import {iface_name}; }}\n")
        subprocess.run([tool, "-d", str(work / "api.wit"), "-w", "imp", "bindings", str(work / "out")],
                       check=True, capture_output=True)
        # Read their module in a fresh interpreter: it imports its own
        # componentize_py_types, which must not leak into this one.
        probe = textwrap.dedent(f"""
            import inspect, json, sys
            sys.path.insert(0, {str(work / 'out')!r})
            from wit_world.imports import {iface_name} as m
            out = {{}}
            for name, obj in vars(m).items():
                if name.startswith("_") or getattr(obj, "__module__", None) != m.__name__:
                    continue
                if inspect.isclass(obj):
                    members = sorted(n for n in vars(obj) if not n.startswith("_"))
                    if hasattr(obj, "__dataclass_fields__"):
                        members = list(obj.__dataclass_fields__)
                    elif hasattr(obj, "__members__"):
                        members = list(obj.__members__)
                    sigs = {{n: list(inspect.signature(getattr(obj, n)).parameters) for n in vars(obj)
                            if not n.startswith("_") and callable(getattr(obj, n))}}
                    if "__init__" in vars(obj):
                        sigs["__init__"] = list(inspect.signature(obj.__init__).parameters)
                    out[name] = ["class", members, sigs]
                elif inspect.isfunction(obj):
                    out[name] = ["function", list(inspect.signature(obj).parameters), {{}}]
            print(json.dumps(out))
        """)
        theirs = json.loads(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                                           text=True).stdout)
        iface = load_interface(wit, export)
        ours = exec_proxy(iface, EchoCap())
        for name, (kind, members, sigs) in theirs.items():
            obj = getattr(ours, name, None)
            assert obj is not None, f"{wit.name}: {name} is missing from the proxy"
            if kind == "function":
                assert list(inspect.signature(obj).parameters) == members, name
                continue
            if is_dataclass(obj):
                assert [f.name for f in fields(obj)] == members, name
            elif isinstance(obj, type) and issubclass(obj, Enum):
                assert list(obj.__members__) == members, name
            else:
                assert set(members) <= public(obj), (name, set(members) - public(obj))
            for meth, params in sigs.items():
                # (Their static functions are classmethods, ours staticmethods:
                # seen through the class, neither shows cls.)
                got = list(inspect.signature(getattr(obj, meth)).parameters)
                assert got == params, (name, meth, got, params)


def test_sqlite_proxy_offers_what_pylon_guest_sqlite_calls() -> None:
    m = exec_proxy(load_interface(SQLITE_WIT, SQLITE), EchoCap())
    for meth in ("prepare", "execute", "set_implicit_begin", "in_transaction", "commit", "rollback",
                 "total_changes", "close", "__exit__"):
        assert callable(getattr(m.Connection, meth)), meth
    for meth in ("columns", "parameter_names", "reset", "run_packed", "step_packed", "execute_many_packed",
                 "__exit__"):
        assert callable(getattr(m.Statement, meth)), meth
    assert m.Connection.open.__doc__ and "Raises: `componentize_py_types.Err(Error)`" in m.Connection.open.__doc__
    assert m.Error(1, "x").message == "x" and m.Batch([], True, 0, 0).last_insert_rowid == 0
    assert m.Value_Integer(5).value == 5


def test_keywords_and_kebab_names_are_escaped(tmp_path: Path) -> None:
    wit = tmp_path / "api.wit"
    wit.write_text(textwrap.dedent("""
        package t:kw@0.1.0;
        interface api {
          enum kind { none, class, light-green }
          variant v { none, is(u8), big-box(tuple<u32, u32>) }
          record r { class: string, last-insert-rowid: s64, %from: option<kind> }
          resource thing { constructor(in: u8); lambda: func(%import: string) -> r; close: func(); }
          global: func(def: list<v>) -> result<v, kind>;
        }
        world w { export api; }
    """))
    m = exec_proxy(load_interface(wit, "t:kw/api@0.1.0"), EchoCap())
    assert list(m.Kind.__members__) == ["NONE", "CLASS", "LIGHT_GREEN"]
    assert [f.name for f in fields(m.R)] == ["class_", "last_insert_rowid", "from_"]
    assert m.V_None_ and m.V_Is(1).value == 1 and m.V_BigBox((1, 2)).value == (1, 2)
    assert list(inspect.signature(m.Thing.__init__).parameters) == ["self", "in_"]
    assert list(inspect.signature(m.global_).parameters) == ["def_"]
    assert callable(m.Thing.lambda_)
    # The WIT's own close() wins; __exit__ still drops.
    cap = m.cap
    cap.replies["[constructor]thing"] = bytes(16)  # cbor2 writes it as the handle's byte string
    t = m.Thing(1)
    t.close()
    assert cap.sent("[method]thing.close") and not cap.sent("[drop]thing")
    t.__exit__(None, None, None)
    assert len(cap.sent("[drop]thing")) == 1


# -- end to end: the typed_probe cap in a real guest -----------------------------------


@pytest.fixture(scope="module")
def probe_plan(pylon: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = pylon.composectl("cap", "build", str(PROBE_DIR), check=True)
    digest, path = built.stdout.split()
    plan = tmp_path_factory.mktemp("typed_probe") / "plan.json"
    plan.write_text(pylon.default_plan.read_text())
    pylon.composectl("plan", "add", str(plan), "typed_probe", path, check=True)
    pylon.composectl("trust", "allow", "typed_probe", digest, check=True)
    return plan


def guest_json(pylon: Any, plan: Path, tmp_path: Path, code: str) -> Any:
    script = tmp_path / "probe_script.py"
    script.write_text(textwrap.dedent(code))
    result = pylon.run_script(script, plan=plan)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


PROBE_ROUND_TRIP = r'''
import json, math
from pylon_guest import dynlink
p = dynlink.load("typed_probe").api
P = p.Point
cases = [
    ("echo_bool", [True, False]),
    ("echo_s8", [-128, 127, 0, -1]), ("echo_s16", [-32768, 32767]), ("echo_s32", [-2**31, 2**31 - 1]),
    ("echo_s64", [-2**63, 2**63 - 1, 23, 24, -24, -25]),
    ("echo_u8", [0, 255]), ("echo_u16", [65535]), ("echo_u32", [2**32 - 1]), ("echo_u64", [2**64 - 1, 0]),
    ("echo_f32", [1.5, -0.0, math.inf]), ("echo_f64", [5e-324, 1e308, -2.5, math.inf]),
    ("echo_char", ["a", "\u00e9", "\U0001F600"]),
    ("echo_string", ["", "x" * 23, "y" * 24, "\u4e2d" * 30000]),
    ("echo_bytes", [b"", bytes(range(256)), bytes(70000)]),
    ("echo_points", [[], [P(1, -2, "a"), P(2**31 - 1, -2**31, "")]]),
    ("echo_strings", [[], ["a", "", "\u00ff"]]),
    ("echo_option", [None, "", "x"]), ("echo_option_u32", [None, 0, 2**32 - 1]),
    ("echo_tuple", [(0, "", 0.5), (255, "z", -1e300)]),
    ("echo_point", [P(0, 0, "origin")]),
    ("echo_shape", [p.Shape_Nothing(), p.Shape_Circle(2.5), p.Shape_Named("n"), p.Shape_At(P(1, 2, "at"))]),
    ("echo_color", list(p.Color)),
    ("echo_list_option", [[None, 1, -2**63, None]]),
]
bad = []
for name, values in cases:
    for v in values:
        got = getattr(p, name)(v)
        want = tuple(v) if name == "echo_tuple" else v
        if got != want or type(got) is not type(want):
            bad.append([name, repr(v), repr(got)])
out = {"bad": bad, "mix": p.mix(1, -2, 0.5, b"\x03", P(10, 20, "")), "nothing": p.nothing()}
try:
    p.maybe_fail("why", True)
except p.Err as e:
    out["maybe_fail"] = [type(e.value).__name__, e.value.code, e.value.why]
out["maybe_ok"] = p.maybe_fail("fine", False)
for name, arg in (("check", False), ("check_err", True)):
    try:
        getattr(p, name)(arg)
        out[name] = "no error"
    except p.Err as e:
        out[name] = ["Err", e.value]
out["check_ok"] = [p.check(True), p.check_ok(7), p.check_err(False)]
print(json.dumps(out))
'''


def test_every_shape_round_trips_in_the_guest(pylon: Any, probe_plan: Path, tmp_path: Path) -> None:
    out = guest_json(pylon, probe_plan, tmp_path, PROBE_ROUND_TRIP)
    assert out["bad"] == []
    assert out["nothing"] is None
    assert isinstance(out["mix"], float)
    assert out["maybe_fail"] == ["Failure", 7, "why"] and out["maybe_ok"] == "fine"
    assert out["check"] == ["Err", None] and out["check_err"][0] == "Err"
    assert out["check_ok"] == [None, 8, None]  # the probe answers ok(v + 1)


PROBE_HANDLES = r'''
import gc, json
from pylon_guest import dynlink
p = dynlink.load("typed_probe").api
out = {"start": p.live()}
c = p.Counter(5)
out["get"] = [c.get(), c.add(3), c.get()]
out["live1"] = p.live()
c.close(); c.close()
out["after_close"] = p.live()
try:
    c.get()
except dynlink.BadPayload as e:
    out["closed_error"] = str(e)
with p.Counter.zero() as z:
    out["in_with"] = p.live()
out["after_with"] = p.live()
g = p.Counter(1)
s = g.split()
out["split"] = [p.live(), s.get()]
del g, s
gc.collect()
out["after_gc"] = p.live()
a, b = p.Counter(10), p.Counter(32)
out["absorb"] = [a.absorb(b), b.closed, p.live()]
out["peek"] = [p.Counter.peek(a), a.closed]
try:
    p.Counter.try_new(-1)
except p.Err as e:
    out["try_new_err"] = e.value
t = p.Counter.try_new(4)
out["try_new"] = [t.get(), p.Counter.maybe(False), p.Counter.maybe(True).get()]
gc.collect()
del a, t
gc.collect()
out["end"] = p.live()
# A handle from another counter's token is refused by the cap, clearly.
fake = object.__new__(p.Counter)
fake._h = b"\x50" + bytes(16)
try:
    fake.get()
except dynlink.BadPayload as e:
    out["forged"] = str(e)
print(json.dumps(out))
'''


def test_handles_in_the_guest(pylon: Any, probe_plan: Path, tmp_path: Path) -> None:
    out = guest_json(pylon, probe_plan, tmp_path, PROBE_HANDLES)
    assert out["start"] == 0
    assert out["get"] == [5, 8, 8] and out["live1"] == 1
    assert out["after_close"] == 0
    assert "counter handle is closed" in out["closed_error"]
    assert out["in_with"] == 1 and out["after_with"] == 0
    assert out["split"][0] == 2 and out["after_gc"] == 0
    assert out["absorb"] == [42, True, 1]
    assert out["peek"] == [42, False]
    assert out["try_new_err"] == "negative start" and out["try_new"] == [4, None, 42]  # maybe(true): counter(42)
    assert out["end"] == 0
    assert "counter" in out["forged"]


# -- pylon_guest.sqlite over the sqlite cap's generated face ---------------------------

SQLITE_OVER_DYNLINK = r'''
import gc, json
from pylon_guest import sqlite
out = {"backend": sqlite.backend().name}
db = sqlite.connect(":memory:")
out["proxy_module"] = type(db._h).__module__
db.execute("create table t (k integer primary key, v text unique)")
db.executemany("insert into t values (?, ?)", [(i, "v%d" % i) for i in range(100)])
out["rows"] = db.execute("select count(*), sum(k) from t").fetchone()
try:
    db.execute("insert into t values (1000, 'v1')")
except sqlite.IntegrityError as e:
    out["unique"] = [type(e).__name__, e.sqlite_errorname]
try:
    sqlite.connect("/data.db")
except sqlite.OperationalError as e:
    out["file"] = [str(e), e.sqlite_errorname]
db.close()
try:
    db.execute("select 1")
except sqlite.ProgrammingError as e:
    out["closed"] = str(e)
print(json.dumps(out))
'''


def test_pylon_guest_sqlite_over_the_generated_face(pylon: Any, sqlite_dynlink_plan: Path, tmp_path: Path) -> None:
    out = guest_json(pylon, sqlite_dynlink_plan, tmp_path, SQLITE_OVER_DYNLINK)
    assert out["backend"] == "dynlink" and out["proxy_module"] == "pylon_guest.caps.sqlite"
    assert out["rows"] == [100, 4950]
    assert out["unique"] == ["IntegrityError", "SQLITE_CONSTRAINT_UNIQUE"]
    assert out["file"] == ["unable to open database file", "SQLITE_CANTOPEN"]
    assert out["closed"] == "Cannot operate on a closed database."
