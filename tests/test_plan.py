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
    DEFAULT_GUEST_LIMITS,
    DEFAULT_LIMITS,
    DEFAULT_RUN_LIMITS,
    MAX_DEPTH,
    CapEntry,
    CapLimits,
    GuestLimits,
    GuestRef,
    Plan,
    RunLimits,
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
        memory_mb=64, timeout_ms=DEFAULT_LIMITS.timeout_ms, max_payload_mb=DEFAULT_LIMITS.max_payload_mb,
        max_handles=DEFAULT_LIMITS.max_handles)
    assert plan.digests() == {plan.guest.digest, plan.caps["crc32c"].digest, zstd.digest}


def test_non_canonical_input_normalises() -> None:
    text = f'{{"caps": {{"b": {{"sources": [], "digest": "{D1}"}}, "a": {{"digest": "{D2}", "sources": []}}}},' \
           ' "pylon-plan": 1}'
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
    sections = {"cap": doc[doc.index("### Cap limits"):], "guest": doc[doc.index("### Guest limits"):],
                "run": doc[doc.index("### Run limits"):]}
    expected = [("cap", "memory-mb", DEFAULT_LIMITS.memory_mb), ("cap", "timeout-ms", DEFAULT_LIMITS.timeout_ms),
                ("cap", "max-payload-mb", DEFAULT_LIMITS.max_payload_mb),
                ("cap", "max-handles", DEFAULT_LIMITS.max_handles),
                ("guest", "memory-mb", DEFAULT_GUEST_LIMITS.memory_mb),
                ("guest", "timeout-ms", DEFAULT_GUEST_LIMITS.timeout_ms),
                ("run", "max-instances", DEFAULT_RUN_LIMITS.max_instances),
                ("run", "max-memory-mb", DEFAULT_RUN_LIMITS.max_memory_mb)]
    for section, key, value in expected:
        shown = "none" if value is None else str(value)
        assert re.search(rf"`{key}`\s*\|\s*{shown}\b", sections[section]), (section, key)


def test_schema_limit_keys_match_the_dataclasses() -> None:
    defs = schema()["$defs"]
    assert set(defs["limits"]["properties"]) == {"memory-mb", "timeout-ms", "max-payload-mb", "max-handles"}
    assert set(defs["guestLimits"]["properties"]) == {"memory-mb", "timeout-ms", "tmp-mb"}
    assert set(defs["runLimits"]["properties"]) == {"max-instances", "max-memory-mb"}
    assert set(CapLimits.__dataclass_fields__) == {"memory_mb", "timeout_ms", "max_payload_mb", "max_handles"}
    assert set(GuestLimits.__dataclass_fields__) == {"memory_mb", "timeout_ms", "tmp_mb"}
    assert set(RunLimits.__dataclass_fields__) == {"max_instances", "max_memory_mb"}


def test_schema_has_no_fractional_numbers() -> None:
    # The compiled validator counts 1.0 as an integer; plan.py refuses any
    # float instead, which is right only while no field takes one.
    assert '"number"' not in json.dumps(schema())


# -- guest limits, run limits, sizes ------------------------------------------------

def test_guest_limit_defaults() -> None:
    assert DEFAULT_GUEST_LIMITS == GuestLimits(timeout_ms=None, memory_mb=2048, tmp_mb=64)
    assert Plan().guest_limits() == DEFAULT_GUEST_LIMITS
    assert GuestLimits(timeout_ms=5).effective() == GuestLimits(timeout_ms=5, memory_mb=2048, tmp_mb=64)
    pinned = Plan(guest=GuestRef(digest=D1))
    assert pinned.guest_limits() == DEFAULT_GUEST_LIMITS
    assert pinned.guest is not None and pinned.guest.limits == GuestLimits()


