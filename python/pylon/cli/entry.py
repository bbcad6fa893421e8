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

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pylon.errors import GuestStopped

__all__ = ["main", "parse_plain_run", "stopped_status"]

#: Exit status when a PylonError stops composectl (as :data:`pylon.cli.main.ERROR_EXIT`).
_ERROR_EXIT = 2
#: ``run``'s options that take a value; a flag not listed here means "use the full CLI".
_VALUED = {"--plan", "-c", "--env", "--dir", "--profile", "--timeout", "--memory-mb", "--tmp-mb"}


@dataclass
class PlainRun:
    """A ``composectl run`` whose arguments need no help from typer."""

    plan: Path | None = None
    code: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    timeout: float | None = None
    memory_mb: int | None = None
    tmp_mb: int | None = None
    script: str | None = None
    args: list[str] = field(default_factory=list)


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
        if Path(value).is_dir():
            return False
        run.plan = Path(value)
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
        return math.isfinite(run.timeout) and run.timeout >= 0.001
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


def _error(message: str) -> None:
    # The full CLI renders this with rich; plain text is what rich prints to a
    # pipe, and a terminal gets the same bold red.
    if sys.stderr.isatty() and "NO_COLOR" not in os.environ:
        sys.stderr.write(f"\x1b[1;31merror: \x1b[0m{message}\n")
    else:
        sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def stopped_status(exc: GuestStopped, render: Callable[[str], None]) -> int:
    """Says why the guest stopped; the exit status a shell would give (124 timeout, 130 Ctrl-C,
    153 temporary folder full).

    A guest blocked in a host call cannot be unwound: then the process ends
    here (after flushing), instead of waiting for its thread.
    """
    render(str(exc))
    if exc.abandoned:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(exc.exit_status)
    return exc.exit_status


def _run_plain(run: PlainRun) -> int:
    from pylon.errors import GuestStopped, PylonError

    try:
        from pylon import runtime
    except ImportError as exc:
        _error(f"the Pylon runtime is unavailable: {exc}")
        return _ERROR_EXIT
    from pylon.cli.progress import fetch_progress

    try:
        return int(runtime.run(plan=run.plan, script=run.script, code=run.code, args=run.args,
                               env=run.env, dirs=run.dirs, timeout_s=run.timeout,
                               memory_mb=run.memory_mb, tmp_mb=run.tmp_mb, progress=fetch_progress) or 0)
    except KeyboardInterrupt:
        # Ctrl-C before the guest ran (loading the plan, fetching): as the
        # typer app does, exit 130 without a traceback.
        return 130
    except GuestStopped as exc:
        return stopped_status(exc, _error)
    except PylonError as exc:
        _error(str(exc))
        return _ERROR_EXIT


def main() -> None:
    """Entry point of the ``composectl`` console script."""
    if sys.argv[1:2] == ["run"]:
        plain = parse_plain_run(sys.argv[2:])
        if plain is not None:
            sys.exit(_run_plain(plain))
    from pylon.cli.main import main as full_cli

    full_cli()
