"""The ``composectl`` entry point, with a fast path for plain ``composectl run``.

``composectl run script.py`` is the command users run most, and importing
typer and rich costs more than running a script in a warm guest. So a
``run`` whose arguments are all plain (known options with valid values) is
parsed here and handed to :func:`pylon.runtime.run` directly. Anything else,
``--help``, an unknown option, a value typer would reject, the MicroPython
profile, goes to the full app in :mod:`pylon.cli.main`, which owns every
message and exit status. Both paths render errors the same way
(``error: <message>`` on stderr, exit status 2; a stopped guest exits 124,
130, or 153 when its temporary folder passed its size limit).
"""

from __future__ import annotations

import os
import sys

# Not `from typing import ...`: this module is the console script, and each
# import on the run path costs every `composectl run` (docs/benchmarks.md).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pylon.engine import Interrupt
    from pylon.errors import GuestStopped
    from pylon.runtime import ProgressFactory

__all__ = ["main", "parse_plain_run", "run_plain", "stopped_status"]

#: Exit status when a PylonError stops composectl (as :data:`pylon.cli.main.ERROR_EXIT`).
_ERROR_EXIT = 2
#: ``run``'s options that take a value; a flag not listed here means "use the full CLI".
_VALUED = {"--plan", "-c", "--env", "--dir", "--profile", "--timeout", "--memory-mb", "--tmp-mb"}


class PlainRun:
    """A ``composectl run`` whose arguments need no help from typer.

    A plain class, not a dataclass: importing :mod:`dataclasses` (and the
    :mod:`inspect` it pulls in) would cost the run path ~15 ms.
    """

    __slots__ = ("plan", "code", "env", "dirs", "timeout", "memory_mb", "tmp_mb", "script", "args")

    def __init__(self, *, plan: str | None = None, code: str | None = None, env: dict[str, str] | None = None,
                 dirs: list[str] | None = None, timeout: float | None = None, memory_mb: int | None = None,
                 tmp_mb: int | None = None, script: str | None = None, args: list[str] | None = None):
        self.plan = plan
        self.code = code
        self.env = env if env is not None else {}
        self.dirs = dirs if dirs is not None else []
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.tmp_mb = tmp_mb
        self.script = script
        self.args = args if args is not None else []

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlainRun) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass with eq

    def __repr__(self) -> str:
        return "PlainRun(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__) + ")"


def parse_plain_run(argv: list[str]) -> PlainRun | None:
    """``run``'s arguments (after ``run``) as a :class:`PlainRun`, or None for the full CLI.

    Mirrors the typer command in :mod:`pylon.cli.run_cmd`: options come
    before SCRIPT; everything from SCRIPT on belongs to the script.
    """
    run = PlainRun()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.partition("=")
        if name not in _VALUED or (eq and name == "-c"):
            return None
        if not eq:
            if i + 1 >= len(argv):
                return None
            i += 1
            value = argv[i]
        if not _apply(run, name, value):
            return None
        i += 1
    rest = argv[i:]
    if rest:
        run.script, run.args = rest[0], rest[1:]
    if run.code is None and run.script is None:
        return None
    if run.code is not None and run.script is not None:
        # With -c every positional is an argument (python -c CODE a b).
        run.args.insert(0, run.script)
        run.script = None
    return run


def _apply(run: PlainRun, name: str, value: str) -> bool:
    """Stores one option; False when typer would have something to say about it."""
    if name == "--plan":
        if os.path.isdir(value):
            return False
        run.plan = value
    elif name == "-c":
        run.code = value
    elif name == "--env":
        key, sep, val = value.partition("=")
        if not sep or not key:
            return False
        run.env[key] = val
    elif name == "--dir":
        run.dirs.append(value)
    elif name == "--profile":
        return value == "cpython"
    elif name == "--timeout":
        try:
            run.timeout = float(value)
        except ValueError:
            return False
        # Not NaN (which fails every comparison) nor infinite.
        return 0.001 <= run.timeout < float("inf")
    elif name == "--memory-mb":
        if not (value.isascii() and value.isdigit()):
            return False
        run.memory_mb = int(value)
        return 16 <= run.memory_mb <= 4096
    elif name == "--tmp-mb":
        if not (value.isascii() and value.isdigit()):
            return False
        run.tmp_mb = int(value)
        return 1 <= run.tmp_mb <= 65536  # as run_cmd's --tmp-mb (pylon.scratch.MAX_TMP_MB)
    return True


