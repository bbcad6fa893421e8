"""Trust policy tests: exact (name, digest) pairs, atomic save, actionable errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pylon.errors import TrustError
from pylon.trust import TrustEntry, TrustPolicy, allow_command

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


@pytest.fixture(autouse=True)
def config_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("PYLON_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


def test_missing_file_trusts_nothing(config_dir: Path) -> None:
    policy = TrustPolicy.load()
    assert policy.path == config_dir / "trust.json"
    assert policy.entries() == []
    with pytest.raises(TrustError) as info:
        policy.check("crc32c", D1)
    assert str(info.value) == (
        f"cap 'crc32c' with digest {D1} is not trusted (no digest is allowed for 'crc32c'); "
        f"to allow it, run: composectl trust allow crc32c {D1}")


def test_allow_save_load_check(config_dir: Path) -> None:
    policy = TrustPolicy.load()
    assert policy.allow("crc32c", D1) is True
    assert policy.allow("crc32c", D1) is False
    policy.save()
    again = TrustPolicy.load()
    again.check("crc32c", D1)
    assert again.entries() == [TrustEntry("crc32c", D1)]
    text = (config_dir / "trust.json").read_text()
    assert json.loads(text) == {"version": 1, "allow": {"crc32c": [D1]}}
    assert text.endswith("\n") and '\n  "allow"' in text
    assert [p.name for p in config_dir.iterdir()] == ["trust.json"]  # no temp left behind


def test_trust_is_per_name_and_per_digest() -> None:
    policy = TrustPolicy()
    policy.allow("crc32c", D1)
    assert policy.is_trusted("crc32c", D1)
    assert not policy.is_trusted("crc32c", D2)  # a new build must be allowed again
    assert not policy.is_trusted("zlib", D1)  # the same bytes under another name are not trusted
    with pytest.raises(TrustError, match=f"allowed digests for 'crc32c' are {D1}.*trust allow crc32c {D2}"):
        policy.check("crc32c", D2)


def test_revoke() -> None:
    policy = TrustPolicy()
    policy.allow("crc32c", D1)
    policy.allow("crc32c", D2)
    policy.allow("zstd", D1)
    assert policy.revoke("crc32c", D2) == [D2]
    assert policy.revoke("crc32c", D2) == []
    assert policy.revoke("zstd") == [D1]
    assert policy.entries() == [TrustEntry("crc32c", D1)]
    policy.save()
    assert json.loads(policy.path.read_text())["allow"] == {"crc32c": [D1]}


def test_bad_names_and_digests_are_refused() -> None:
    policy = TrustPolicy()
    with pytest.raises(TrustError, match="bad cap name 'CRC'"):
        policy.allow("CRC", D1)
    with pytest.raises(TrustError, match="bad digest 'sha256:12' for cap 'crc32c'"):
        policy.allow("crc32c", "sha256:12")


@pytest.mark.parametrize(("content", "message"), [
    ("{", "invalid JSON at line 1, column 2"),
    ("[]", "expected a JSON object"),
    ('{"version": 2, "allow": {}}', "unsupported trust file version 2"),
    ('{"version": 1, "allow": {}, "deny": {}}', "unknown key 'deny'"),
    ('{"version": 1, "allow": {"crc32c": "sha256:1"}}', "allow.crc32c must be a list"),
    ('{"version": 1, "allow": {"crc32c": ["sha256:1"]}}', "bad digest 'sha256:1'"),
    ('{"version": 1, "allow": {"Bad": []}}', "bad cap name 'Bad'"),
])
def test_malformed_file(config_dir: Path, content: str, message: str) -> None:
    config_dir.mkdir()
    (config_dir / "trust.json").write_text(content)
    with pytest.raises(TrustError) as info:
        TrustPolicy.load()
    assert str(info.value).startswith(f"{config_dir / 'trust.json'}: ")
    assert message in str(info.value)


def test_allow_command() -> None:
    assert allow_command("crc32c", D1) == f"composectl trust allow crc32c {D1}"
