"""``composectl server``: ``composectl run`` served by a process that keeps the guest loaded.

Real processes end to end: a server started with ``composectl server start``
(in a folder of its own, ``PYLON_SERVER_DIR``), clients that are the real
``composectl`` console entry, the real guest. A served run must be
indistinguishable from an in-process one (``PYLON_SERVER=0``) in output,
errors and exit status; the server's run count proves which one ran.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, Pylon
from pylon import paths
from pylon.cli import server_wire

CLIENT = [sys.executable, "-c", "import sys; from pylon.cli.entry import main; sys.argv[0] = 'composectl'; main()"]


class Served:
    def __init__(self, pylon: Pylon, folder: Path):
        self.env = {**pylon.env, "PYLON_SERVER_DIR": str(folder)}
        self.folder = folder
        self.pylon = pylon

    def composectl(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                   stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLIENT, *args], env=env or self.env, cwd=cwd or REPO, input=stdin, text=True,
                              capture_output=True, timeout=120)

    def runs(self) -> int:
        status = self.composectl("server", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        return int(status.stdout.split("runs=")[1].split()[0])


@pytest.fixture(scope="module")
def served(pylon: Pylon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("server")
    folder.chmod(0o700)
    s = Served(pylon, folder)
    started = s.composectl("server", "start", "--idle-timeout", "300")
    assert started.returncode == 0, started.stdout + started.stderr
    yield s
    s.composectl("server", "stop")


CASES = {
    "argv, stdin, exit status": (["run", "-c", "import sys; print(sys.argv[1:], input()); sys.exit(3)", "a", "b c"],
                                 "typed\n"),
    "a traceback": (["run", "-c", "def f():\n    raise ValueError('no')\nf()"], None),
    "a missing script": (["run", "nope.py"], None),
    "a bad option value": (["run", "--dir", "/nonexistent-folder", "-c", "pass"], None),
    "a script by relative path": (["run", "examples/hello.py", "x"], None),
    "stdlib imports": (["run", "-c", "import json, decimal; print(json.dumps(str(decimal.Decimal(1) / 7)))"], None),
    "a folder by relative path": (["run", "--dir", "examples", "-c",
                                   f"import os; print('hello.py' in os.listdir({str(REPO / 'examples')!r}))"], None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_served_run_is_an_in_process_run(served: Served, case: str) -> None:
    args, stdin = CASES[case]
    before = served.runs()
    there = served.composectl(*args, stdin=stdin)
    assert served.runs() == before + 1, "the run did not go through the server"
    here = served.composectl(*args, stdin=stdin, env={**served.env, "PYLON_SERVER": "0"})
    assert served.runs() == before + 1
    assert (there.returncode, there.stdout, there.stderr) == (here.returncode, here.stdout, here.stderr)


def test_clients_at_once_each_run_in_their_own_folder(served: Served, tmp_path: Path) -> None:
    # Each connection's thread has its own working folder: relative paths
    # resolve against each client's own, even while they run together.
    clients = []
    before = served.runs()
    for i in range(4):
        folder = tmp_path / f"c{i}"
        folder.mkdir()
        (folder / "who.py").write_text(f"import time\ntime.sleep(0.3)\nprint({i})\n")
        clients.append(subprocess.Popen([*CLIENT, "run", "who.py"], env=served.env, cwd=folder,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [c.communicate(timeout=60) for c in clients]
    assert [(c.returncode, out) for c, (out, _err) in zip(clients, outputs, strict=True)] == \
        [(0, f"{i}\n") for i in range(4)]
    assert served.runs() == before + 4


def test_ctrl_c_stops_the_served_guest(served: Served) -> None:
    client = subprocess.Popen([*CLIENT, "run", "-c", "print('looping', flush=True)\nwhile True: pass"],
                              env=served.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert client.stdout is not None and client.stdout.readline() == "looping\n"
    client.send_signal(signal.SIGINT)
    _out, err = client.communicate(timeout=30)
    assert client.returncode == 130, err
    assert "interrupted" in err
    assert served.composectl("run", "-c", "print(1)").stdout == "1\n"


def test_a_client_that_goes_away_stops_its_guest(served: Served) -> None:
    client = subprocess.Popen([*CLIENT, "run", "-c", "print('looping', flush=True)\nwhile True: pass"],
                              env=served.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert client.stdout is not None and client.stdout.readline() == "looping\n"
    client.kill()
    client.wait()
    deadline = time.monotonic() + 20
    while "active=0" not in served.composectl("server", "status").stdout:
        assert time.monotonic() < deadline, "the abandoned guest still runs"
        time.sleep(0.1)


def test_another_environment_runs_in_process(served: Served) -> None:
    before = served.runs()
    other = served.composectl("run", "-c", "print('here')", env={**served.env, "PYLON_SOMETHING": "1"})
    assert (other.returncode, other.stdout) == (0, "here\n")
    assert served.runs() == before


def test_a_folder_others_could_use_is_not_trusted(served: Served) -> None:
    before = served.runs()
    served.folder.chmod(0o755)
    try:
        # The client neither connects nor hands over its streams: it runs the script itself.
        result = served.composectl("run", "-c", "print('here')")
    finally:
        served.folder.chmod(0o700)
    assert (result.returncode, result.stdout) == (0, "here\n")
    assert served.runs() == before


def _raw(served: Served, message: bytes, fds: list[int] | None = None) -> bytes:
    """Sends ``message`` as a client would (with ``fds``), returns what the server answers."""
    import socket

    fd = server_wire.open_private_dir(str(served.folder))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(20)
            sock.connect(server_wire.via_fd(fd, server_wire.SOCKET_NAME))
            if fds is None:
                sock.sendall(message)
            else:
                sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                          b"".join(f.to_bytes(4, sys.byteorder) for f in fds))])
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(256):
                answer += chunk
            return answer
    finally:
        os.close(fd)


def test_malformed_requests_are_refused_and_the_server_keeps_serving(served: Served) -> None:
    run = [server_wire.PROTOCOL, b"run", server_wire.code_stamp(), server_wire.env_stamp(), os.fsencode(REPO),
           b"-c", b"print(1)"]
    with open(os.devnull, "rb") as null:
        cases = {
            b"garbage": (b"\xff" * 100, None),
            b"short": (b"\x00\x00", None),
            b"too large": ((1 << 30).to_bytes(4, "big") + b"x", None),
            b"another protocol": (server_wire.frame([b"other/9", b"run"]), None),
            b"an unknown command": (server_wire.frame([server_wire.PROTOCOL, b"format-disk"]), None),
            b"a run without descriptors": (server_wire.frame(run), None),
            b"a run with one descriptor": (server_wire.frame(run), [null.fileno()]),
        }
        for what, (message, fds) in cases.items():
            answer = _raw(served, message, fds)
            assert not answer.startswith(b"status"), (what, answer)
    assert served.composectl("run", "-c", "print(3)").stdout == "3\n"


def test_stop_and_status(pylon: Pylon, tmp_path: Path) -> None:
    folder = tmp_path / "srv"
    s = Served(pylon, folder)
    assert s.composectl("server", "status").returncode == 1
    assert s.composectl("server", "start", "--idle-timeout", "60").returncode == 0
    assert (folder.stat().st_mode & 0o777) == 0o700
    again = s.composectl("server", "start")
    assert again.returncode == 0 and "already runs" in again.stderr
    assert s.composectl("server", "stop").returncode == 0
    assert s.composectl("server", "status").returncode == 1
    assert not (folder / server_wire.SOCKET_NAME).exists()
    # Without a server, run runs in-process.
    assert s.composectl("run", "-c", "print(2)").stdout == "2\n"


def test_an_idle_server_exits(pylon: Pylon, tmp_path: Path) -> None:
    s = Served(pylon, tmp_path / "srv")
    assert s.composectl("server", "start", "--idle-timeout", "1").returncode == 0
    deadline = time.monotonic() + 30
    while s.composectl("server", "status").returncode == 0:
        assert time.monotonic() < deadline, "the idle server did not exit"
        time.sleep(0.5)


@pytest.mark.parametrize("env", [{}, {"XDG_CACHE_HOME": "/x/cache"}, {"PYLON_CACHE_DIR": "/y/pylon"},
                                 {"HOME": "/home/someone"}])
def test_the_server_folder_is_in_the_cache_root(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for var in ("PYLON_SERVER_DIR", "PYLON_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert server_wire.server_dir() == str(paths.cache_root() / "server")


def test_the_server_folder_must_be_private(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir(mode=0o700)
    os.close(server_wire.open_private_dir(str(folder)))
    folder.chmod(0o750)
    with pytest.raises(PermissionError, match="not private"):
        server_wire.open_private_dir(str(folder))
    link = tmp_path / "link"
    link.symlink_to(folder)
    folder.chmod(0o700)
    with pytest.raises(OSError):
        server_wire.open_private_dir(str(link))
