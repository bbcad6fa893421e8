"""composectl tests: every command through typer's CliRunner, plus real subprocesses.

The store and trust file live in tmp dirs (PYLON_CACHE_DIR / PYLON_CONFIG_DIR).
``run`` and ``cap build`` are exercised for real, through the engine and real
components, in tests/test_dynlink_e2e.py and tests/test_caps_build.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from pylon.blobstore import BlobStore, digest_bytes
from pylon.cli.main import app
from pylon.cli.progress import fetch_progress
from pylon.plan import Plan
from pylon.trust import TrustPolicy

PYTHON_DIR = Path(__file__).resolve().parents[1] / "python"
CAP = b"\0asm fake crc32c component"
CAP_DIGEST = digest_bytes(CAP)


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    monkeypatch.delenv("PYLON_BLOB_DIR", raising=False)
    values = {"PYLON_CACHE_DIR": str(tmp_path / "cache"), "PYLON_CONFIG_DIR": str(tmp_path / "config")}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return values


@pytest.fixture
def cap_file(tmp_path: Path) -> Path:
    path = tmp_path / "crc32c.wasm"
    path.write_bytes(CAP)
    return path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_every_command_and_option_has_help() -> None:
    root = typer.main.get_command(app)
    seen = []

    def walk(cmd: Any, path: str) -> None:
        assert cmd.help, f"{path} has no help"
        for param in cmd.params:
            if param.name != "help":
                assert getattr(param, "help", None), f"{path} {param.name} has no help"
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")
        seen.append(path)

    walk(root, "composectl")
    assert {"composectl run", "composectl plan add", "composectl blob gc", "composectl trust revoke",
            "composectl cap build"} <= set(seen)
    for path in seen:
        result = invoke(*path.split()[1:], "--help")
        assert result.exit_code == 0, path


# -- plan ----------------------------------------------------------------------

def test_plan_new_add_show_remove(cap_file: Path, tmp_path: Path) -> None:
    assert invoke("plan", "new", "app.json").exit_code == 0
    assert Plan.load("app.json") == Plan()
    again = invoke("plan", "new", "app.json")
    assert again.exit_code == 2 and "already exists; pass --force" in again.stderr

    result = invoke("plan", "add", "app.json", "crc32c", str(cap_file), "--memory-mb", "128",
                    "--timeout-ms", "500", "--max-payload-mb", "8", "--max-handles", "16", "--wasi",
                    "--source", "https://mirror.example/crc32c.wasm")
    assert result.exit_code == 0, result.output
    assert f"composectl trust allow crc32c {CAP_DIGEST}" in result.stderr
    cap = Plan.load("app.json").caps["crc32c"]
    assert cap.digest == CAP_DIGEST and cap.wasi and cap.size == len(CAP)
    assert cap.sources == (cap_file.resolve().as_uri(), "https://mirror.example/crc32c.wasm")
    assert (cap.limits.memory_mb, cap.limits.timeout_ms, cap.limits.max_payload_mb) == (128, 500, 8)
    assert cap.limits.max_handles == 16
    assert BlobStore().has(CAP_DIGEST)

    shown = invoke("plan", "show", "app.json")
    assert shown.exit_code == 0
    assert "crc32c" in shown.stdout and "guest: stock" in shown.stdout and "memory 128 MiB" in shown.stdout
    assert "guest limits: memory 2048 MiB, timeout none" in shown.stdout
    assert "run limits: instances 32, cap memory 1024 MiB" in shown.stdout

    assert invoke("plan", "remove", "app.json", "crc32c").exit_code == 0
    assert Plan.load("app.json").caps == {}
    missing = invoke("plan", "remove", "app.json", "crc32c")
    assert missing.exit_code == 2
    assert missing.stderr == "error: app.json: at $.caps.crc32c: no cap named 'crc32c' (caps: none)\n"


def test_plan_new_with_guest(tmp_path: Path) -> None:
    guest = tmp_path / "pylon.wasm"
    guest.write_bytes(b"guest component")
    assert invoke("plan", "new", "g.json", "--guest", str(guest)).exit_code == 0
    plan = Plan.load("g.json")
    assert plan.guest is not None and plan.guest.digest == digest_bytes(b"guest component")
    assert plan.guest.sources == (guest.resolve().as_uri(),)
    assert plan.guest.size == len(b"guest component")


def test_plan_add_by_digest_fetches_from_source(cap_file: Path) -> None:
    invoke("plan", "new", "app.json")
    result = invoke("plan", "add", "app.json", "crc32c", CAP_DIGEST, "--source", cap_file.as_uri())
    assert result.exit_code == 0, result.output
    assert BlobStore().has(CAP_DIGEST)
    assert Plan.load("app.json").caps["crc32c"].size == len(CAP)
    unknown = invoke("plan", "add", "app.json", "zstd", digest_bytes(b"nothing"))
    assert unknown.exit_code == 2 and "the plan gives no source for it" in unknown.stderr
    neither = invoke("plan", "add", "app.json", "zstd", "not-a-file")
    assert neither.exit_code == 2 and "is neither a file" in neither.output


def test_plan_add_bad_values_name_the_plan(cap_file: Path) -> None:
    invoke("plan", "new", "app.json")
    bad = invoke("plan", "add", "app.json", "CRC", str(cap_file))
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error: app.json: at $.caps.CRC: bad cap name 'CRC'")
    neg = invoke("plan", "add", "app.json", "crc32c", str(cap_file), "--memory-mb", "-5")
    assert neg.stderr == "error: app.json: at $.caps.crc32c.limits.memory-mb: must be at least 1, got -5\n"


def test_plan_verify(cap_file: Path) -> None:
    invoke("plan", "new", "app.json")
    invoke("plan", "add", "app.json", "crc32c", str(cap_file))
    untrusted = invoke("plan", "verify", "app.json")
    assert untrusted.exit_code == 1
    assert f"not trusted; to allow it run: composectl trust allow crc32c {CAP_DIGEST}" in untrusted.stderr

    assert invoke("trust", "allow", "crc32c", CAP_DIGEST).exit_code == 0
    ok = invoke("plan", "verify", "app.json")
    assert ok.exit_code == 0, ok.output
    assert "app.json: ok" in ok.stderr

    # Missing from the store: verify fetches it back from its file:// source.
    assert invoke("blob", "gc", "--all").exit_code == 0
    assert invoke("plan", "verify", "app.json").exit_code == 0
    assert BlobStore().has(CAP_DIGEST)

    # Missing and unfetchable: a failure, reported per item.
    invoke("blob", "gc", "--all")
    cap_file.unlink()
    gone = invoke("plan", "verify", "app.json")
    assert gone.exit_code == 1
    assert "FAILED" in gone.stdout and f"cap crc32c: cannot fetch {CAP_DIGEST}" in gone.stderr


def test_plan_verify_checks_trust_before_fetching(cap_file: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    guest = tmp_path / "pylon.wasm"
    guest.write_bytes(b"guest component")
    guest_digest = digest_bytes(b"guest component")
    invoke("plan", "new", "app.json", "--guest", str(guest))
    invoke("plan", "add", "app.json", "crc32c", str(cap_file))
    invoke("blob", "gc", "--all")
    fetched: list[tuple[str, int | None]] = []
    real_fetch = BlobStore.fetch

    def spy(self: BlobStore, digest: str, sources: Any = (), **kwargs: Any) -> Path:
        fetched.append((digest, kwargs.get("size")))
        return real_fetch(self, digest, sources, **kwargs)

    monkeypatch.setattr(BlobStore, "fetch", spy)
    untrusted = invoke("plan", "verify", "app.json")
    assert untrusted.exit_code == 1
    assert fetched == []  # nothing untrusted is fetched
    assert not BlobStore().has(CAP_DIGEST) and not BlobStore().has(guest_digest)
    assert f"guest: not trusted; to allow it run: composectl trust allow --guest {guest_digest}" in untrusted.stderr
    assert f"cap crc32c: not trusted; to allow it run: composectl trust allow crc32c {CAP_DIGEST}" \
        in untrusted.stderr
    assert "not fetched" in untrusted.stdout

    assert invoke("trust", "allow", "crc32c", CAP_DIGEST).exit_code == 0
    half = invoke("plan", "verify", "app.json")
    assert half.exit_code == 1 and fetched == [(CAP_DIGEST, len(CAP))]  # the plan's size bounds the fetch
    assert invoke("trust", "allow", "--guest", guest_digest).exit_code == 0
    ok = invoke("plan", "verify", "app.json")
    assert ok.exit_code == 0, ok.output
    assert (guest_digest, len(b"guest component")) in fetched


def test_plan_new_with_untrusted_guest_says_how_to_allow_it(tmp_path: Path) -> None:
    guest = tmp_path / "pylon.wasm"
    guest.write_bytes(b"guest component")
    result = invoke("plan", "new", "g.json", "--guest", str(guest))
    assert result.exit_code == 0
    assert f"composectl trust allow --guest {digest_bytes(b'guest component')}" in result.stderr


def test_plan_show_stock_guest_with_limits() -> None:
    Path("s.json").write_text('{"pylon-plan": 1, "caps": {}, "guest": {"limits": {"timeout-ms": 5000}},'
                              ' "limits": {"max-instances": 4}}')
    shown = invoke("plan", "show", "s.json")
    assert shown.exit_code == 0, shown.output
    assert "guest: stock" in shown.stdout
    assert "guest limits: memory 2048 MiB, timeout 5000 ms" in shown.stdout
    assert "run limits: instances 4, cap memory 1024 MiB" in shown.stdout


def test_plan_errors_are_rendered_once(tmp_path: Path) -> None:
    Path("bad.json").write_text('{"pylon-plan": 1, "caps": {"crc32c": {"digest": "sha256:xyz", "sources": []}}}')
    for command in (["plan", "show", "bad.json"], ["plan", "verify", "bad.json"],
                    ["blob", "gc", "--keep", "bad.json"]):
        result = invoke(*command)
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr == ("error: bad.json: at $.caps.crc32c.digest: bad digest 'sha256:xyz': "
                                 "expected 'sha256:' followed by 64 lowercase hex digits\n")


# -- blob ----------------------------------------------------------------------

def test_blob_put_ls_verify_gc(cap_file: Path, tmp_path: Path) -> None:
    put = invoke("blob", "put", str(cap_file))
    assert put.exit_code == 0 and put.stdout == CAP_DIGEST + "\n"
    other = tmp_path / "other.wasm"
    other.write_bytes(b"other")
    other_digest = invoke("blob", "put", str(other)).stdout.strip()

    listed = invoke("blob", "ls")
    assert CAP_DIGEST in listed.stdout and other_digest in listed.stdout
    assert invoke("blob", "verify").exit_code == 0

    # gc keeps what a plan names.
    invoke("plan", "new", "app.json")
    invoke("plan", "add", "app.json", "crc32c", CAP_DIGEST)
    assert invoke("blob", "gc").exit_code == 2  # neither --keep nor --all
    gc = invoke("blob", "gc", "--keep", "app.json")
    assert gc.exit_code == 0 and f"removed {other_digest}" in gc.stdout
    assert [b.digest for b in BlobStore().ls()] == [CAP_DIGEST]

    # A corrupted blob fails verify (exit 1) and is quarantined.
    blob = BlobStore().blob_path(CAP_DIGEST)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"tampered")
    bad = invoke("blob", "verify")
    assert bad.exit_code == 1 and f"bad blob {CAP_DIGEST}" in bad.stderr
    assert "the blob store is empty" in invoke("blob", "ls").stderr


def test_blob_put_missing_file() -> None:
    result = invoke("blob", "put", "nope.wasm")
    assert result.exit_code == 2


# -- trust ---------------------------------------------------------------------

def test_trust_allow_ls_revoke() -> None:
    d2 = digest_bytes(b"two")
    assert invoke("trust", "allow", "crc32c", CAP_DIGEST).exit_code == 0
    assert "already allowed" in invoke("trust", "allow", "crc32c", CAP_DIGEST).stderr
    assert invoke("trust", "allow", "crc32c", d2).exit_code == 0
    listed = invoke("trust", "ls")
    assert listed.stdout.count("crc32c") == 2 and CAP_DIGEST in listed.stdout
    assert invoke("trust", "revoke", "crc32c", d2).exit_code == 0
    assert TrustPolicy.load().entries()[0].digest == CAP_DIGEST
    assert invoke("trust", "revoke", "crc32c", d2).exit_code == 1
    assert invoke("trust", "revoke", "crc32c").exit_code == 0
    assert "nothing is trusted" in invoke("trust", "ls").stderr
    bad = invoke("trust", "allow", "crc32c", "sha256:short")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: bad digest 'sha256:short'")


def test_trust_guests() -> None:
    d2 = digest_bytes(b"two")
    assert invoke("trust", "allow", "--guest", CAP_DIGEST).exit_code == 0
    assert "already allowed" in invoke("trust", "allow", "--guest", CAP_DIGEST).stderr
    assert TrustPolicy.load().is_trusted_guest(CAP_DIGEST)
    assert not TrustPolicy.load().entries()  # a guest is not a cap
    assert invoke("trust", "allow", "crc32c", d2).exit_code == 0
    listed = invoke("trust", "ls")
    assert "(guest)" in listed.stdout and CAP_DIGEST in listed.stdout and "crc32c" in listed.stdout
    assert invoke("trust", "revoke", "--guest", d2).exit_code == 1
    assert invoke("trust", "revoke", "--guest", CAP_DIGEST).exit_code == 0
    assert not TrustPolicy.load().is_trusted_guest(CAP_DIGEST)
    assert "(guest)" not in invoke("trust", "ls").stdout
    for args in (["allow", "crc32c", d2, "--guest", d2], ["allow"], ["allow", "crc32c"],
                 ["revoke"], ["revoke", "crc32c", "--guest", d2]):
        assert invoke("trust", *args).exit_code == 2, args
    bad = invoke("trust", "allow", "--guest", "sha256:short")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: bad guest digest 'sha256:short'")


# -- run: usage errors caught before the engine loads (the real runs are in
#    tests/test_dynlink_e2e.py, through the real engine and guest) ---------------

def test_run_usage_errors() -> None:
    assert invoke("run").exit_code == 2
    assert invoke("run", "--env", "novalue", "s.py").exit_code == 2
    assert invoke("run", "--profile", "nosuch", "s.py").exit_code == 2


def test_fetch_progress_callback_runs_without_a_terminal() -> None:
    with fetch_progress("crc32c") as progress:
        progress(0, None)
        progress(10, 100)
        progress(100, 100)


# -- real subprocesses -----------------------------------------------------------

def _composectl(*args: str, env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = prelude + f"import sys; sys.argv = ['composectl', *{list(args)!r}]\n" \
                     "from pylon.cli.main import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env, "PYTHONPATH": str(PYTHON_DIR)})


def test_subprocess_blob_put_and_error(cap_file: Path, env: dict[str, str]) -> None:
    put = subprocess.run([sys.executable, "-m", "pylon.cli", "blob", "put", str(cap_file)],
                         capture_output=True, text=True,
                         env={**os.environ, **env, "PYTHONPATH": str(PYTHON_DIR)})
    assert put.returncode == 0, put.stderr
    assert put.stdout == CAP_DIGEST + "\n"
    assert (Path(env["PYLON_CACHE_DIR"]) / "blobs" / "sha256" / CAP_DIGEST.split(":")[1]).exists()

    Path("bad.json").write_text("{\n  \"pylon-plan\": 1,\n")
    bad = _composectl("plan", "show", "bad.json", env=env)
    assert bad.returncode == 2
    assert bad.stderr == "error: bad.json: invalid JSON at line 3, column 1: Expecting property name " \
                         "enclosed in double quotes\n"
    assert "Traceback" not in bad.stderr and bad.stdout == ""
