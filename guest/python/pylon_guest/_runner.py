"""Runs one script per guest start, the way ``python script.py`` would.

The interpreter was initialised at build time, so everything process-like
(argv, environment, working directory, random seeds) still holds build-time
values and is reset here before user code runs.
"""

from __future__ import annotations

import builtins
import os
import random
import sys
import traceback
import types

from pylon_guest import _lazy


#: The host's private channel for pinned packages (docs/packages.md): guest
#: folders joined by ":", put on sys.path after the standard library (where
#: site-packages would be), then removed from the environment the script sees.
PACKAGES_VAR = "PYLON_PACKAGES"


def _split_packages(env: list[tuple[str, str]]) -> tuple[list[str], list[tuple[str, str]]]:
    """The package folders the host named, and the environment without them."""
    folders: list[str] = []
    rest = []
    for key, value in env:
        if key == PACKAGES_VAR:
            folders = [f for f in value.split(":") if f]
        else:
            rest.append((key, value))
    return folders, rest


def _reset_process_state(argv: list[str], env: list[tuple[str, str]], cwd: str) -> None:
    sys.argv = list(argv)
    os.environ.clear()
    os.environ.update(dict(env))
    try:
        os.chdir(cwd)
    except OSError:
        pass
    # The snapshot froze the global Random's state: reseed from WASI random.
    random.seed()
    # The script's folder is the user's: never litter it with __pycache__.
    sys.dont_write_bytecode = True


def _exit_status(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF if code >= 0 else code
    print(code, file=sys.stderr)
    return 1


def _hidden(tb: types.TracebackType) -> bool:
    """Frames ``python script.py`` would not show: this runner's, the import
    machinery's, and the lazy loader's (CPython hides its own importlib
    frames the same way)."""
    filename = tb.tb_frame.f_code.co_filename
    return (filename == __file__ or filename == _lazy.__file__
            or filename.startswith("<frozen importlib._bootstrap"))


def _strip(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` without its hidden frames (``tb_next`` is writable)."""
    head = last = None
    while tb is not None:
        following = tb.tb_next
        if not _hidden(tb):
            if last is None:
                head = tb
            else:
                last.tb_next = tb
            last = tb
        tb = following
    if last is not None:
        last.tb_next = None
    return head


def _print_traceback(exc: BaseException) -> None:
    """Prints ``exc`` as CPython would for ``python script.py``: the script's frames only."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        try:
            err.__traceback__ = _strip(err.__traceback__)
        except Exception:
            pass  # an exception type that refuses the assignment (a frozen dataclass) keeps its frames
        todo.append(err.__cause__)
        if not err.__suppress_context__:
            todo.append(err.__context__)
    try:
        traceback.print_exception(exc)
    except Exception:
        traceback.print_exc()  # never let printing the error end the guest


def _main_module(filename: str) -> dict:
    module = types.ModuleType("__main__")
    module.__file__ = filename
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    return module.__dict__


def _execute(source: str | bytes, filename: str, namespace: dict) -> int:
    """Compiles and runs ``source`` in ``namespace``; returns the exit status."""
    status = 0
    try:
        code = compile(source, filename, "exec")
        exec(code, namespace)
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException as exc:
        _print_traceback(exc)
        status = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    return status


def run(argv: list[str], env: list[tuple[str, str]], cwd: str) -> int:
    """Runs ``argv`` (``[script, args...]`` or ``["-c", code, args...]``)."""
    if not argv:
        print("pylon: nothing to run (no script and no -c)", file=sys.stderr)
        return 2
    if argv[0] == "-c":
        if len(argv) < 2:
            print("pylon: -c needs an argument", file=sys.stderr)
            return 2
        source: str | bytes = argv[1]
        filename = "<string>"
        script_argv = ["-c", *argv[2:]]
        path_entry = ""
    else:
        filename = argv[0]
        script_argv = list(argv)
        path_entry = os.path.dirname(filename) or "."
    packages, env = _split_packages(env)
    _reset_process_state(script_argv, env, cwd)
    sys.path.insert(0, path_entry)
    # After the standard library, as site-packages: a package cannot shadow it.
    sys.path.extend(packages)
    namespace = _main_module(filename)
    if filename != "<string>":
        try:
            with open(filename, "rb") as f:
                source = f.read()
        except OSError as exc:
            print(f"pylon: can't open file {filename!r}: {exc}", file=sys.stderr)
            return 2
    return _execute(source, filename, namespace)


def run_more(code: str) -> int:
    """Runs ``code`` in the ``__main__`` of the last :func:`run` (a session)."""
    main = sys.modules.get("__main__")
    namespace = main.__dict__ if main is not None else _main_module("<string>")
    return _execute(code, "<string>", namespace)