def test_stock_guest_with_limits() -> None:
    plan = Plan.load(PLANS / "good_stock_guest_limits.json")
    assert plan.guest == GuestRef(limits=GuestLimits(timeout_ms=60000, memory_mb=512))
    assert plan.guest.digest is None and plan.guest.size is None and plan.guest.sources == ()
    assert plan.guest_limits() == GuestLimits(timeout_ms=60000, memory_mb=512, tmp_mb=64)
    assert plan.digests() == {plan.caps["crc32c"].digest}  # the stock guest is not named
    assert plan.run_limits() == RunLimits(max_instances=8, max_memory_mb=DEFAULT_RUN_LIMITS.max_memory_mb)
    assert Plan(guest=GuestRef()).dumps() == (PLANS / "good_stock_guest_default_limits.json").read_text()


def test_run_limit_defaults_and_canonical_form() -> None:
    assert DEFAULT_RUN_LIMITS == RunLimits(max_instances=32, max_memory_mb=1024)
    assert Plan().run_limits() == DEFAULT_RUN_LIMITS
    assert "limits" not in Plan().to_json()  # written only when set
    plan = Plan().with_limits(RunLimits(max_memory_mb=2048))
    assert plan.to_json()["limits"] == {"max-memory-mb": 2048}
    assert plan.run_limits() == RunLimits(max_instances=32, max_memory_mb=2048)
    assert loads(plan.dumps()) == plan
    with pytest.raises(PlanError, match=r"at \$\.limits\.max-instances: must be at most 1024, got 5000"):
        Plan(limits=RunLimits(max_instances=5000))


def test_sizes() -> None:
    plan = Plan.load(PLANS / "good_sizes_and_limits.json")
    assert plan.guest is not None and plan.guest.size == 36_000_000
    assert plan.guest.limits == GuestLimits(memory_mb=1024)
    assert plan.caps["crc32c"].size == 20480 and plan.caps["zstd"].size == 1
    again = Plan().with_cap("crc32c", digest=D1, size=7)
    assert again.caps["crc32c"].size == 7 and again.to_json()["caps"]["crc32c"]["size"] == 7
    assert "size" not in Plan().with_cap("crc32c", digest=D1).to_json()["caps"]["crc32c"]
    with pytest.raises(PlanError, match=r"at \$\.caps\.crc32c\.size: must be at least 1, got 0"):
        Plan().with_cap("crc32c", digest=D1, size=0)
    with pytest.raises(PlanError, match=r"at \$\.guest\.size: 'size' needs 'digest'"):
        Plan(guest=GuestRef(size=5))
    with pytest.raises(PlanError, match=r"at \$\.guest\.sources: 'sources' needs 'digest'"):
        Plan(guest=GuestRef(sources=("file:///g.wasm",)))


_INTEGER_FIELDS = [
    ("pylon-plan",), ("caps", "c", "size"), ("caps", "c", "limits", "memory-mb"),
    ("caps", "c", "limits", "timeout-ms"), ("caps", "c", "limits", "max-payload-mb"),
    ("guest", "size"), ("guest", "limits", "memory-mb"), ("guest", "limits", "timeout-ms"),
    ("limits", "max-instances"), ("limits", "max-memory-mb"),
]


@pytest.mark.parametrize("field_path", _INTEGER_FIELDS, ids=lambda p: ".".join(p))
@pytest.mark.parametrize("bad", [True, 64.0, 1e3], ids=["true", "64.0", "1e3"])
def test_integers_are_never_bools_or_floats(field_path: tuple[str, ...], bad: object) -> None:
    good = {"pylon-plan": 1, "caps": {"c": {"digest": D1, "sources": [], "size": 64,
                                            "limits": {"memory-mb": 64, "timeout-ms": 64, "max-payload-mb": 64}}},
            "guest": {"digest": D2, "sources": [], "size": 64, "limits": {"memory-mb": 64, "timeout-ms": 64}},
            "limits": {"max-instances": 64, "max-memory-mb": 64}}
    assert loads(json.dumps(good)).run_limits().max_instances == 64
    node = good
    for step in field_path[:-1]:
        node = node[step]
    node[field_path[-1]] = bad
    with pytest.raises(PlanError) as info:
        loads(json.dumps(good))
    assert info.value.path == "$." + ".".join(field_path)
    assert "expected an integer" in str(info.value) or "unsupported plan version" in str(info.value)


