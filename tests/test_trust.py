"""Trust policy tests: exact (name, digest) pairs, atomic save, actionable errors."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from pylon.errors import StateError, TrustError
from pylon.trust import TrustEntry, TrustPolicy, allow_command, allow_guest_command

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
    ('{"version": 1, "allow": {"crc32c": "sha256:1"}}', 'at $.allow.crc32c: expected a list, got the string'),
    ('{"version": 1, "allow": {"crc32c": ["sha256:1"]}}', "bad digest 'sha256:1'"),
    ('{"version": 1, "allow": {"Bad": []}}', "bad cap name 'Bad'"),
    ('{"version": 1, "allow": {"crc32c\\n": []}}', "bad cap name 'crc32c\\n'"),
    ('{"version": 1, "allow": {}, "guests": "sha256:1"}', 'at $.guests: expected a list, got the string'),
    ('{"version": 1, "allow": {}, "guests": ["sha256:1"]}', "bad guest digest 'sha256:1'"),
    ('{"version": 1, "allow": {}, "guests": [7]}', "bad guest digest 7"),
    ('[' * 100_000, "invalid JSON"),
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


def test_trust_file_not_utf8(config_dir: Path) -> None:
    config_dir.mkdir()
    (config_dir / "trust.json").write_bytes(b'{"version": 1, "allow": {"\xff": []}}')
    with pytest.raises(TrustError, match="not UTF-8 text"):
        TrustPolicy.load()


def test_trailing_newlines_are_not_names_or_digests() -> None:
    # re's '$' matches before a final newline; these must still be refused.
    policy = TrustPolicy()
    with pytest.raises(TrustError, match="bad cap name"):
        policy.allow("crc32c\n", D1)
    with pytest.raises(TrustError, match="bad digest"):
        policy.allow("crc32c", D1 + "\n")
    with pytest.raises(TrustError, match="bad guest digest"):
        policy.allow_guest(D1 + "\n")


# -- guests --------------------------------------------------------------------

def test_guest_allow_check_revoke(config_dir: Path) -> None:
    policy = TrustPolicy.load()
    assert not policy.is_trusted_guest(D1)
    with pytest.raises(TrustError) as info:
        policy.check_guest(D1)
    assert str(info.value) == (f"guest with digest {D1} is not trusted; "
                               f"to allow it, run: composectl trust allow --guest {D1}")
    assert policy.allow_guest(D1) is True
    assert policy.allow_guest(D1) is False
    policy.check_guest(D1)
    assert not policy.is_trusted("guest", D1)  # a trusted guest is not a trusted cap
    policy.save()
    doc = json.loads((config_dir / "trust.json").read_text())
    assert doc == {"version": 1, "allow": {}, "guests": [D1]}
    again = TrustPolicy.load()
    assert again.is_trusted_guest(D1) and again.guests() == [D1] and again.entries() == []
    assert again.revoke_guest(D2) is False
    assert again.revoke_guest(D1) is True
    again.save()
    assert "guests" not in json.loads((config_dir / "trust.json").read_text())  # written only when set


def test_allow_guest_command() -> None:
    assert allow_guest_command(D1) == f"composectl trust allow --guest {D1}"


# -- what a guest is told, and what the host is told -------------------------------

def test_guest_message_names_only_the_cap_digest_and_command(config_dir: Path) -> None:
    other = "sha256:" + "3" * 64
    policy = TrustPolicy.load()
    policy.allow("crc32c", other)
    policy.allow("zstd", D2)
    policy.save()
    policy = TrustPolicy.load()
    short = policy.guest_message("crc32c", D1)
    assert short == (f"cap 'crc32c' with digest {D1} is not trusted; "
                     f"to allow it, run: composectl trust allow crc32c {D1}")
    assert other not in short and D2 not in short and str(config_dir) not in short and "/" not in short
    full = policy.host_message("crc32c", D1)
    assert other in full and D1 in full and allow_command("crc32c", D1) in full
    with pytest.raises(TrustError) as info:
        policy.check("crc32c", D1)
    assert str(info.value) == full


# -- the trust file's folder ---------------------------------------------------------

def test_save_creates_a_private_folder(config_dir: Path) -> None:
    policy = TrustPolicy.load()
    policy.allow("crc32c", D1)
    policy.save()
    assert (config_dir.stat().st_mode & 0o777) == 0o700


def test_unsafe_folder_or_file_is_refused(config_dir: Path) -> None:
    policy = TrustPolicy.load()
    policy.allow("crc32c", D1)
    policy.save()
    os.chmod(config_dir, 0o777)
    with pytest.raises(StateError, match="writable by other users"):
        TrustPolicy.load()
    with pytest.raises(StateError, match="writable by other users"):
        policy.save()
    os.chmod(config_dir, 0o700)
    os.chmod(config_dir / "trust.json", 0o666)
    with pytest.raises(StateError, match="writable by other users"):
        TrustPolicy.load()
    os.chmod(config_dir / "trust.json", 0o644)
    assert TrustPolicy.load().is_trusted("crc32c", D1)


# -- composectl setup ------------------------------------------------------------------

@dataclass
class _Built:
    path: Path
    name: str = ""


def test_setup_trusts_the_stock_guest_and_records_sizes(config_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import pylon.build.caps
    import pylon.build.guest
    from pylon import stock
    from pylon.blobstore import BlobStore, digest_bytes
    from pylon.plan import GuestLimits, GuestRef, Plan, RunLimits

    monkeypatch.setenv("PYLON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PYLON_BLOB_DIR", raising=False)
    guest_file, cap_file = tmp_path / "pylon.wasm", tmp_path / "crc32c.wasm"
    guest_file.write_bytes(b"the stock guest")
    cap_file.write_bytes(b"a cap")
    monkeypatch.setattr(pylon.build.guest, "build_guest", lambda: _Built(guest_file))
    monkeypatch.setattr(pylon.build.caps, "build_cap", lambda _dir: _Built(cap_file, "crc32c"))
    # Limits set by hand in the default plan survive a new setup.
    config_dir.mkdir(mode=0o700)
    Plan(guest=GuestRef(limits=GuestLimits(timeout_ms=5000)), limits=RunLimits(max_instances=4)).save(
        config_dir / "plan.json")

    result = stock.setup(store=BlobStore(), cap_dirs=[tmp_path / "caps" / "crc32c"])

    guest_digest = digest_bytes(b"the stock guest")
    assert result.guest_digest == guest_digest
    policy = TrustPolicy.load()
    assert policy.is_trusted_guest(guest_digest)
    assert policy.is_trusted("crc32c", digest_bytes(b"a cap"))
    plan = Plan.load(config_dir / "plan.json")
    assert plan.caps["crc32c"].size == len(b"a cap")
    assert plan.guest == GuestRef(limits=GuestLimits(timeout_ms=5000))
    assert plan.run_limits().max_instances == 4
    assert stock.stock_guest_size() == len(b"the stock guest")
    assert (config_dir.stat().st_mode & 0o777) == 0o700


def test_setup_refuses_an_unsafe_config_folder(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pylon.build.guest
    from pylon import stock

    def no_build() -> None:
        raise AssertionError("setup must refuse before building anything")

    monkeypatch.setattr(pylon.build.guest, "build_guest", no_build)
    config_dir.mkdir()
    os.chmod(config_dir, 0o777)
    with pytest.raises(StateError, match="writable by other users"):
        stock.setup(cap_dirs=[])
