"""Python that expects an ordinary machine: the guest's /tmp and /dev/null, end to end.

Every run gets a private temporary folder (``pylon.scratch``: a fresh host
folder preopened at /tmp, ``TMPDIR=/tmp``, capped by ``tmp-mb``, removed
after the run) and an ``os.devnull`` that reads EOF and discards writes
(``guest/python/pylon_guest/_devnull.py``). The last test runs a real third-party
test suite (tabulate's, from its sdist) with pytest *inside* the guest, with
the flags docs/guest-os.md lists, and compares every test's outcome with the
same suite run on the host.

Each test points the host's TMPDIR at a folder of its own, so it can watch
the run's folder appear there and check it is gone afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import pylon as pylon_api
from conftest import REPO, Pylon
from pylon import paths
from pylon.errors import GuestInterrupted, PylonError
from pylon.preopens import PreopenError
from pylon.scratch import ENTRY_BYTES, ScratchFull, measure, scratch

MIB = 1 << 20
#: What ScratchFull exits with (128 + SIGXFSZ).
TMP_FULL_STATUS = 153


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


class Host:
    """``pylon`` with the host's TMPDIR pointed at a folder the test watches."""

    def __init__(self, pylon: Pylon, tmp_path: Path):
        self.tmpdir = tmp_path / "host-tmp"
        self.tmpdir.mkdir()
        self.pylon = Pylon({**pylon.env, "TMPDIR": str(self.tmpdir)}, pylon.home)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.pylon.composectl("run", *args, timeout=timeout)

    def run_full_cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``composectl run`` through typer, not the fast path of pylon.cli.entry."""
        code = "import sys; from pylon.cli.main import main; sys.argv[0] = 'composectl'; main()"
        return subprocess.run([sys.executable, "-c", code, "run", *args], env=self.pylon.env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "pylon.cli", "run", *args], env=self.pylon.env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run_folders(self) -> list[Path]:
        return sorted(self.tmpdir.glob("pylon-run-*"))


@pytest.fixture
def host(pylon: Pylon, tmp_path: Path) -> Host:
    return Host(pylon, tmp_path)


def _wait_for_line(proc: subprocess.Popen[str], word: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if word not in line:
        proc.kill()
        raise AssertionError(f"expected {word!r}, got {line!r}; stderr: {proc.communicate()[1]}")


# -- the temporary folder ----------------------------------------------------------


def test_tempfile_works_in_the_guest(host: Host) -> None:
    """The stock guest had no writable folder: tempfile raised "No usable temporary directory"."""
    code = textwrap.dedent("""
        import os, tempfile
        print(os.environ["TMPDIR"], tempfile.gettempdir())
        with tempfile.NamedTemporaryFile("w+") as f:
            f.write("hello"); f.flush(); f.seek(0)
            print(f.name.startswith("/tmp/"), f.read())
        with tempfile.TemporaryDirectory() as d:
            open(os.path.join(d, "x"), "w").write("x")
            print(sorted(os.listdir(d)))
        fd, name = tempfile.mkstemp(); os.write(fd, b"12"); os.close(fd)
        print(os.path.getsize(name))
        print(tempfile.SpooledTemporaryFile(max_size=1).write(b"spilled to disk"))
        # Nothing tells the guest where its folder lives on the host.
        print("pylon-run" in str(os.environ) + tempfile.mkdtemp() + os.path.realpath("/tmp"))
    """)
    result = host.run("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:6] == ["/tmp /tmp", "True hello", "['x']", "2", "15", "False"]
    assert host.run_folders() == []


def test_tmp_is_empty_at_the_start_of_every_run(host: Host) -> None:
    code = "import os; print(os.listdir('/tmp')); open('/tmp/left-behind', 'w').write('x')"
    first, second = host.run("-c", code), host.run("-c", code)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.strip() == second.stdout.strip() == "[]"


def test_the_host_folder_is_private_mapped_and_removed(host: Host) -> None:
    """During the run: one 0700 folder in the host's temporary folder, seen by the guest at /tmp
    (a file goes each way). After it: gone."""
    code = textwrap.dedent("""
        import os, time
        open("/tmp/from-guest", "w").write("g")
        print("ready", flush=True)
        while not os.path.exists("/tmp/from-host"):
            time.sleep(0.01)
        print(open("/tmp/from-host").read())
    """)
    proc = host.popen("--timeout", "60", "-c", code)
    try:
        _wait_for_line(proc, "ready")
        [root] = host.run_folders()
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert (root / "tmp" / "from-guest").read_text() == "g"
        assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o700
        (root / "tmp" / "from-host").write_text("h")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.strip() == "h"
    assert host.run_folders() == []


@pytest.mark.parametrize("how", ["failing script", "timeout", "timeout in a host call", "ctrl-c"])
def test_the_host_folder_is_removed_whatever_happens(host: Host, how: str) -> None:
    fill = "open('/tmp/data', 'wb').write(b'x' * 1000)\nprint('ready', flush=True)\n"
    if how == "failing script":
        result = host.run("-c", fill + "raise SystemExit('boom')")
        assert result.returncode == 1 and "boom" in result.stderr
    elif how == "timeout":
        result = host.run("--timeout", "1", "-c", fill + "while True: pass")
        assert result.returncode == 124, result.stderr
    elif how == "timeout in a host call":
        # Abandoned, not unwound: composectl exits while the guest's thread sleeps.
        result = host.run("--timeout", "1", "-c", fill + "import time; time.sleep(60)")
        assert result.returncode == 124, result.stderr
    else:
        proc = host.popen("-c", fill + "while True: pass")
        try:
            _wait_for_line(proc, "ready")
            assert len(host.run_folders()) == 1
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, err
    assert host.run_folders() == []


def test_two_runs_at_once_do_not_share_a_folder(host: Host) -> None:
    code = textwrap.dedent("""
        import os, time
        open("/tmp/mine", "w").write(os.environ["WHO"])
        print("ready", flush=True)
        time.sleep(0.5)
        print(os.listdir("/tmp"), open("/tmp/mine").read())
    """)
    procs = [host.popen("--env", f"WHO={who}", "-c", code) for who in ("a", "b")]
    try:
        for proc in procs:
            _wait_for_line(proc, "ready")
        assert len(host.run_folders()) == 2
        outs = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert outs == ["['mine'] a", "['mine'] b"]
    assert host.run_folders() == []


def test_the_guests_own_tmpdir_wins(host: Host) -> None:
    result = host.run("--env", "TMPDIR=/elsewhere", "-c", "import os; print(os.environ['TMPDIR'])")
    assert result.returncode == 0 and result.stdout.strip() == "/elsewhere", result.stderr


def test_a_host_tmpdir_inside_pylons_state_is_refused(pylon: Pylon) -> None:
    """The run's folder would be preopened writable inside Pylon's configuration."""
    inside = pylon.home / "config" / "tmp"
    inside.mkdir(parents=True, exist_ok=True)
    env = {**pylon.env, "TMPDIR": str(inside)}
    result = Pylon(env, pylon.home).composectl("run", "-c", "print('ran')")
    assert result.returncode == 2, result.stderr
    assert "cannot hold the guest's" in result.stderr and "ran" not in result.stdout
    assert list(inside.iterdir()) == []


# -- pylon.scratch on its own (no guest) -------------------------------------------------


class Flag:
    """Stands in for a run's Interrupt."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def set(self) -> None:
        self.event.set()