# -- hostile documents -----------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "[" * 100_000,
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 100_000,
    '{"a":' * 100_000 + "1" + "}" * 100_000,
    '{"pylon-plan": 1, "caps": {"x": ' + '{"a": [' * 50_000 + "]}" * 50_000 + "}}",
], ids=["open-lists", "closed-lists", "open-objects", "closed-objects", "inside-a-plan"])
def test_deep_nesting_is_a_plan_error_with_a_path(text: str) -> None:
    with pytest.raises(PlanError) as info:
        loads(text, file="deep.json")
    message = str(info.value)
    assert f"nested more than {MAX_DEPTH} levels deep" in message
    assert info.value.path is not None and info.value.path.startswith("$")
    assert message.startswith(f"deep.json: at {info.value.path}: ")
    if text.startswith("["):
        assert info.value.path == "$" + "[0]" * MAX_DEPTH
    elif text.startswith('{"a"'):
        assert info.value.path == "$" + ".a" * MAX_DEPTH


def test_nesting_up_to_the_limit_is_left_to_the_schema() -> None:
    inside = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    with pytest.raises(PlanError, match=r"at \$\.caps: expected an object, got a list"):
        loads(f'{{"pylon-plan": 1, "caps": {inside}}}')


def test_validation_cannot_be_skipped_through_the_cache(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Validation used to be skipped for a document whose hash was in the cache
    # (<cache>/validated-plans/<sha256>), so anyone who could write the cache
    # could load any limits. Plant such a marker: the plan must still fail,
    # and loading must not write anything into the cache.
    import hashlib

    from pylon.plan import SCHEMA_PATH
    cache = tmp_path / "cache"
    monkeypatch.setenv("PYLON_CACHE_DIR", str(cache))
    doc = {"pylon-plan": 1, "caps": {"c": {"digest": D1, "sources": [], "limits": {"memory-mb": 999999},
                                           "wasi": False}}}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    marker = cache / "validated-plans" / hashlib.sha256(
        SCHEMA_PATH.read_bytes() + b"\0" + canonical.encode()).hexdigest()
    marker.parent.mkdir(parents=True)
    marker.touch()
    with pytest.raises(PlanError, match=r"at \$\.caps\.c\.limits\.memory-mb: must be at most 4096"):
        loads(json.dumps(doc))
    marker.unlink()
    marker.parent.rmdir()
    good = Plan().with_cap("crc32c", digest=D1).dumps()
    loads(good)
    assert list(cache.iterdir()) == []


def test_compiled_validator_rejects_every_bad_golden_that_parses() -> None:
    from pylon.plan import _fast_check, _parse_json
    for case in BAD:
        try:
            doc = _parse_json(case.read_text(errors="replace"), file=None)
        except PlanError:
            continue  # not JSON: never reaches a validator
        if isinstance(doc, dict) and doc.get("pylon-plan", 1) != 1:
            continue  # the version check comes first
        assert _fast_check(doc) is not None, case.name


_names = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,10}\Z")
_digests = st.from_regex(r"\Asha256:[0-9a-f]{64}\Z")
_limit = st.one_of(st.none(), st.integers(1, 4096))
_size = st.one_of(st.none(), st.integers(1, 2**53 - 1))
_sources = st.lists(st.sampled_from(["file:///a.wasm", "https://h.example/b", "http://h:8/c"]),
                    unique=True).map(tuple)
_caps = st.dictionaries(_names, st.builds(
    CapEntry, digest=_digests, sources=_sources, size=_size,
    limits=st.builds(CapLimits, memory_mb=_limit, timeout_ms=_limit, max_payload_mb=_limit),
    wasi=st.booleans()), max_size=4)
_guest_limits = st.builds(GuestLimits, timeout_ms=st.one_of(st.none(), st.integers(1, 86_400_000)),
                          memory_mb=st.one_of(st.none(), st.integers(16, 4096)))
