"""The sandbox around the guest, attacked end to end through the real CLI and engine.

Each test here performs one attack from issue 9 (or checks one guarantee of
docs/security.md) against real wasmtime, the real pylon.wasm and caps built
from our C. The docstring of each says what the old code did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO, Pylon

MIB = 1 << 20
CRC_123456789 = "0xe3069283"
CRC_CODE = "import pylon_guest.caps.crc32c as c; print(hex(c.crc32c(b'123456789')))"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def with_env(pylon: Pylon, **changes: str | None) -> Pylon:
    env = dict(pylon.env)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return Pylon(env, pylon.home)


# -- preopens: read-only by default, never Pylon's state -------------------------


def test_script_folder_is_read_only(pylon: Pylon, tmp_path: Path) -> None:
    """Old main preopened the script's folder read-write."""
    script = write(tmp_path / "w.py", """
        try:
            open("planted.txt", "w").write("x")
        except OSError as exc:
            print("refused", type(exc).__name__)
        else:
            print("wrote")
    """)
    result = pylon.run_script(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "refused"
    assert not (tmp_path / "planted.txt").exists()


def test_dir_rw_is_writable_and_dir_is_read_only(pylon: Pylon, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    (data / "in.txt").write_text("hello")
    code = (f"print(open('{data}/in.txt').read()); open('{out}/o.txt', 'w').write('ok')\n"
            f"try:\n    open('{data}/x', 'w')\nexcept OSError:\n    print('ro')")
    result = pylon.composectl("run", "--dir", str(data), "--dir", f"{out}:rw", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hello", "ro"]
    assert (out / "o.txt").read_text() == "ok"


def test_guest_cannot_reach_the_compile_cache_from_a_script_in_home(pylon: Pylon, tmp_path: Path) -> None:
    """Old main: a script in $HOME (so ~/.cache/pylon inside its folder) could rewrite
    compiled/*.cwasm, which a later innocent run loaded as native code."""
    home = tmp_path / "home"
    compiled = home / ".cache" / "pylon" / "compiled"
    compiled.mkdir(parents=True, mode=0o700)
    victim = compiled / "victim.cwasm"
    victim.write_bytes(b"original")
    script = write(home / "evil.py", f"""
        open({str(victim)!r}, "wb").write(b"x86 code")
        print("overwrote")
    """)
    hostile = with_env(pylon, HOME=str(home), XDG_CACHE_HOME=None, PYLON_CACHE_DIR=None)
    result = hostile.run_script(script)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to let the guest see" in result.stderr and "Pylon's cache" in result.stderr
    assert "overwrote" not in result.stdout
    assert victim.read_bytes() == b"original"


@pytest.mark.parametrize("which", ["cache", "blobs", "config", "inside", "symlink", "root"])
def test_dir_overlapping_pylon_state_is_refused(pylon: Pylon, tmp_path: Path, which: str) -> None:
    """Old main opened any --dir read-write, Pylon's own folders included."""
    from pylon import paths

    cache = paths.cache_root()
    target = {
        "cache": cache,
        "blobs": pylon.home / "blobs",
        "config": pylon.home / "config",
        "inside": cache / "compiled",
        "root": Path("/"),
    }.get(which)
    if which == "symlink":
        target = tmp_path / "innocent"
        target.symlink_to(pylon.home / "config")
    result = pylon.composectl("run", "--dir", f"{target}:rw", "-c", "print('ran')")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to let the guest see" in result.stderr
    assert "ran" not in result.stdout


# -- the engine runs only what it verified --------------------------------------


@pytest.fixture(scope="module")
def private_cache(pylon: Pylon, tmp_path_factory: pytest.TempPathFactory) -> Pylon:
    """The stock install with a compile cache of its own (tests here tamper with it).

    Build outputs stay where setup put them (their sources are in stock.json
    and the blob store), so only the compile cache is new.
    """
    cache = tmp_path_factory.mktemp("private-cache")
    return with_env(pylon, PYLON_CACHE_DIR=str(cache))


def _artifacts(p: Pylon, ext: str = "cwasm") -> list[Path]:
    return sorted((Path(p.env["PYLON_CACHE_DIR"]) / "compiled").glob(f"*.{ext}"))


def _crc_artifact(p: Pylon) -> Path:
    digest = json.loads(p.default_plan.read_text())["caps"]["crc32c"]["digest"].split(":")[1]
    (found,) = [a for a in _artifacts(p) if a.name.startswith(digest)]
    return found


def test_tampered_artifact_is_rebuilt_not_run(private_cache: Pylon) -> None:
    """Old main deserialized compiled/<digest>-<key>.cwasm with deserialize_file and
    never checked it: bytes written there ran as native code."""
    code = CRC_CODE
    first = private_cache.run_code(code)
    assert first.returncode == 0 and first.stdout.strip() == CRC_123456789, first.stderr
    artifact = _crc_artifact(private_cache)
    data = bytearray(artifact.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xFF  # scribble over code in the middle of the artifact
    artifact.write_bytes(bytes(data))
    again = private_cache.run_code(code)
    assert again.returncode == 0 and again.stdout.strip() == CRC_123456789, again.stderr
    assert artifact.read_bytes() != bytes(data), "the tampered artifact must be replaced"


def test_foreign_artifact_under_a_trusted_name_is_rejected(private_cache: Pylon) -> None:
    """Old main: renaming cborcalc's artifact to crc32c's key ran cborcalc's code as the
    trusted name crc32c. The tag covers the key, so that no longer verifies."""
    code = CRC_CODE
    warm = private_cache.run_code(code + "; from pylon_guest import dynlink; dynlink.load('cborcalc')")
    assert warm.returncode == 0, warm.stderr
    plan = json.loads(private_cache.default_plan.read_text())
    cbor_hex = plan["caps"]["cborcalc"]["digest"].split(":")[1]
    (cbor_artifact,) = [a for a in _artifacts(private_cache) if a.name.startswith(cbor_hex)]
    crc_artifact = _crc_artifact(private_cache)
    crc_artifact.write_bytes(cbor_artifact.read_bytes())
    result = private_cache.run_code(code)
    assert result.returncode == 0 and result.stdout.strip() == CRC_123456789, result.stderr


def test_forged_artifact_without_the_key_is_rejected(private_cache: Pylon, tmp_path: Path) -> None:
    """A valid wasmtime artifact made elsewhere (no per-install key) is not loaded."""
    from pylon import _engine

    code = CRC_CODE
    assert private_cache.run_code(code).returncode == 0
    artifact = _crc_artifact(private_cache)
    # The same file, re-signed under another key: a well-formed forgery.
    other = _engine.Engine(str(tmp_path / "other-cache"))
    plan = json.loads(private_cache.default_plan.read_text())
    blob = Path(private_cache.env["PYLON_BLOB_DIR"]) / "sha256" / plan["caps"]["crc32c"]["digest"][7:]
    other.precompile(str(blob), plan["caps"]["crc32c"]["digest"])
    (forged,) = (tmp_path / "other-cache").glob(f"{artifact.name.split('.')[0]}.cwasm")
    artifact.write_bytes(forged.read_bytes())
    before = forged.read_bytes()
    result = private_cache.run_code(code)
    assert result.returncode == 0 and result.stdout.strip() == CRC_123456789, result.stderr
    assert artifact.read_bytes() != before


def test_artifact_key_and_cache_are_private(private_cache: Pylon) -> None:
    private_cache.run_code("pass")
    compiled = Path(private_cache.env["PYLON_CACHE_DIR"]) / "compiled"
    assert compiled.stat().st_mode & 0o777 == 0o700
    assert (compiled / "artifact.key").stat().st_mode & 0o777 == 0o600


def test_world_writable_cache_is_refused(private_cache: Pylon) -> None:
    compiled = Path(private_cache.env["PYLON_CACHE_DIR"]) / "compiled"
    private_cache.run_code("pass")
    os.chmod(compiled, 0o777)
    try:
        result = private_cache.run_code("print('ran')")
    finally:
        os.chmod(compiled, 0o700)
    assert result.returncode == 2 and "ran" not in result.stdout
    assert "writable by other users" in result.stderr


def test_engine_refuses_a_blob_swapped_after_verification(pylon: Pylon, tmp_path: Path) -> None:
    """Old main compiled whatever file the path held when the engine read it, even after
    Python had verified other bytes. Now the engine hashes what it compiles."""
    from pylon import _engine
    from pylon.errors import DigestMismatch

    plan = json.loads(pylon.default_plan.read_text())
    crc, cbor = plan["caps"]["crc32c"]["digest"], plan["caps"]["cborcalc"]["digest"]
    store = Path(pylon.env["PYLON_BLOB_DIR"]) / "sha256"
    swapped = tmp_path / "swapped.wasm"
    swapped.write_bytes((store / cbor[7:]).read_bytes())  # the "verified" path now holds other bytes
    engine = _engine.Engine(str(tmp_path / "cache"))
    spec = _engine.ProviderSpec(name="crc32c", path=str(swapped), digest=crc, memory_bytes=64 * MIB,
                                timeout_ms=1000, max_payload_bytes=MIB)
    with pytest.raises(DigestMismatch, match="digest mismatch"):
        engine.load_provider(spec)
    with pytest.raises(DigestMismatch):
        engine.precompile(str(swapped), crc)


def test_corrupt_stored_guest_is_fetched_again_not_run(pylon: Pylon, tmp_path: Path) -> None:
    """Old main compiled an unverified guest blob and cached the result under the plan's
    digest; runs kept failing until `cache clear`. Now the engine refuses the bytes and
    the runtime quarantines and re-fetches them."""
    blobs = tmp_path / "blobs"
    fresh = with_env(pylon, PYLON_BLOB_DIR=str(blobs), PYLON_CACHE_DIR=str(tmp_path / "cache"))
    assert fresh.run_code("print('first')").returncode == 0  # fetches the stock guest
    stock = json.loads((pylon.home / "config" / "stock.json").read_text())
    guest_blob = blobs / "sha256" / stock["guest"][7:]
    os.chmod(guest_blob, 0o644)
    guest_blob.write_bytes(b"\0asm not the guest")
    shutil_rm = Path(fresh.env["PYLON_CACHE_DIR"]) / "compiled"
    for artifact in shutil_rm.glob("*.cwasm"):
        artifact.unlink()  # force a compile: the engine must read (and check) the blob
    result = fresh.run_code("print('second')")
    assert result.returncode == 0 and result.stdout.strip() == "second", result.stderr
    assert "failed verification" in result.stderr
    assert any((blobs / "quarantine").iterdir())


# -- guest limits -----------------------------------------------------------------


def test_endless_loop_times_out(pylon: Pylon) -> None:
    """Old main had no guest deadline: `while True: pass` ran forever."""
    started = time.monotonic()
    result = pylon.composectl("run", "--timeout", "1", "-c", "while True: pass", timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 124, result.stderr
    assert "timed out after 1." in result.stderr
    assert elapsed < 30


def test_sleeping_guest_times_out(pylon: Pylon) -> None:
    """A guest waiting in a WASI sleep is stopped at its deadline (the engine waits in slices)."""
    result = pylon.composectl("run", "--timeout", "0.5", "-c", "import time; time.sleep(60)", timeout=60)
    assert result.returncode == 124, result.stderr
    assert "timed out" in result.stderr


def test_plan_guest_timeout(pylon: Pylon, tmp_path: Path) -> None:
    plan = tmp_path / "p.json"
    doc = json.loads(pylon.default_plan.read_text())
    doc["guest"] = {"limits": {"timeout-ms": 500}}
    plan.write_text(json.dumps(doc))
    result = pylon.run_code("while True: pass", plan=plan)
    assert result.returncode == 124 and "timed out" in result.stderr


def test_guest_memory_limit_is_a_memory_error(pylon: Pylon) -> None:
    code = textwrap.dedent("""
        try:
            big = bytearray(400 << 20)
        except MemoryError:
            print("MemoryError")
        else:
            print("allocated", len(big))
        small = bytearray(1 << 20)
        print("still alive", len(small))
    """)
    result = pylon.composectl("run", "--memory-mb", "128", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["MemoryError", "still alive 1048576"]
    assert pylon.composectl("run", "-c", code).stdout.startswith("allocated")


def test_memory_limit_too_small_to_start_is_explained(pylon: Pylon) -> None:
    result = pylon.composectl("run", "--memory-mb", "16", "-c", "print('ran')")
    assert result.returncode == 2 and "too small for it to start" in result.stderr


def _interrupt_running(cmd: list[str], env: dict[str, str]) -> tuple[int, float, str]:
    """Starts ``cmd``, waits for 'ready' on stdout, sends SIGINT; returns (status, latency, stderr)."""
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "ready" in line, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.2)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=20)
        latency = time.monotonic() - sent
        return status, latency, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ctrl_c_stops_a_busy_guest(pylon: Pylon) -> None:
    """Old main ignored SIGINT while the guest ran."""
    status, latency, err = _interrupt_running(
        [sys.executable, "-m", "pylon.cli", "run", "-c", "print('ready', flush=True)\nwhile True: pass"],
        pylon.env)
    print(f"SIGINT to exit: {latency * 1000:.0f} ms")
    assert status == 130, err
    assert "interrupted" in err and "Traceback" not in err


def test_ctrl_c_stops_a_sleeping_guest(pylon: Pylon) -> None:
    status, latency, err = _interrupt_running(
        [sys.executable, "-m", "pylon.cli", "run", "-c", "print('ready', flush=True)\nimport time; time.sleep(60)"],
        pylon.env)
    print(f"SIGINT to exit: {latency * 1000:.0f} ms")
    assert status == 130, err


def test_ctrl_c_stops_the_micropython_profile(pylon: Pylon, tmp_path: Path) -> None:
    script = write(tmp_path / "spin.py", """
        print("ready")
        while True:
            pass
    """)
    status, latency, err = _interrupt_running(
        [sys.executable, "-m", "pylon.cli", "run", "--profile", "micropython-static", str(script)], pylon.env)
    print(f"SIGINT to exit: {latency * 1000:.0f} ms")
    assert status == 130, err


def test_micropython_profile_times_out_and_is_read_only(pylon: Pylon, tmp_path: Path) -> None:
    script = write(tmp_path / "spin.py", """
        try:
            open("planted.txt", "w")
            print("wrote")
        except OSError:
            print("ro")
        while True:
            pass
    """)
    result = pylon.composectl("run", "--profile", "micropython-static", "--timeout", "1", str(script), timeout=600)
    assert result.returncode == 124, result.stderr
    assert result.stdout.strip() == "ro"
    assert not (tmp_path / "planted.txt").exists()


# -- provider limits, from inside the guest -------------------------------------------


def _plan_with(pylon: Pylon, tmp_path: Path, edit) -> Path:
    doc = json.loads(pylon.default_plan.read_text())
    edit(doc)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(doc))
    return plan


def test_reply_over_the_payload_limit_is_refused(pylon: Pylon, tmp_path: Path) -> None:
    """Old main never checked replies: a 1.6 KB request to zstd returned 50 MiB under a
    1 MiB limit."""
    import zstandard

    frame = zstandard.ZstdCompressor().compress(bytes(50 * MIB))
    assert len(frame) < 4096
    (tmp_path / "frame.zst").write_bytes(frame)
    plan = _plan_with(pylon, tmp_path, lambda d: d["caps"]["zstd"].update(limits={"max-payload-mb": 1}))
    code = textwrap.dedent(f"""
        import cbor2
        from pylon_guest import dynlink
        frame = open({str(tmp_path / 'frame.zst')!r}, 'rb').read()
        try:
            dynlink.load('zstd').invoke('decompress', cbor2.dumps([frame, 100 << 20]))
        except dynlink.CapLimitExceeded as e:
            print('CapLimitExceeded', e)
    """)
    result = pylon.composectl("run", "--plan", str(plan), "--dir", str(tmp_path), "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("CapLimitExceeded") and "reply" in result.stdout


def test_instance_flood_hits_the_run_budget(pylon: Pylon, tmp_path: Path) -> None:
    """Old main: raw resolve-by-id in a loop instantiated without bound (16 zstd ~ 1.6 GiB)."""
    plan = _plan_with(pylon, tmp_path, lambda d: d.update(limits={"max-instances": 4}))
    code = textwrap.dedent("""
        from wit_world.imports import linker
        from componentize_py_types import Err
        held = []
        try:
            while True:
                held.append(linker.resolve_by_id('crc32c'))
        except Err as e:
            print(len(held), type(e.value).__name__, e.value.value)
        del held[:]
        linker.resolve_by_id('crc32c')  # instances given back free their slots
        print('again ok')
    """)
    result = pylon.run_code(code, plan=plan)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().split("\n")
    assert first.startswith("4 Error_LimitExceeded") and "max-instances" in first
    assert second == "again ok"


def test_caps_memory_budget_is_shared(pylon: Pylon, tmp_path: Path, misbehave_built: tuple[str, str]) -> None:
    digest, path = misbehave_built
    def edit(d: dict) -> None:
        d["limits"] = {"max-memory-mb": 24}
        d["caps"]["misbehave"] = {"digest": digest, "sources": [Path(path).as_uri()],
                                  "limits": {"memory-mb": 64}, "wasi": False}
    plan = _plan_with(pylon, tmp_path, edit)
    code = textwrap.dedent("""
        from pylon_guest import dynlink
        a = dynlink.load('misbehave')
        got = int.from_bytes(a.invoke('hog', b''), 'little')
        print('hog got MiB', got >> 20)
        print('alive', a.invoke('echo', b'hi'))
    """)
    result = pylon.run_code(code, plan=plan)
    assert result.returncode == 0, result.stderr
    got = int(result.stdout.split("\n")[0].split()[-1])
    assert 0 < got <= 24
    assert "alive b'hi'" in result.stdout


@pytest.fixture(scope="module")
def misbehave_built(pylon: Pylon) -> tuple[str, str]:
    built = pylon.composectl("cap", "build", str(REPO / "tests" / "caps" / "misbehave"), check=True)
    digest, path = built.stdout.split()
    pylon.composectl("trust", "allow", "misbehave", digest, check=True)
    return digest, path


def test_memory_grow_past_the_limit_fails_instead_of_trapping(pylon: Pylon, tmp_path: Path,
                                                              misbehave_built: tuple[str, str]) -> None:
    """Old main trapped on memory.grow past memory-mb, so a cap's malloc never saw NULL
    and the provider died. Now malloc fails, the cap carries on."""
    digest, path = misbehave_built
    plan = _plan_with(pylon, tmp_path, lambda d: d["caps"].update(misbehave={
        "digest": digest, "sources": [Path(path).as_uri()], "limits": {"memory-mb": 16}, "wasi": False}))
    code = textwrap.dedent("""
        from pylon_guest import dynlink
        m = dynlink.load('misbehave')
        print(int.from_bytes(m.invoke('hog', b''), 'little') >> 20)
        print(m.invoke('echo', b'still here'))
    """)
    result = pylon.run_code(code, plan=plan)
    assert result.returncode == 0, result.stderr
    mib, echo = result.stdout.strip().split("\n")
    assert 0 < int(mib) <= 16 and echo == "b'still here'"


# -- refusals do not leak host details to the guest ------------------------------------


def test_denied_cap_tells_the_guest_only_name_digest_and_command(pylon: Pylon, tmp_path: Path,
                                                                  misbehave_built: tuple[str, str]) -> None:
    """Old main told the guest the other digests trusted for that name."""
    digest, path = misbehave_built
    other = "sha256:" + "ab" * 32
    pylon.composectl("trust", "allow", "stranger", other, check=True)
    plan = _plan_with(pylon, tmp_path, lambda d: d["caps"].update(stranger={
        "digest": digest, "sources": [Path(path).as_uri()], "limits": {}, "wasi": False}))
    code = ("from pylon_guest import dynlink\ntry:\n    dynlink.load('stranger')\n"
            "except dynlink.CapDenied as e:\n    print('GUEST SAW:', e)")
    result = pylon.run_code(code, plan=plan)
    assert result.returncode == 0, result.stderr
    seen = [line for line in result.stdout.splitlines() if line.startswith("GUEST SAW:")][0]
    assert digest in seen and f"composectl trust allow stranger {digest}" in seen
    assert other not in seen and str(tmp_path) not in seen and str(pylon.home) not in seen
    assert other in result.stderr  # the host still hears the full story


def test_missing_cap_source_does_not_leak_paths(pylon: Pylon, tmp_path: Path) -> None:
    ghost = tmp_path / "secret-place" / "ghost.wasm"
    plan = _plan_with(pylon, tmp_path, lambda d: d["caps"].update(ghost={
        "digest": "sha256:" + "cd" * 32, "sources": [ghost.as_uri()], "limits": {}, "wasi": False}))
    pylon.composectl("trust", "allow", "ghost", "sha256:" + "cd" * 32, check=True)
    code = ("from pylon_guest import dynlink\ntry:\n    dynlink.load('ghost')\n"
            "except dynlink.CapNotFound as e:\n    print('GUEST SAW:', e)")
    result = pylon.run_code(code, plan=plan)
    assert result.returncode == 0, result.stderr
    seen = [line for line in result.stdout.splitlines() if line.startswith("GUEST SAW:")][0]
    assert "secret-place" not in seen and str(plan) not in seen
    assert "secret-place" in result.stderr


def test_keyboard_interrupt_in_a_resolve_is_not_a_cap_error(pylon: Pylon, tmp_path: Path) -> None:
    """Old main turned a KeyboardInterrupt raised during a resolve into a catchable CapNotFound."""
    from pylon.engine import get_engine

    def resolver(name: str):
        raise KeyboardInterrupt

    digest = json.loads((pylon.home / "config" / "stock.json").read_text())["guest"]
    guest = Path(pylon.env["PYLON_BLOB_DIR"]) / "sha256" / digest[7:]
    code = ("from pylon_guest import dynlink\ntry:\n    dynlink.load('crc32c')\n"
            "except BaseException as e:\n    print('guest caught', type(e).__name__)")
    with pytest.raises(KeyboardInterrupt):
        get_engine().run_guest(str(guest), digest, argv=["-c", code], env=[], cwd="/", resolver=resolver)


def test_untrusted_guest_is_refused_before_any_fetch(pylon: Pylon, tmp_path: Path) -> None:
    """Old main never trust-gated the plan's guest."""
    fake = tmp_path / "guest.wasm"
    fake.write_bytes(b"\0asm\x01\0\0\0")
    plan = tmp_path / "g.json"
    pylon.composectl("plan", "new", str(plan), "--guest", str(fake), check=True)
    blobs = tmp_path / "blobs"
    result = with_env(pylon, PYLON_BLOB_DIR=str(blobs)).run_code("print('ran')", plan=plan)
    assert result.returncode == 2 and "not trusted" in result.stderr and "trust allow --guest" in result.stderr
    assert not (blobs / "sha256").exists() or not any((blobs / "sha256").iterdir())


def test_a_failing_resolver_tells_the_guest_nothing_of_the_host(pylon: Pylon) -> None:
    """Found in review: any exception from the resolver (an OSError with a temp file's
    path on a full disk) reached the guest with its text."""
    digest = json.loads((pylon.home / "config" / "stock.json").read_text())["guest"]
    guest = Path(pylon.env["PYLON_BLOB_DIR"]) / "sha256" / digest[7:]
    code = ("from pylon_guest import dynlink\ntry:\n    dynlink.load('crc32c')\n"
            "except dynlink.CapNotFound as e:\n    print('GUEST SAW:', e)")
    host = ("import sys\nfrom pylon.engine import get_engine\n"
            "def resolver(name):\n    raise OSError(28, 'No space left on device', '/home/secret/x')\n"
            f"sys.exit(get_engine().run_guest({str(guest)!r}, {digest!r}, argv=['-c', {code!r}], env=[], "
            "cwd='/', resolver=resolver))")
    result = subprocess.run([sys.executable, "-c", host], env=pylon.env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "GUEST SAW:" in result.stdout and "could not be resolved" in result.stdout
    assert "/home/secret" not in result.stdout and "/home/secret" in result.stderr


def test_host_code_folders_are_never_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: outside a venv, a guest given site-packages read-write could drop
    a .pth file that runs on the host's next start. Readable is fine; writable never."""
    from pylon import paths, preopens

    code = tmp_path / "site-packages"
    code.mkdir()
    monkeypatch.setattr(paths, "code_roots", lambda: [("the host's Python packages", code)])
    monkeypatch.setattr(paths, "state_roots", lambda: [])
    assert preopens.plan_preopens(None, [str(code)]) == [preopens.Preopen(code.resolve())]
    for spec in (f"{code}:rw", f"{tmp_path}:rw"):
        with pytest.raises(preopens.PreopenError, match="refusing to let the guest write"):
            preopens.plan_preopens(None, [spec])


@pytest.mark.parametrize("value", ["nan", "inf", "1e17"])
def test_absurd_timeouts_are_clear_errors(pylon: Pylon, tmp_path: Path, value: str) -> None:
    result = pylon.composectl("run", "--timeout", value, "-c", "print('ran')")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "ran" not in result.stdout
    script = write(tmp_path / "s.py", "print('ran')\n")
    static = pylon.composectl("run", "--profile", "micropython-static", "--timeout", value, str(script), timeout=600)
    assert static.returncode == 2 and "Traceback" not in static.stderr, static.stderr
    assert "ran" not in static.stdout


def test_world_writable_cache_root_is_refused(pylon: Pylon, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    os.chmod(root, 0o777)
    result = with_env(pylon, PYLON_CACHE_DIR=str(root)).run_code("print('ran')")
    assert result.returncode == 2 and "writable by other users" in result.stderr
    assert "ran" not in result.stdout
