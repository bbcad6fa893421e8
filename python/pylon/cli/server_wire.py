"""What ``composectl run`` and the CLI's server (:mod:`pylon.server`) agree on.

Imported on every ``composectl run``, so it imports nothing but :mod:`os`
and :mod:`sys` (see :mod:`pylon.cli.entry`).

**Where.** The server listens on a Unix socket in ``$PYLON_SERVER_DIR``,
by default ``<cache>/server/`` (the cache root of :mod:`pylon.paths`:
``$PYLON_CACHE_DIR``, else ``$XDG_CACHE_HOME/pylon``, else
``~/.cache/pylon``), a folder that must be
ours and closed to everyone else (``0700``). Both sides open that folder once
(``O_PATH``, no symbolic link followed), check it, and then reach the socket
through ``/proc/self/fd/N/``: the folder checked is the folder used, and the
socket's path stays short whatever the cache root (Unix socket paths are
limited to 107 bytes).

**Who.** Each side reads the other's uid from the kernel (``SO_PEERCRED``)
and talks only to itself: the server runs what a client asks with the
client's own streams, so it must never serve another user, and a client
must never hand its streams to another user's socket.

**Which.** A client is served only by a server running the same Pylon code
(:func:`code_stamp`) in the same environment (:func:`env_stamp`); otherwise
it runs the script itself, as without a server.

**Messages.** A request is a 4-byte big-endian length and that many bytes:
NUL-separated fields (a command line cannot hold a NUL), the first
:data:`PROTOCOL`, the second the command. ``run`` carries the client's
stdin, stdout and stderr as ``SCM_RIGHTS`` descriptors and the fields
``code stamp, env stamp, cwd, *run_arguments``. While the run lasts the
client sends :data:`INTERRUPT` for each Ctrl-C; closing the connection
stops the run too. Replies are one ASCII line: ``status N``,
``fallback REASON`` (run it yourself) or, for ``status``, ``serving ...``.
"""

from __future__ import annotations

import os
import sys

# Not `from typing import ...`: every `composectl run` imports this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from _socket import socket as Socket

#: The first field of every request.
PROTOCOL = b"pylon-server/1"
#: The socket's name in the server folder.
SOCKET_NAME = "server.sock"
#: Held (flock) by the running server: at most one per folder.
LOCK_NAME = "server.lock"
#: The server's output.
LOG_NAME = "server.log"
#: Sent by a client for each Ctrl-C during its run.
INTERRUPT = b"I"
#: Largest request a server reads (a command line is at most ~2 MiB on Linux).
MAX_REQUEST = 8 << 20
#: Variables (besides ``PYLON_*``) that change what a run does or where its state is.
_ENV_VARS = ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "TMPDIR", "PYTHONUSERBASE", "NO_COLOR")
#: What :func:`code_stamp` covers, relative to the ``pylon`` package.
_CODE_DIRS = ("", "cli", "schemas")


def server_dir() -> str:
    """``$PYLON_SERVER_DIR``, else ``<cache root>/server`` (the cache root as
    :func:`pylon.paths.cache_root` places it)."""
    override = os.environ.get("PYLON_SERVER_DIR")
    if override:
        return override
    root = os.environ.get("PYLON_CACHE_DIR")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pylon")
    return os.path.join(root, "server")


def open_private_dir(path: str) -> int:
    """An ``O_PATH`` descriptor of ``path`` if it is a folder of ours closed to
    others (``0700``-like: no group or other bits).

    Raises:
        OSError: it does not exist, is a symbolic link, or is not a folder.
        PermissionError: it is not ours, or others may use it.
    """
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise PermissionError(f"{path} is not private to this user (owner uid {st.st_uid}, "
                                  f"mode {st.st_mode & 0o777:o}); the CLI's server needs it 0700 and yours")
    except BaseException:
        os.close(fd)
        raise
    return fd


def via_fd(dir_fd: int, name: str) -> str:
    """A short path to ``name`` in the folder open as ``dir_fd``."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def peer_uid(sock: Socket) -> int:
    """The uid of the process at the other end of a connected Unix socket."""
    import _socket

    # struct ucred {pid_t pid; uid_t uid; gid_t gid;}: three native 32-bit ints.
    cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(cred[4:8], sys.byteorder)


def code_stamp() -> bytes:
    """Names, sizes and modification times of the installed ``pylon`` package's
    run-path files (the engine included): a server with other code is stale."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts: list[str] = [sys.executable]
    for sub in _CODE_DIRS:
        folder = os.path.join(package, sub)
        try:
            with os.scandir(folder) as entries:
                found = sorted((e.name, e.stat()) for e in entries if e.is_file())
        except OSError:
            continue
        parts.extend(f"{sub}/{name}:{st.st_size}:{st.st_mtime_ns}" for name, st in found)
    return "|".join(parts).encode("utf-8", "surrogateescape")


def env_stamp() -> bytes:
    """The environment variables that decide where Pylon's state is and how it behaves."""
    names = sorted(name for name in os.environ if name.startswith("PYLON_") or name in _ENV_VARS)
    # The switch that turns the server off is not the server's business.
    return b"\n".join(os.fsencode(f"{name}={os.environ[name]}") for name in names if name != "PYLON_SERVER")


def frame(fields: list[bytes]) -> bytes:
    """A request: its length, then its NUL-separated fields."""
    body = b"\0".join(fields)
    return len(body).to_bytes(4, "big") + body