_guests = st.one_of(
    st.none(),
    st.builds(GuestRef, limits=_guest_limits),
    st.builds(GuestRef, digest=_digests, sources=_sources, size=_size, limits=_guest_limits))
_run_limits = st.builds(RunLimits, max_instances=st.one_of(st.none(), st.integers(1, 1024)),
                        max_memory_mb=st.one_of(st.none(), st.integers(1, 65536)))


@settings(max_examples=60, deadline=None)
@given(caps=_caps, guest=_guests, limits=_run_limits)
def test_any_valid_plan_round_trips(caps: dict[str, CapEntry], guest: GuestRef | None,
                                    limits: RunLimits) -> None:
    plan = Plan(guest=guest, caps=caps, limits=limits)
    text = plan.dumps()
    assert loads(text) == plan
    assert loads(text).dumps() == text


# -- the authenticated record of validated plans ----------------------------------

def test_validated_record_cannot_be_forged_by_writing_the_cache(tmp_path: Path) -> None:
    """Old main remembered a valid plan by sha256(schema + document): anyone who could
    write the cache could make an out-of-range plan pass. Records are now HMACs under
    a per-install key."""
    import hashlib
    import json as _json

    from pylon.plan import SCHEMA_PATH
    from pylon.validated import Memo

    memo = Memo(SCHEMA_PATH.read_bytes(), folder=tmp_path / "validated")
    bad = {"pylon-plan": 1, "caps": {"crc32c": {"digest": D1, "sources": [], "limits": {"memory-mb": 999999}}}}
    canonical = _json.dumps(bad, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    (tmp_path / "validated").mkdir(exist_ok=True, mode=0o700)
    # What an attacker can compute: the old memo's name, and a sha256 of anything.
    (tmp_path / "validated" / hashlib.sha256(SCHEMA_PATH.read_bytes() + b"\0" + canonical.encode()).hexdigest()).touch()
    (tmp_path / "validated" / hashlib.sha256(canonical.encode()).hexdigest()).touch()
    assert not memo.knows(bad)
    good = {"pylon-plan": 1, "caps": {}}
    memo.remember(good)
    assert memo.knows(good) and not memo.knows(bad)
    assert (tmp_path / "validated" / "key").stat().st_mode & 0o777 == 0o600
    # Another install (another key) does not recognise this one's records.
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    for record in (tmp_path / "validated").iterdir():
        if record.name != "key":
            (other / record.name).touch()
    assert not Memo(SCHEMA_PATH.read_bytes(), folder=other).knows(good)


def test_an_unsafe_key_means_full_validation(tmp_path: Path) -> None:
    from pylon.plan import SCHEMA_PATH
    from pylon.validated import Memo

    folder = tmp_path / "validated"
    memo = Memo(SCHEMA_PATH.read_bytes(), folder=folder)
    good = {"pylon-plan": 1, "caps": {}}
    memo.remember(good)
    (folder / "key").chmod(0o644)
    assert not Memo(SCHEMA_PATH.read_bytes(), folder=folder).knows(good)


def test_a_known_plan_loads_without_the_validators(tmp_path: Path) -> None:
    import subprocess
    import sys as _sys

    plan = tmp_path / "p.json"
    plan.write_text('{"pylon-plan": 1, "caps": {}}\n')
    code = ("import sys; from pylon.plan import Plan; Plan.load(sys.argv[1]); "
            "print('fastjsonschema' in sys.modules, 'jsonschema' in sys.modules)")
    env = {**__import__("os").environ, "PYLON_CACHE_DIR": str(tmp_path / "cache")}
    first = subprocess.run([_sys.executable, "-c", code, str(plan)], env=env, capture_output=True, text=True)
    second = subprocess.run([_sys.executable, "-c", code, str(plan)], env=env, capture_output=True, text=True)
    assert first.stdout.split() == ["True", "False"], first.stderr
    assert second.stdout.split() == ["False", "False"], second.stderr