@pytest.fixture
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The host's temporary folder, for this test alone."""
    folder = tmp_path / "host-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_scratch_moves_aside_for_folders_the_run_already_shows(private_tempdir: Path) -> None:
    """A script that lives in /tmp keeps its folder there; the temporary folder goes to /var/tmp.
    A /dev the run already shows (``--dir /dev``) is left alone."""
    with scratch(1, taken=["/tmp"]) as moved:
        assert moved.preopen.as_engine_tuple() == (str(moved.root / "tmp"), "/var/tmp", False)
        assert moved.env == {"TMPDIR": "/var/tmp"}
        assert moved.devnull is not None and moved.devnull.as_engine_tuple()[1:] == ("/dev", True)
    with scratch(1, taken=["/dev"]) as no_dev:
        assert no_dev.devnull is None and no_dev.preopens == [no_dev.preopen]
    with pytest.raises(PreopenError, match="nowhere to go"), scratch(1, taken=["/tmp", "/var/tmp"]):
        pass
    assert list(private_tempdir.iterdir()) == []


def test_measure_counts_blocks_entries_and_sparse_files_and_follows_no_link(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    assert measure(folder) == 0
    (folder / "empty").touch()
    assert measure(folder) == ENTRY_BYTES
    (folder / "sub").mkdir()
    (folder / "sub" / "deeper").touch()
    assert measure(folder) >= 3 * ENTRY_BYTES
    with open(folder / "sparse", "wb") as f:
        f.seek(10 * MIB)
        f.write(b"x")
    assert measure(folder) > 10 * MIB
    (folder / "sparse").unlink()
    (folder / "root").symlink_to("/")
    assert measure(folder) < 5 * ENTRY_BYTES
    for i in range(100):
        (folder / f"f{i}").touch()
    assert ENTRY_BYTES * 10 < measure(folder, stop_above=ENTRY_BYTES * 10) < ENTRY_BYTES * 12


def test_the_watchers_stop_becomes_scratch_full(private_tempdir: Path) -> None:
    flag = Flag()
    with pytest.raises(ScratchFull) as stopped, scratch(1, interrupt=flag) as tmp:
        (tmp.preopen.path / "big").write_bytes(bytes(2 * MIB))
        assert flag.event.wait(10), "the watcher did not stop the run"
        raise GuestInterrupted("the engine's stop", seconds=0.25)
    assert stopped.value.exit_status == TMP_FULL_STATUS
    assert stopped.value.held_bytes >= 2 * MIB and stopped.value.limit_bytes == MIB
    assert stopped.value.seconds == 0.25
    assert list(private_tempdir.iterdir()) == []


@pytest.mark.parametrize("what", ["a file", "an empty folder", "a file in a folder"])
def test_a_burst_just_before_the_end_is_caught(private_tempdir: Path, what: str) -> None:
    # No watcher: only the measurement when the block ends can see it. An
    # emptied tmp/ is removed without one, so anything left must be measured.
    with pytest.raises(ScratchFull) as stopped, scratch(1) as tmp:
        folder = tmp.preopen.path
        if what != "a file":
            folder = folder / "sub"
            folder.mkdir()
        if what != "an empty folder":
            (folder / "big").write_bytes(bytes(2 * MIB))
        else:
            for i in range(300):  # 300 entries count as 300 blocks, past 1 MiB
                (folder / f"d{i}").mkdir()
    assert stopped.value.limit_bytes == MIB and stopped.value.held_bytes > MIB
    assert list(private_tempdir.iterdir()) == []


def test_a_run_that_leaves_tmp_empty_passes_and_leaves_nothing(private_tempdir: Path) -> None:
    with scratch(1, interrupt=Flag()) as tmp:
        (tmp.preopen.path / "gone").write_bytes(bytes(2 * MIB))
        (tmp.preopen.path / "gone").unlink()
    assert list(private_tempdir.iterdir()) == []


def test_another_stop_stays_what_it_was(private_tempdir: Path) -> None:
    with pytest.raises(GuestInterrupted) as stopped, scratch(1, interrupt=Flag()):
        raise GuestInterrupted("Ctrl-C")
    assert type(stopped.value) is GuestInterrupted
    for error in (ValueError("a bug"), KeyboardInterrupt()):
        with pytest.raises(type(error)), scratch(1, interrupt=Flag()) as tmp:
            (tmp.preopen.path / "x").write_text("x")
            raise error
    assert list(private_tempdir.iterdir()) == []


@pytest.mark.parametrize("value", [0, -1, 65537, 1.5, True, "8", None])
def test_scratch_refuses_a_bad_cap(private_tempdir: Path, value: object) -> None:
    with pytest.raises(PylonError, match="whole number of MiB"), scratch(value):  # type: ignore[arg-type]
        pass
    assert list(private_tempdir.iterdir()) == []


# -- the size cap --------------------------------------------------------------------


def _held_mib(stderr: str) -> float:
    found = re.search(r"it held ([0-9.]+) MiB when the guest stopped", stderr)
    assert found, stderr
    return float(found.group(1))


def test_the_size_cap_stops_a_guest_that_fills_tmp(host: Host) -> None:
    """wasmtime cannot cap a preopen: the watcher stops the run. The overshoot is what the
    guest writes in the watcher's reaction time (docs/guest-os.md); 64 MiB is far above it."""
    code = "chunk = b'x' * (1 << 20)\nwith open('/tmp/fill', 'wb') as f:\n    while True:\n        f.write(chunk)"
    started = time.monotonic()
    result = host.run("--tmp-mb", "8", "--timeout", "60", "-c", code)
    assert result.returncode == TMP_FULL_STATUS, result.stderr
    assert "the run's temporary folder passed 8 MiB" in result.stderr
    held = _held_mib(result.stderr)
    print(f"stopped at {held} MiB for a cap of 8 MiB, {time.monotonic() - started:.2f} s")
    assert 8 < held < 8 + 64
    assert host.run_folders() == []


def test_one_huge_write_is_stopped_too(host: Host) -> None:
    code = "data = b'x' * (512 << 20)\nopen('/tmp/big', 'wb').write(data)\nprint('wrote it all')"
    result = host.run("--tmp-mb", "8", "--memory-mb", "1024", "--timeout", "60", "-c", code)
    assert result.returncode == TMP_FULL_STATUS, result.stderr
    assert "wrote it all" not in result.stdout
    assert _held_mib(result.stderr) < 512
    assert host.run_folders() == []


@pytest.mark.parametrize("attack", ["empty files", "empty folders", "sparse file", "burst then exit"])
def test_the_cap_counts_what_a_guest_could_hide(host: Host, attack: str) -> None:
    """Each file or folder counts at least 4 KiB; a sparse file counts its full size; a run that
    passes the cap and exits before the watcher looks is caught when it ends."""
    code = {
        "empty files": "import itertools\nfor i in itertools.count(): open(f'/tmp/f{i}', 'w').close()",
        "empty folders": "import itertools, os\nfor i in itertools.count(): os.mkdir(f'/tmp/d{i}')",
        "sparse file": "f = open('/tmp/sparse', 'wb'); f.seek(100 << 20); f.write(b'x'); f.close()\n"
                       "while True: pass",
        "burst then exit": "open('/tmp/burst', 'wb').write(b'x' * (12 << 20))\nprint('done')",
    }[attack]
    result = host.run("--tmp-mb", "8", "--timeout", "60", "-c", code)
    assert result.returncode == TMP_FULL_STATUS, result.stderr
    assert "passed 8 MiB" in result.stderr
    assert host.run_folders() == []


def test_writing_under_the_cap_is_fine(host: Host) -> None:
    code = "open('/tmp/six', 'wb').write(b'x' * (6 << 20)); print('ok')"
    result = host.run("--tmp-mb", "8", "-c", code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_the_plans_tmp_mb_is_the_default_and_the_option_wins(host: Host, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    doc = json.loads(host.pylon.default_plan.read_text())
    doc["guest"] = {"limits": {"tmp-mb": 4}}
    plan.write_text(json.dumps(doc))
    code = "open('/tmp/six', 'wb').write(b'x' * (6 << 20)); print('ok')"
    capped = host.run("--plan", str(plan), "-c", code)
    assert capped.returncode == TMP_FULL_STATUS and "passed 4 MiB" in capped.stderr
    raised = host.run("--plan", str(plan), "--tmp-mb", "16", "-c", code)
    assert raised.returncode == 0 and raised.stdout.strip() == "ok", raised.stderr


@pytest.mark.parametrize("cli", ["fast path", "full CLI"])
def test_tmp_mb_works_on_both_cli_paths(host: Host, cli: str) -> None:
    run = host.run if cli == "fast path" else host.run_full_cli
    code = "open('/tmp/six', 'wb').write(b'x' * (6 << 20)); print('ok')"
    capped = run("--tmp-mb", "4", "-c", code)
    assert capped.returncode == TMP_FULL_STATUS and "passed 4 MiB" in capped.stderr, capped.stderr
    assert "Traceback" not in capped.stderr
    roomy = run("--tmp-mb", "16", "-c", code)
    assert roomy.returncode == 0 and roomy.stdout.strip() == "ok", roomy.stderr
    assert host.run_folders() == []


@pytest.mark.parametrize("value", ["0", "-1", "65537", "1.5", "lots"])
def test_bad_tmp_mb_is_a_clear_error(host: Host, value: str) -> None:
    result = host.run("--tmp-mb", value, "-c", "print('ran')")
    assert result.returncode == 2 and "ran" not in result.stdout
    assert "--tmp-mb" in result.stderr and "Traceback" not in result.stderr


# -- os.devnull --------------------------------------------------------------------------


DEVNULL_CHECKS = """
    import contextlib, logging, os, pathlib, time
    DN = os.devnull
    assert DN == "/dev/null" and os.path.exists(DN) and os.stat(DN).st_size == 0
    assert open(DN).read() == "" and open(DN, "rb").read() == b""

    with open(DN, "w") as f:
        assert f.write("hello") == 5
        print("hidden by print", file=f)
        assert not f.isatty() and os.fstat(f.fileno()).st_size == 0
    for mode in ("a", "wb", "ab", "r+", "rb+", "w+", "a+", "wt"):
        with open(DN, mode) as f:
            f.write(b"x" if "b" in mode else "x")
            if "+" in mode:
                f.seek(0)
                assert f.read() in ("", b"")
    with open(DN, "wb", buffering=0) as f:
        assert f.write(b"abc") == 3
    with contextlib.redirect_stdout(open(DN, "w")):
        print("hidden by redirect_stdout")
    pathlib.Path(DN).write_text("x")
    handler = logging.FileHandler(DN)
    logging.getLogger("t").addHandler(handler)
    logging.getLogger("t").warning("hidden by logging")
    handler.close()

    fd = os.open(DN, os.O_WRONLY)
    assert os.write(fd, b"abc") == 3 and os.pwrite(fd, b"ab", 10) == 2
    with os.fdopen(fd, "w") as f:
        f.write("through fdopen")
    fd = os.open(DN, os.O_RDWR | os.O_TRUNC)
    assert os.read(fd, 10) == b"" and os.write(fd, b"x") == 1
    os.close(fd)
    fd = os.open(DN, os.O_RDONLY)
    assert os.read(fd, 10) == b""
    os.close(fd)

    # A null descriptor closed behind the hooks' back, its number reused for
    # a real file: that file is written for real.
    fd = os.open(DN, os.O_WRONLY)
    os.close(fd)
    real = os.open("/tmp/real", os.O_WRONLY | os.O_CREAT)
    os.write(real, b"data")
    os.close(real)
    assert open("/tmp/real").read() == "data", "a reused descriptor lost its bytes"

    # Gigabytes cost CPU only: nothing reaches /tmp or the host's disk.
    started = time.monotonic()
    chunk = bytes(1 << 20)
    with open(DN, "wb") as f:
        for _ in range(1024):
            f.write(chunk)
    fd = os.open(DN, os.O_WRONLY)
    for _ in range(1024):
        os.write(fd, chunk)
    os.close(fd)
    took = time.monotonic() - started

    assert os.stat(DN).st_size == 0 and open(DN).read() == ""
    assert os.listdir("/dev") == ["null"]
    # /dev/null cannot be changed, replaced, or linked into /tmp to be written there.
    for attempt in (lambda: open("/dev/planted", "w"), lambda: open("/dev/null", "x"),
                    lambda: os.remove("/dev/null"), lambda: os.rename("/dev/null", "/tmp/n"),
                    lambda: os.link("/dev/null", "/tmp/n"), lambda: os.symlink("x", "/dev/link")):
        try:
            attempt()
        except OSError:
            pass
        else:
            raise AssertionError("/dev is writable")
    print("devnull ok", round(took, 1), "s for 2 GiB")
"""


def test_devnull_reads_eof_and_discards_writes(host: Host) -> None:
    """The stock guest had no /dev/null: open(os.devnull) raised FileNotFoundError."""
    result = host.run("--tmp-mb", "1", "--timeout", "120", "-c", textwrap.dedent(DEVNULL_CHECKS))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("devnull ok"), result.stdout
    print(result.stdout.strip())


def test_a_folder_of_the_run_at_dev_wins(host: Host, tmp_path: Path) -> None:
    """``/dev`` is left to a folder the user gives there; here the host's own, read-only."""
    result = host.run("--dir", "/dev", "-c", "import os; print(os.path.exists('/dev/zero'))")
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr


# -- the MicroPython profile -------------------------------------------------------------


def test_micropython_profile_gets_tmp_and_devnull(host: Host, tmp_path: Path) -> None:
    script = write(tmp_path / "mp_tmp.py", """
        f = open("/tmp/x", "w"); f.write("mp"); f.close()
        print(open("/tmp/x").read(), repr(open("/dev/null").read()))
        f = open("/tmp/big", "wb")
        while True:
            f.write(b"x" * 65536)
    """)
    result = host.run("--profile", "micropython-static", "--tmp-mb", "2", "--timeout", "60", str(script),
                      timeout=900)
    assert result.returncode == TMP_FULL_STATUS, result.stderr
    assert result.stdout.strip() == "mp ''"
    assert host.run_folders() == []


# -- a real test suite, with pytest, inside the guest ----------------------------------------

#: pytest and its pure-Python dependencies, pinned with their hashes (wheels for any Python).
PYTEST_REQUIREMENTS = """\
pytest==9.2.0 --hash=sha256:07acdcf88ec174f907dc01af70bf52d49b014bbab03faeeade31c96b18c2e588
iniconfig==2.3.1 --hash=sha256:9121e2c1fdb355232495be3194c8dfe87ccc2d5dee45947b78e68f499790d7a7
packaging==26.4 --hash=sha256:81383611a09c1bc0b08b76e0fd5829d7c6824c65b27a6aee339da133f4233ea2
pluggy==1.7.0 --hash=sha256:7dd7b0d8832ba3cb632c306926ded123429211b83641b35dc5c41ad2d34f9bec
pygments==2.21.0 --hash=sha256:2363c69b61c4a97c838da3b130dcd6468f4848992b21a82f2a63ec34377137d9
"""
#: The suite under test: tabulate's own tests, from its sdist.
SUITE = "tabulate==0.9.0"
SUITE_SDIST = "tabulate-0.9.0.tar.gz"
SUITE_SHA256 = "0095b12bf5966de529c0feb1fa08671671b3368eec77d7ef7ab114be2c068b3c"
#: The flags docs/guest-os.md tells users to pass to pytest in the guest.
GUEST_PYTEST_FLAGS = ["--capture=sys", "-p", "no:faulthandler", "-p", "no:cacheprovider", "--basetemp=/tmp/pytest"]


def _downloads() -> Path:
    """Where downloads are kept between runs: outside the clone, and never shown to a guest."""
    return paths.private_dir(paths.cache_root() / "downloads" / "guest-os")


def _pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


def _guest_python(pylon: Pylon) -> str:
    result = pylon.composectl("run", "-c", "import sys; print('%d.%d' % sys.version_info[:2])")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def pytest_site(pylon: Pylon, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pytest for the guest's Python, installed once into the download cache, copied out per session
    (a guest may not see Pylon's cache)."""
    version = _guest_python(pylon)
    key = hashlib.sha256(f"{version}\n{PYTEST_REQUIREMENTS}".encode()).hexdigest()[:16]
    cached = _downloads() / f"pytest-site-{key}"
    if not cached.is_dir():
        work = cached.with_name(cached.name + f".work-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        requirements = work.with_suffix(".txt")
        requirements.write_text(PYTEST_REQUIREMENTS)
        try:
            _pip("install", "--quiet", "--no-compile", "--require-hashes", "--only-binary=:all:",
                 "--python-version", version, "--target", str(work), "-r", str(requirements))
            work.rename(cached)
        finally:
            requirements.unlink(missing_ok=True)
            shutil.rmtree(work, ignore_errors=True)
    site = tmp_path_factory.mktemp("guest-pytest") / "site"
    shutil.copytree(cached, site)
    return site


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tabulate's sdist, checked against its pinned hash and unpacked: the package and its tests."""
    sdist = _downloads() / SUITE_SDIST
    if not sdist.is_file():
        _pip("download", "--quiet", "--no-deps", "--no-binary", ":all:", "--dest", str(sdist.parent), SUITE)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SUITE_SHA256:
        sdist.unlink()
        raise AssertionError(f"{SUITE_SDIST} has sha256 {digest}, not the pinned {SUITE_SHA256}")
    dest = tmp_path_factory.mktemp("suite")
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    [root] = dest.iterdir()
    return root


def _outcomes(report: Path) -> dict[str, str]:
    """test id -> passed / failed / error / skipped, from a JUnit XML report."""
    found: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        found[f"{case.get('classname')}::{case.get('name')}"] = kinds[0] if kinds else "passed"
    return found


def test_a_packages_own_test_suite_passes_in_the_guest_as_on_the_host(
        host: Host, pytest_site: Path, suite: Path, tmp_path: Path) -> None:
    """tabulate's suite, with pytest running inside the guest, against the same suite on the host.

    Every test has the same outcome on both sides, except tabulate's command-line tests: they
    start ``python`` in a subprocess, which WASI cannot do (docs/guest-os.md), so in the guest
    they fail with exactly that error.
    """
    out = tmp_path / "reports"
    out.mkdir()
    flags = [*GUEST_PYTEST_FLAGS, "-q", "-rN", str(suite / "test")]

    # On the host: the same pytest, the same flags, nothing else on the path.
    host_env = {**os.environ, "PYTHONPATH": f"{pytest_site}{os.pathsep}{suite}",
                "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    host_flags = [f if f != "--basetemp=/tmp/pytest" else f"--basetemp={tmp_path / 'host-basetemp'}" for f in flags]
    on_host = subprocess.run([sys.executable, "-S", "-m", "pytest", *host_flags, f"--junitxml={out / 'host.xml'}"],
                             cwd=suite, env=host_env, capture_output=True, text=True, timeout=600)
    assert on_host.returncode == 0, on_host.stdout + on_host.stderr

    # In the guest: pytest from a read-only --dir, the report written to a writable one.
    driver = write(tmp_path / "driver" / "run_pytest.py", f"""
        import sys
        sys.path[:0] = [{str(pytest_site)!r}, {str(suite)!r}]
        import pytest
        sys.exit(pytest.main(sys.argv[1:]))
    """)
    started = time.monotonic()
    in_guest = host.run("--dir", str(pytest_site), "--dir", str(suite), "--dir", f"{out}:rw",
                        "--env", "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1", str(driver), *flags,
                        f"--junitxml={out / 'guest.xml'}", timeout=600)
    print(f"guest: {in_guest.stdout.strip().splitlines()[-1]} ({time.monotonic() - started:.1f} s)")
    assert in_guest.returncode == 1, in_guest.stdout + in_guest.stderr  # the subprocess tests fail

    host_results, guest_results = _outcomes(out / "host.xml"), _outcomes(out / "guest.xml")
    assert set(host_results) == set(guest_results)
    spawning = {test for test in host_results if test.startswith("test.test_cli::test_script_")}
    assert len(spawning) == 7
    differ = {test for test in host_results if host_results[test] != guest_results[test]}
    assert differ == spawning, sorted(differ ^ spawning)
    assert all(host_results[t] == "passed" and guest_results[t] == "failure" for t in spawning)
    assert "wasi does not support processes" in in_guest.stdout
    counts = {kind: sum(v == kind for v in host_results.values()) for kind in ("passed", "skipped")}
    assert counts["passed"] > 200, counts
    assert host.run_folders() == []


# -- standard output and error ---------------------------------------------------

_BIG_WRITES = """
import sys
print("a" * 1_000_000)
sys.stdout.write("b" * 300_000)
sys.stdout.buffer.write(b"c" * 200_000)
print("d" * 70_000, file=sys.stderr)
sys.stderr.write("e" * 130_000)
print(end="", flush=True)
print("END")
"""
_BIG_STDOUT = "a" * 1_000_000 + "\n" + "b" * 300_000 + "c" * 200_000 + "END\n"
_BIG_STDERR = "d" * 70_000 + "\n" + "e" * 130_000


def test_large_writes_reach_stdout_and_stderr_whole(pylon: Pylon, home: Pylon) -> None:
    # A WASI host takes at most 64 KiB per write; CPython's unbuffered
    # TextIOWrapper ignored the short count and dropped the rest (one print
    # of 1 MB gave 64 KiB). pylon_guest._stdio puts a BufferedWriter under it.
    result = pylon.composectl("run", "-c", _BIG_WRITES)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == _BIG_STDOUT
    assert result.stderr == _BIG_STDERR
    r = pylon_api.Sandbox().run(_BIG_WRITES)
    assert (r.exit_code, r.stdout, r.stderr) == (0, _BIG_STDOUT.encode(), _BIG_STDERR.encode())
    with pylon_api.Sandbox().session() as s:
        assert s.run("print('x' * 500_000)").stdout == b"x" * 500_000 + b"\n"
        assert s.run("import sys; sys.stdout.write('y' * 100_000)").stdout == b"y" * 100_000
