"""Property-based fuzzing of plan loading: any text gives a Plan or a PlanError, nothing else.

Four sources of input: arbitrary text, arbitrary JSON values, mutations of a
valid plan (keys dropped and added, wrong types, huge integers, unicode and
odd cap names) and hostile nesting. For each, ``Plan.loads`` must return a
plan or raise :class:`PlanError` whose message is one clean, printable line;
when the text is well-formed JSON the error must carry a JSON path. The
compiled validator and jsonschema must agree on every document.

The number of examples is bounded so CI stays fast (200 per test); for a long
run set ``PYLON_FUZZ_EXAMPLES``, e.g. ``PYLON_FUZZ_EXAMPLES=50000 pytest
tests/test_plan_fuzz.py``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylon.errors import PlanError
from pylon.plan import Plan, _fast_check, _validator

FUZZ = settings(
    max_examples=int(os.environ.get("PYLON_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("pylon-fuzz", FUZZ)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
VALID: dict[str, Any] = {
    "pylon-plan": 1,
    "caps": {
        "crc32c": {"digest": D1, "sources": ["file:///opt/caps/crc32c.wasm", "https://h.example/c"],
                   "size": 20480, "limits": {"memory-mb": 64, "timeout-ms": 500, "max-payload-mb": 8},
                   "wasi": False},
        "zstd": {"digest": D2, "sources": [], "limits": {}},
    },
    "guest": {"digest": D2, "sources": ["file:///opt/pylon/pylon.wasm"], "size": 36_000_000,
              "limits": {"timeout-ms": 60_000, "memory-mb": 512}},
    "limits": {"max-instances": 8, "max-memory-mb": 512},
}
# Past Python's int <-> str digit limit (4300): json.loads itself refuses these.
HUGE_DIGITS = "7" * 5000
HUGE_MARK = "__huge_number__"


def check(text: str, *, json_ok: bool) -> None:
    """Loads ``text``: a Plan, or a PlanError that is one clean line (with a path if ``json_ok``)."""
    try:
        plan = Plan.loads(text, file="fuzz.json")
    except PlanError as exc:
        message = str(exc)
        assert message.startswith("fuzz.json: "), message
        assert message.isprintable(), repr(message)  # one line: no \n, \r, controls or lone surrogates
        assert len(message) < 2000, len(message)
        if json_ok:
            assert exc.path is not None and exc.path.startswith("$"), message
            assert f"at {exc.path}: " in message
        return
    # Whatever loads is a valid plan: it dumps and loads back to itself.
    assert Plan.loads(plan.dumps()) == plan


def check_validators_agree(doc: Any) -> None:
    if isinstance(doc, dict) and "pylon-plan" in doc and doc["pylon-plan"] != 1:
        return  # refused by the version check before either validator runs
    fast_ok = _fast_check(doc) is None
    full_ok = not any(True for _ in _validator().iter_errors(doc))
    assert fast_ok == full_ok, doc


_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
            | st.sampled_from([D1, "file:///x.wasm", "https://h.example/y", "crc32c", 1, 16, 4096, 0, -1]))
_keys = st.text(max_size=12) | st.sampled_from(
    ["pylon-plan", "caps", "guest", "limits", "digest", "sources", "size", "wasi", "memory-mb",
     "timeout-ms", "max-payload-mb", "max-instances", "max-memory-mb", "crc32c"])
json_values = st.recursive(
    _scalars, lambda children: st.lists(children, max_size=5) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=40)
_odd_names = st.text(min_size=0, max_size=70) | st.sampled_from(
    ["Crc32c", "-x", "a" * 65, "crc32c\n", "crc 32", "zstd\u0000", "\ud800", "\u00e9t\u00e9", "\U0001f600"])


@FUZZ
@given(st.text() | st.text(alphabet=st.characters(codec=None)) | st.text(alphabet='[]{}",:0123456789.eE-+ \\utrfalsn'))
def test_arbitrary_text(text: str) -> None:
    check(text, json_ok=False)


@FUZZ
@given(json_values)
def test_arbitrary_json_values(value: Any) -> None:
    check(json.dumps(value), json_ok=True)
    check_validators_agree(value)


@FUZZ
@given(st.fixed_dictionaries({"pylon-plan": st.just(1) | json_values,
                              "caps": st.dictionaries(_odd_names | _keys, json_values, max_size=3)},
                             optional={"guest": json_values, "limits": json_values}))
def test_plan_shaped_values(doc: dict[str, Any]) -> None:
    check(json.dumps(doc), json_ok=True)
    check_validators_agree(doc)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _mutate(doc: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """A copy of ``doc`` with one random change somewhere in it."""
    doc = json.loads(json.dumps(doc))
    path = data.draw(st.sampled_from(_paths(doc)[1:]), label="path")
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    op = data.draw(st.sampled_from(["drop", "add", "replace", "wrong-type", "huge", "rename"]), label="op")
    if op == "drop":
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
    elif op == "add":
        target = parent[last] if isinstance(parent[last], (dict, list)) else parent
        value = data.draw(json_values, label="value")
        if isinstance(target, dict):
            target[data.draw(_keys | _odd_names, label="key")] = value
        else:
            target.append(value)
    elif op == "replace":
        parent[last] = data.draw(json_values, label="value")
    elif op == "wrong-type":
        parent[last] = data.draw(st.sampled_from(
            [True, False, None, 1.0, 64.0, 1e300, -0.0, "64", [], {}, [64], {"a": 1}, 2**63, -(2**63)]))
    elif op == "huge":
        parent[last] = data.draw(st.sampled_from([HUGE_MARK, 10**400, -(10**400), 2**53]), label="huge")
    else:  # rename: a key (cap names included) becomes odd text
        if isinstance(parent, dict):
            parent[data.draw(_odd_names, label="name")] = parent.pop(last)
        else:
            parent[last] = data.draw(_odd_names, label="name")
    return doc


@FUZZ
@given(st.data())
def test_mutations_of_a_valid_plan(data: st.DataObject) -> None:
    doc = VALID
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        doc = _mutate(doc, data)
    text = json.dumps(doc, ensure_ascii=data.draw(st.booleans(), label="ascii"))
    huge = HUGE_MARK in text  # then the text holds a number json.loads refuses: no JSON path
    check(text.replace(json.dumps(HUGE_MARK), HUGE_DIGITS), json_ok=not huge)
    if not huge:
        check_validators_agree(doc)


@FUZZ
@given(st.lists(st.sampled_from(["[", "{", '{"a":', '{"caps":', "[1,", '"x"', ",", ":", "]", "}", " "]),
                min_size=1, max_size=200),
       st.integers(0, 5000))
def test_hostile_nesting(prefix: list[str], depth: int) -> None:
    opener = "".join(prefix)
    check(opener * (depth // max(len(prefix), 1) + 1), json_ok=False)
    check('{"pylon-plan": 1, "caps": {"a": ' + "[" * (depth + 1) + "]" * (depth + 1) + "}}", json_ok=True)


def test_a_valid_plan_is_valid() -> None:
    # The mutations start from a plan that loads.
    plan = Plan.loads(json.dumps(VALID))
    assert plan.guest is not None and plan.guest.size == 36_000_000
