"""The CLI's server: ``composectl run`` without loading the guest per process.

    composectl server start [--idle-timeout S]   # or: python -P -m pylon.server
    composectl run hello.py                      # served, if a server runs
    composectl server status | stop

A ``composectl`` process that runs a script itself spends ~150 ms before the
script starts, most of it importing the run path and loading and
authenticating the compiled guest (docs/benchmarks.md). This process does
that once and then runs each client's script the way the client would have
(:func:`pylon.cli.entry.run_plain`, the same code): with the client's
arguments, working folder, stdin, stdout and stderr, under the same plan,
trust policy and limits, each run in a fresh guest instance with its own
private ``/tmp``. Errors are rendered on the client's stderr; the exit status
goes back to the client, which exits with it.

What it trusts: only connections from its own user (the kernel's
``SO_PEERCRED``), on a socket in a ``0700`` folder of its own
(:mod:`pylon.cli.server_wire`); the request's fields are parsed as the
command line they are. It serves a client only if both run the same Pylon
code in the same environment, and it exits once its code on disk changed
(a client then runs its script itself). Each connection runs on its own
thread with its own working folder (``unshare(CLONE_FS)``: the process's
other threads keep theirs). A client's Ctrl-C, or the client going away,
stops its guest. The server exits after ``--idle-timeout`` seconds without a
run (default :data:`IDLE_TIMEOUT_S`), on ``composectl server stop``, or on
SIGTERM; runs under way finish first.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable

from pylon.cli import entry
from pylon.cli import server_wire as wire
from pylon.engine import Interrupt

__all__ = ["IDLE_TIMEOUT_S", "Server", "main"]

#: Seconds without a client after which the server exits.
IDLE_TIMEOUT_S = 1800.0
#: Clients served at once; more are told to run their script themselves.
MAX_CLIENTS = 64
#: unshare(2)'s flag for a thread's own working folder and umask.
_CLONE_FS = 0x200


class Server:
    """One listening server; :meth:`serve` until idle, stopped or stale."""

    def __init__(self, dir_fd: int, idle_timeout: float, log: Callable[[str], None]):
        self._dir_fd = dir_fd
        self._idle_timeout = idle_timeout
        self._log = log
        self._code = wire.code_stamp()
        self._env = wire.env_stamp()
        self._lock = threading.Lock()
        self._active = 0
        self._served = 0
        self._last_seen = time.monotonic()
        self._started = time.time()
        self._stopping = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def bind(self) -> None:
        """Listens on the folder's socket, replacing a dead server's socket file."""
        path = wire.via_fd(self._dir_fd, wire.SOCKET_NAME)
        try:
            os.unlink(path)  # we hold the lock: whatever is there is a dead server's
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o077)  # the socket file: ours alone, like its folder
        try:
            self._sock.bind(path)
        finally:
            os.umask(old_umask)
        self._sock.listen(16)
        self._sock.settimeout(1.0)

    def serve(self) -> None:
        """Accepts clients until stopped, idle past the timeout, or stale."""
        try:
            while not self._stopping.is_set():
                if self._idle():
                    self._log("idle: exiting")
                    break
                try:
                    conn, _ = self._sock.accept()
                except TimeoutError:
                    continue
                # Only runs count as use (the idle clock restarts when one
                # ends): asking for the status keeps no server alive.
                threading.Thread(target=self._handle, args=(conn,), name="pylon-server-client",
                                 daemon=True).start()
        finally:
            self._sock.close()
            try:
                os.unlink(wire.via_fd(self._dir_fd, wire.SOCKET_NAME))
            except OSError:
                pass
        # Runs under way finish first.
        while True:
            with self._lock:
                if self._active == 0:
                    return
            time.sleep(0.05)

    def stop(self) -> None:
        self._stopping.set()

    def _idle(self) -> bool:
        """No run under way, and none for longer than the idle timeout."""
        with self._lock:
            return (self._active == 0 and self._idle_timeout > 0
                    and time.monotonic() - self._last_seen > self._idle_timeout)

    def _handle(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            with conn:
                if wire.peer_uid(conn) != os.geteuid():
                    self._log("refused a connection from another user")
                    return
                fields, fds = _read_request(conn)
                if fields[:1] != [wire.PROTOCOL] or len(fields) < 2:
                    _reply(conn, "fallback unknown protocol")
                    return
                command = fields[1]
                if command == b"status":
                    with self._lock:
                        _reply(conn, f"serving pid={os.getpid()} since={int(self._started)} "
                                     f"runs={self._served} active={self._active}")
                elif command == b"stop":
                    _reply(conn, "status 0")
                    self._log("stop requested")
                    self.stop()
                elif command == b"run":
                    self._run(conn, fields[2:], fds)
                else:
                    _reply(conn, "fallback unknown command")
        except Exception:  # one client's trouble never ends the server
            self._log("a connection failed:\n" + traceback.format_exc())
        finally:
            for fd in fds:
                os.close(fd)

    def _run(self, conn: socket.socket, fields: list[bytes], fds: list[int]) -> None:
        if len(fields) < 3 or len(fds) != 3:
            _reply(conn, "fallback malformed request")
            return
        code, env, cwd, *args = fields
        if code != self._code:
            # Pylon on disk is not what this process runs: stale for good.
            _reply(conn, "fallback the server runs other Pylon code")
            self._log("the installed Pylon changed: exiting")
            self.stop()
            return
        if env != self._env:
            _reply(conn, "fallback the server runs in another environment")
            return
        with self._lock:
            if self._active >= MAX_CLIENTS or self._stopping.is_set():
                _reply(conn, "fallback the server is busy")
                return
            self._active += 1
        status: int | None = None
        try:
            status = self._run_as_client(conn, os.fsdecode(cwd), [os.fsdecode(a) for a in args],
                                         (fds[0], fds[1], fds[2]))
        finally:
            # Counted before the client hears back, so its next `status` sees it.
            with self._lock:
                self._active -= 1
                self._served += status is not None
                self._last_seen = time.monotonic()
        _reply(conn, "fallback cannot run from that folder" if status is None else f"status {status}")

    def _run_as_client(self, conn: socket.socket, cwd: str, args: list[str],
                       stdio: tuple[int, int, int]) -> int | None:
        """The exit status of ``composectl run ARGS`` in ``cwd`` on the client's streams,
        or None when this thread cannot take the client's working folder."""
        if not _own_working_folder():
            return None
        try:
            os.chdir(cwd)
        except OSError:
            return None
        plain = entry.parse_plain_run(args)
        if plain is None:  # the client parsed it; a different parser means different code
            return None
        stderr_fd = stdio[2]
        color = os.isatty(stderr_fd) and "NO_COLOR" not in os.environ

        def render(message: str) -> None:
            _write(stderr_fd, entry.error_line(message, color=color))

        def report(message: str) -> None:
            _write(stderr_fd, f"pylon: {message}\n")

        stop = Interrupt()
        threading.Thread(target=_watch_client, args=(conn, stop), name="pylon-server-watch",
                         daemon=True).start()
        return entry.run_plain(plain, render=render, report=report, with_progress=False,
                               stdio_fds=stdio, interrupt=stop, exit_if_abandoned=False, ahead=True)


