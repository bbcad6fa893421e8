"""Plan tests. Golden files in tests/plans/:

* ``<case>.json`` beside ``<case>.err``: loading must fail with exactly that text
  (the folder part of the file name is dropped so the text is machine-independent);
* ``good_<case>.json``: must load and dump back byte-identically.

To regenerate the ``.err`` files after an intended message change, run with
``PYLON_BLESS=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylon.blobstore import DIGEST_PATTERN
from pylon.errors import PlanError
from pylon.plan import (
    CAP_NAME_PATTERN,
    DEFAULT_LIMITS,
    CapEntry,
    CapLimits,
    GuestRef,
    Plan,
    load,
    loads,
    schema,
)

PLANS = Path(__file__).parent / "plans"
BLESS = os.environ.get("PYLON_BLESS") == "1"
BAD = sorted(p for p in PLANS.glob("*.json") if not p.name.startswith("good_"))
GOOD = sorted(PLANS.glob("good_*.json"))
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def _error_text(path: Path) -> str:
    with pytest.raises(PlanError) as info:
        Plan.load(path)
    return str(info.value).replace(str(path.parent) + os.sep, "") + "\n"


@pytest.mark.parametrize("case", BAD, ids=lambda p: p.stem)
def test_bad_plan_golden(case: Path) -> None:
    expected_file = case.with_suffix(".err")
    actual = _error_text(case)
    if BLESS:
        expected_file.write_text(actual)
    assert expected_file.exists(), f"no golden {expected_file.name}; run with PYLON_BLESS=1"
    assert actual == expected_file.read_text()


@pytest.mark.parametrize("case", GOOD, ids=lambda p: p.stem)
def test_good_plan_round_trips_byte_identically(case: Path, tmp_path: Path) -> None:
    text = case.read_text()
    plan = Plan.load(case)
    assert plan.dumps() == text
    out = tmp_path / "again.json"
    plan.save(out)
    assert out.read_bytes() == case.read_bytes()
    assert Plan.load(out) == plan


def test_every_bad_case_has_golden_and_no_orphans() -> None:
    errs = {p.stem for p in PLANS.glob("*.err")}
    assert errs == {p.stem for p in BAD}


def test_errors_carry_file_and_json_path() -> None:
    with pytest.raises(PlanError) as info:
        Plan.load(PLANS / "bad_digest.json")
    assert info.value.path == "$.caps.crc32c.digest"
    assert info.value.file == str(PLANS / "bad_digest.json")


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(PlanError, match=r"nope\.json: cannot read plan: No such file"):
        load(missing)
    with pytest.raises(PlanError, match="cannot read plan"):
        load(tmp_path)  # a directory


def test_full_plan_contents() -> None:
    plan = Plan.load(PLANS / "good_full.json")
    assert plan.guest is not None and plan.guest.sources[0] == "file:///opt/pylon/pylon.wasm"
    assert list(plan.caps) == ["crc32c", "sqlite_3-x", "zstd"]
    zstd = plan.caps["zstd"]
    assert zstd.wasi is True
    assert zstd.limits == CapLimits(memory_mb=64)
    assert zstd.limits.effective() == CapLimits(
        memory_mb=64, timeout_ms=DEFAULT_LIMITS.timeout_ms, max_payload_mb=DEFAULT_LIMITS.max_payload_mb)
    assert plan.digests() == {plan.guest.digest, plan.caps["crc32c"].digest, zstd.digest}


def test_non_canonical_input_normalises() -> None:
    text = '{"caps": {"b": {"sources": [], "digest": "%s"}, "a": {"digest": "%s", "sources": []}},' \
           ' "pylon-plan": 1}' % (D1, D2)
    plan = loads(text)
    doc = json.loads(plan.dumps())
    assert list(doc["caps"]) == ["a", "b"]
    assert doc["caps"]["b"] == {"digest": D1, "sources": [], "limits": {}, "wasi": False}
    assert plan.dumps().endswith("}\n") and "\n  \"caps\"" in plan.dumps()
    assert loads(plan.dumps()).dumps() == plan.dumps()


def test_with_and_without_cap() -> None:
    base = Plan()
    one = base.with_cap("crc32c", digest=D1, sources=["file:///x.wasm"], limits=CapLimits(timeout_ms=5))
    assert base.caps == {} and list(one.caps) == ["crc32c"]
    replaced = one.with_cap("crc32c", digest=D2)
    assert replaced.caps["crc32c"] == CapEntry(digest=D2)
    assert one.without_cap("crc32c") == base
    with pytest.raises(PlanError, match=r"at \$\.caps\.zlib: no cap named 'zlib' \(caps: crc32c\)"):
        one.without_cap("zlib")
    with pytest.raises(PlanError, match="bad cap name"):
        base.with_cap("Nope", digest=D1)
    with pytest.raises(PlanError, match=r"\$\.caps\.x\.limits\.memory-mb: must be at least 1"):
        base.with_cap("x", digest=D1, limits=CapLimits(memory_mb=0))


def test_construction_validates_like_loading() -> None:
    with pytest.raises(PlanError, match=r"at \$\.guest\.digest: bad digest"):
        Plan(guest=GuestRef(digest="sha256:nope"))
    plan = Plan(guest=GuestRef(digest=D1, sources=["https://h.example/g.wasm"]))
    assert plan.with_guest(None).guest is None


def test_plan_is_frozen_and_keyword_only() -> None:
    plan = Plan()
    with pytest.raises(AttributeError):
        plan.guest = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.caps["x"] = CapEntry(digest=D1)  # type: ignore[index]
    with pytest.raises(TypeError):
        CapLimits(1, 2, 3)  # type: ignore[misc]


def test_save_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "plan.json"
    Plan().save(target)
    Plan().with_cap("a", digest=D1).save(target)
    assert [p.name for p in target.parent.iterdir()] == ["plan.json"]
    assert Plan.load(target).caps["a"].digest == D1


def test_schema_agrees_with_code() -> None:
    defs = schema()["$defs"]
    assert defs["digest"]["pattern"] == DIGEST_PATTERN
    assert defs["capName"]["pattern"] == CAP_NAME_PATTERN
    assert schema()["$schema"].endswith("/2020-12/schema")


def test_docs_list_the_defaults() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "plan.md").read_text()
    for key, value in (("memory-mb", DEFAULT_LIMITS.memory_mb), ("timeout-ms", DEFAULT_LIMITS.timeout_ms),
                       ("max-payload-mb", DEFAULT_LIMITS.max_payload_mb)):
        assert re.search(rf"`{key}`\s*\|\s*{value}\b", doc), key


_names = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,10}\Z")
_digests = st.from_regex(r"\Asha256:[0-9a-f]{64}\Z")
_limit = st.one_of(st.none(), st.integers(1, 4096))
_caps = st.dictionaries(_names, st.builds(
    CapEntry, digest=_digests,
    sources=st.lists(st.sampled_from(["file:///a.wasm", "https://h.example/b", "http://h:8/c"]),
                     unique=True).map(tuple),
    limits=st.builds(CapLimits, memory_mb=_limit, timeout_ms=_limit, max_payload_mb=_limit),
    wasi=st.booleans()), max_size=4)


@settings(max_examples=60, deadline=None)
@given(caps=_caps, guest=st.one_of(st.none(), st.builds(GuestRef, digest=_digests)))
def test_any_valid_plan_round_trips(caps: dict[str, CapEntry], guest: GuestRef | None) -> None:
    plan = Plan(guest=guest, caps=caps)
    text = plan.dumps()
    assert loads(text) == plan
    assert loads(text).dumps() == text
