"""Trust files (trust.json) against schemas/trust.schema.json.

Golden files in tests/trust_files/: ``<case>.json`` is copied into a fresh,
private config folder as ``trust.json``; loading it must fail with exactly
the text in ``<case>.err`` (the folder part dropped). ``good_<case>.json``
must load and save back to the same policy. Regenerate after an intended
message change with ``PYLON_BLESS=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pylon import trust
from pylon.errors import TrustError
from pylon.schema_check import _fast_validator
from pylon.trust import TrustPolicy

CASES = Path(__file__).parent / "trust_files"
BLESS = os.environ.get("PYLON_BLESS") == "1"
BAD = sorted(p for p in CASES.glob("*.json") if not p.name.startswith("good_"))
GOOD = sorted(CASES.glob("good_*.json"))


@pytest.fixture
def private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "config"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("PYLON_CACHE_DIR", str(tmp_path / "cache"))  # the validated-record memo
    return folder


def _load(case: Path, folder: Path) -> TrustPolicy:
    shutil.copyfile(case, folder / "trust.json")
    return TrustPolicy.load(folder / "trust.json")


@pytest.mark.parametrize("case", BAD, ids=lambda p: p.stem)
def test_bad_trust_file_golden(case: Path, private: Path) -> None:
    with pytest.raises(TrustError) as info:
        _load(case, private)
    actual = str(info.value).replace(str(private) + os.sep, "") + "\n"
    expected = case.with_suffix(".err")
    if BLESS:
        expected.write_text(actual)
    assert expected.exists(), f"no golden {expected.name}; run with PYLON_BLESS=1"
    assert actual == expected.read_text()


def test_every_bad_case_has_a_golden_and_no_orphans() -> None:
    assert {p.stem for p in CASES.glob("*.err")} == {p.stem for p in BAD}


@pytest.mark.parametrize("case", GOOD, ids=lambda p: p.stem)
def test_good_trust_file_loads_and_saves_back(case: Path, private: Path) -> None:
    policy = _load(case, private)
    doc = json.loads(case.read_text())
    assert {(e.name, e.digest) for e in policy.entries()} == {
        (name, d) for name, ds in doc.get("allow", {}).items() for d in ds}
    assert policy.guests() == sorted(doc.get("guests", []))
    policy.save()
    again = TrustPolicy.load(private / "trust.json")
    assert again.entries() == policy.entries() and again.guests() == policy.guests()


def test_a_known_file_is_not_validated_again(private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A trust file is read on every run: the second read of an unchanged one
    # is recognised by its authenticated record, not checked anew.
    _load(GOOD[0], private)

    def no_check(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("validated twice")

    monkeypatch.setattr(trust.SCHEMA, "first_problem", no_check)
    TrustPolicy.load(private / "trust.json")


def test_a_forged_record_cannot_vouch_for_a_bad_file(private: Path, tmp_path: Path) -> None:
    # Records are HMACs under a private key: files dropped into the cache
    # folder by someone else vouch for nothing.
    cache = tmp_path / "cache" / "validated"
    cache.mkdir(parents=True, mode=0o700)
    for i in range(64):
        (cache / (format(i, "x") * 64)[:64]).touch()
    with pytest.raises(TrustError, match="bad digest"):
        _load(CASES / "bad_digest.json", private)


def test_compiled_validator_rejects_every_bad_golden_that_parses() -> None:
    for case in BAD:
        try:
            doc = json.loads(case.read_text())
        except (ValueError, RecursionError):
            continue
        if isinstance(doc, dict) and doc.get("version") != 1 or case.stem == "duplicate_key":
            continue  # the version is checked first; json keeps the last duplicate
        if case.stem == "version_float":
            continue
        assert not _fast_validator("trust", None)(doc), case.name