def _own_working_folder() -> bool:
    """Gives this thread a working folder of its own (and to the threads it starts)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.unshare(_CLONE_FS) == 0)


def _watch_client(conn: socket.socket, stop: Interrupt) -> None:
    """Stops the run on the client's Ctrl-C, or when the client goes away."""
    while True:
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if not data:
            stop.set()  # the client is gone (or the run is over and it closed)
            return
        if wire.INTERRUPT in data:
            stop.set()


def _read_request(conn: socket.socket) -> tuple[list[bytes], list[int]]:
    """The request's fields and the descriptors that came with it (ours to close;
    closed here if the request cannot be read)."""
    conn.settimeout(10.0)  # a client that connects and says nothing does not hold a thread
    fds: list[int] = []
    data, ancillary, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(4 * 3), socket.MSG_CMSG_CLOEXEC)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(int.from_bytes(payload[i:i + 4], sys.byteorder, signed=True) for i in range(0, usable, 4))
    try:
        return _read_fields(conn, data), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _read_fields(conn: socket.socket, data: bytes) -> list[bytes]:
    """The NUL-separated fields of a request whose first bytes are ``data``."""
    if len(data) < 4:
        return []
    size = int.from_bytes(data[:4], "big")
    if size > wire.MAX_REQUEST:
        return []
    body = bytearray(data[4:])
    while len(body) < size:
        chunk = conn.recv(min(1 << 20, size - len(body)))
        if not chunk:
            return []
        body += chunk
    conn.settimeout(None)
    return bytes(body[:size]).split(b"\0")


def _reply(conn: socket.socket, line: str) -> None:
    try:
        conn.sendall(line.encode("ascii", "replace") + b"\n")
    except OSError:
        pass  # the client is gone


def _write(fd: int, text: str) -> None:
    data = text.encode("utf-8", "replace")
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


def _warm_up(log: Callable[[str], None]) -> None:
    """Loads the default plan's guest into the engine, so the first client is fast."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        status = entry.run_plain(entry.PlainRun(code="pass"), render=log, report=log, with_progress=False,
                                 stdio_fds=(devnull, devnull, devnull), exit_if_abandoned=False, ahead=True)
        log(f"warm-up run: status {status}")
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    """``python -P -m pylon.server``: serves in the foreground, logging to stderr."""
    parser = argparse.ArgumentParser(prog="python -m pylon.server", description=__doc__.splitlines()[0])
    parser.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_S,
                        help="exit after this many seconds without a client (0: never)")
    options = parser.parse_args(argv)
    # Imports are resolved from the installed package, never the client's folder.
    sys.path[:] = [p for p in sys.path if p not in ("", ".")]

    def log(message: str) -> None:
        sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} pylon server[{os.getpid()}]: {message}\n")
        sys.stderr.flush()

    folder = wire.server_dir()
    from pylon import paths

    try:
        paths.private_dir(paths.cache_root())
        os.makedirs(folder, mode=0o700, exist_ok=True)
        dir_fd = wire.open_private_dir(folder)
    except Exception as exc:  # noqa: BLE001 - said once, plainly
        log(f"cannot use {folder}: {exc}")
        return 2
    lock_fd = os.open(wire.via_fd(dir_fd, wire.LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"a server already runs in {folder}")
        return 1
    server = Server(dir_fd, options.idle_timeout, log)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _warm_up(log)
    server.bind()
    log(f"serving on {os.path.join(folder, wire.SOCKET_NAME)} (idle timeout {options.idle_timeout:g} s)")
    server.serve()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
