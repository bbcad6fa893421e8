"""``composectl run`` through a running ``composectl server``, when there is one.

A fresh ``composectl`` process spends most of its time before the script
runs: importing the run path, and loading and authenticating the 60 MiB
compiled guest (docs/benchmarks.md). The server (:mod:`pylon.server`) keeps
all that loaded; this client hands it the run's arguments, working folder and
its own stdin, stdout and stderr, and exits with the status it gets back. The
script's output goes straight to this process's streams (a terminal stays a
terminal); Ctrl-C here stops the guest there.

When there is no server, or it cannot serve this run (other code, another
environment), :func:`run_on_server` returns None and the caller runs the
script itself: the server changes how fast a run starts, never what it does.
``PYLON_SERVER=0`` turns the client off. Wire format and checks:
:mod:`pylon.cli.server_wire`. Lean imports: this runs on every ``run``.
"""

from __future__ import annotations

import os
import sys

from pylon.cli import server_wire as wire

# Not `from typing import ...`: every `composectl run` imports this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from _socket import socket as Socket

#: Exit status when the server dropped the run (as the CLI's error status).
_ERROR_EXIT = 2


def run_on_server(run_args: list[str]) -> int | None:
    """The exit status of ``composectl run RUN_ARGS`` run by the server, or
    None when there is no server to run it (the caller runs it itself)."""
    if os.environ.get("PYLON_SERVER") == "0":
        return None
    sock = _connect()
    if sock is None:
        return None
    try:
        return _converse(sock, run_args)
    finally:
        sock.close()


def _connect() -> Socket | None:
    """A connection to this user's server, or None."""
    import _socket

    try:
        dir_fd = wire.open_private_dir(wire.server_dir())
    except OSError:
        return None  # no server folder, or one we must not trust: no server
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            sock.connect(wire.via_fd(dir_fd, wire.SOCKET_NAME))
            if wire.peer_uid(sock) != os.geteuid():
                raise PermissionError("the server socket belongs to another user")
        except OSError:
            sock.close()
            return None
        return sock
    finally:
        os.close(dir_fd)


def _converse(sock: Socket, run_args: list[str]) -> int | None:
    import _socket

    fields = [wire.PROTOCOL, b"run", wire.code_stamp(), wire.env_stamp(), os.fsencode(os.getcwd()),
              *map(os.fsencode, run_args)]
    message = wire.frame(fields)
    fds = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in (0, 1, 2))
    try:
        sent = sock.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        if sent < len(message):
            sock.sendall(message[sent:])
    except OSError:
        return None  # a closed stdio descriptor, a server gone: run it here
    kind, _, value = _read_line(sock, forward_ctrl_c=True).partition(" ")
    if kind == "status" and value.lstrip("-").isdigit():
        return int(value)
    if kind == "fallback":
        return None
    sys.stderr.write("error: the Pylon server ended the run without its exit status; see its log in "
                     f"{os.path.join(wire.server_dir(), wire.LOG_NAME)} (PYLON_SERVER=0 runs without it)\n")
    return _ERROR_EXIT


def ask_server(command: bytes) -> str | None:
    """The server's one-line answer to ``status`` or ``stop``; None when none runs."""
    sock = _connect()
    if sock is None:
        return None
    try:
        sock.sendall(wire.frame([wire.PROTOCOL, command]))
        return _read_line(sock) or None
    except OSError:
        return None  # the server went away meanwhile
    finally:
        sock.close()


def _read_line(sock: Socket, *, forward_ctrl_c: bool = False) -> str:
    """The server's one-line reply ("" if it closed without one). With
    ``forward_ctrl_c``, each Ctrl-C meanwhile is sent on to stop the guest
    there (its status, 130, then comes back as the reply)."""
    reply = b""
    while not reply.endswith(b"\n"):
        try:
            chunk = sock.recv(256)
        except KeyboardInterrupt:
            if not forward_ctrl_c:
                raise
            try:
                sock.sendall(wire.INTERRUPT)
            except OSError:
                pass
            continue
        except OSError:
            break
        if not chunk:
            break
        reply += chunk
    return reply.decode("ascii", "replace").strip()