def error_line(message: str, *, color: bool) -> str:
    """``error: <message>`` as the full CLI renders it: plain text is what rich
    prints to a pipe, and a terminal gets the same bold red."""
    return f"\x1b[1;31merror: \x1b[0m{message}\n" if color else f"error: {message}\n"


def _error(message: str) -> None:
    sys.stderr.write(error_line(message, color=sys.stderr.isatty() and "NO_COLOR" not in os.environ))
    sys.stderr.flush()


def stopped_status(exc: GuestStopped, render: Callable[[str], None], *, exit_if_abandoned: bool = True) -> int:
    """Says why the guest stopped; the exit status a shell would give (124 timeout, 130 Ctrl-C,
    153 temporary folder full).

    A guest blocked in a host call cannot be unwound: then the process ends
    here (after flushing), instead of waiting for its thread (unless
    ``exit_if_abandoned`` is false: the server, which serves others, leaves
    the thread behind instead).
    """
    render(str(exc))
    if exc.abandoned and exit_if_abandoned:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(exc.exit_status)
    return exc.exit_status


def run_plain(run: PlainRun, *, render: Callable[[str], None] = _error,
              report: Callable[[str], None] | None = None, with_progress: bool = True,
              stdio_fds: tuple[int, int, int] | None = None, interrupt: Interrupt | None = None,
              exit_if_abandoned: bool = True, ahead: bool = False) -> int:
    """Runs a plain ``composectl run``; its exit status.

    In-process by default. The CLI's server (:mod:`pylon.server`) passes the
    client's streams (``stdio_fds``), a renderer and reporter writing to the
    client's stderr, the stop flag the client's Ctrl-C sets, and ``ahead``
    (instances made ahead: it runs again).
    """
    from pylon.errors import GuestStopped, PylonError

    try:
        from pylon import runtime
    except ImportError as exc:
        render(f"the Pylon runtime is unavailable: {exc}")
        return _ERROR_EXIT
    from pathlib import Path

    progress = _fetch_progress() if with_progress else None

    try:
        return int(runtime.run(plan=Path(run.plan) if run.plan is not None else None, script=run.script,
                               code=run.code, args=run.args, env=run.env, dirs=run.dirs,
                               timeout_s=run.timeout, memory_mb=run.memory_mb, tmp_mb=run.tmp_mb,
                               progress=progress, report=report, stdio_fds=stdio_fds,
                               interrupt=interrupt, ahead=ahead) or 0)
    except KeyboardInterrupt:
        # Ctrl-C before the guest ran (loading the plan, fetching): as the
        # typer app does, exit 130 without a traceback.
        return 130
    except GuestStopped as exc:
        return stopped_status(exc, render, exit_if_abandoned=exit_if_abandoned)
    except PylonError as exc:
        render(str(exc))
        return _ERROR_EXIT


def _fetch_progress() -> ProgressFactory:
    """The rich progress bar for fetches (imported only when a run may fetch)."""
    from pylon.cli.progress import fetch_progress

    return fetch_progress


def main() -> None:
    """Entry point of the ``composectl`` console script."""
    if sys.argv[1:2] == ["run"]:
        plain = parse_plain_run(sys.argv[2:])
        if plain is not None:
            # A running `composectl server` runs it with the guest already
            # loaded (pylon.cli.server_client); else it runs here.
            from pylon.cli.server_client import run_on_server

            served = run_on_server(sys.argv[2:])
            sys.exit(served if served is not None else run_plain(plain))
    from pylon.cli.main import main as full_cli

    full_cli()
