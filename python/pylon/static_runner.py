"""Runs a flat wasi-preview1 core module (the MicroPython static profile).

:func:`run_static` uses Pylon's engine (``pylon._engine.Engine().run_core_p1``)
when it is built, and wasmtime-py otherwise, so callers and tests do not care
which is present. Either way wasm exceptions (exnref) are enabled: the static
profile's setjmp/longjmp needs them. A module built with ``--eh legacy`` does
not load here; run it with :func:`run_static_node` (or WAMR's iwasm, see
docs/micropython-static.md).

stdin, stdout and stderr are the host process's own file descriptors.
``PYLON_STATIC_RUNNER=wasmtime-py`` forces wasmtime-py even when the engine is there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pylon.errors import EngineError

if TYPE_CHECKING:
    from pylon._engine import Interrupt

Pairs = Sequence[tuple[str, str]]

#: Native stack for wasm code; the engine's run_core_p1 should use the same.
NATIVE_STACK_BYTES = 2 * 1024 * 1024  # wasmtime caps it at its async stack size (2 MiB)

#: Node.js runner for legacy-EH modules: V8 implements the legacy exception
#: proposal, and node:wasi is WASI preview 1. Arguments after the script:
#: module, then argv; env and preopens come as JSON in environment variables.
_NODE_RUNNER = r"""
const { WASI } = require('node:wasi');
const fs = require('node:fs');
const [module, ...args] = process.argv.slice(1);
const wasi = new WASI({
  version: 'preview1',
  args,
  env: Object.fromEntries(JSON.parse(process.env.PYLON_WASI_ENV || '[]')),
  preopens: Object.fromEntries(JSON.parse(process.env.PYLON_WASI_PREOPENS || '[]')),
  returnOnExit: true,
});
const instance = new WebAssembly.Instance(new WebAssembly.Module(fs.readFileSync(module)),
                                          wasi.getImportObject());
process.exitCode = wasi.start(instance);
"""


def _engine_runner() -> Any:
    # PYLON_STATIC_RUNNER=wasmtime-py forces the fallback (tests, comparisons).
    if os.environ.get("PYLON_STATIC_RUNNER") == "wasmtime-py":
        return None
    try:
        from pylon import _engine
    except ImportError:
        return None
    engine_cls = getattr(_engine, "Engine", None)
    if engine_cls is None or not hasattr(engine_cls, "run_core_p1"):
        return None
    return engine_cls


_ENGINE = None


def _engine() -> Any:
    """One engine per process (each has an epoch thread and a compile cache)."""
    global _ENGINE
    if _ENGINE is None:
        from pylon import paths

        _ENGINE = _engine_runner()(str(paths.compiled_root()))
    return _ENGINE


def _legacy_hint(message: str) -> str:
    if "legacy_exceptions" in message or "legacy exceptions" in message:
        return " (this module was built with --eh legacy; wasmtime needs --eh exnref)"
    return ""


def backend() -> str:
    """``"pylon-engine"`` when the Rust engine is importable, else ``"wasmtime-py"``."""
    return "pylon-engine" if _engine_runner() else "wasmtime-py"


def run_static(module: Path | str, argv: Sequence[str], env: Pairs = (), preopens: Pairs = (),
               *, writable: Sequence[str] = (), timeout_s: float | None = None,
               memory_mb: int | None = None, interrupt: Interrupt | None = None) -> int:
    """Runs ``module``'s ``_start`` with WASI p1; returns the exit status.

    ``argv`` is the full argv (``argv[0]`` is the program name); ``env`` is
    (name, value) pairs; ``preopens`` is (host dir, guest path) pairs,
    read-only unless the host dir is in ``writable``. On Pylon's engine the
    run has the same limits and Ctrl-C handling as a CPython guest
    (``timeout_s``, ``memory_mb``; :mod:`pylon.guard`), and ``interrupt``
    (a :class:`pylon.engine.Interrupt`) stops it from another thread.

    Raises EngineError when the module cannot be compiled or instantiated, or
    traps (a trap is not an exit status); GuestTimeout / GuestInterrupted
    when it is stopped.
    """
    module = Path(module)
    if not module.is_file():
        raise EngineError(f"no such module: {module}")
    if _engine_runner() is not None:
        from pylon.guard import run_stoppable, timeout_ms

        engine = _engine()
        opened = [(str(h), g, str(h) not in writable) for h, g in preopens]
        limit_ms = timeout_ms(timeout_s)

        def call(stop: Interrupt) -> int:
            return int(engine.run_core_p1(
                str(module), argv=list(argv), env=[tuple(p) for p in env], preopens=opened,
                timeout_ms=limit_ms,
                memory_bytes=None if memory_mb is None else memory_mb << 20, interrupt=stop))
        try:
            return run_stoppable(call, timeout_s=timeout_s, interrupt=interrupt)
        except EngineError as exc:
            hint = _legacy_hint(str(exc))
            if hint:
                raise EngineError(f"cannot compile {module}{hint}: {exc}") from exc
            raise
    if timeout_s is not None or memory_mb is not None:
        # wasmtime-py has no epoch-based stop or limiter wired here: refuse
        # rather than run without the limits that were asked for.
        raise EngineError("--timeout and --memory-mb need Pylon's engine (pylon._engine); "
                          "the wasmtime-py fallback cannot enforce them")
    return _run_wasmtime_py(module, argv, env, preopens, writable)


_WASMTIME_ENGINE = None


def _run_wasmtime_py(module: Path, argv: Sequence[str], env: Pairs, preopens: Pairs,
                     writable: Sequence[str] = ()) -> int:
    global _WASMTIME_ENGINE
    try:
        import wasmtime
    except ImportError as exc:
        raise EngineError("neither pylon._engine nor wasmtime-py is installed (pip install wasmtime)") from exc
    if _WASMTIME_ENGINE is None:
        config = wasmtime.Config()
        config.wasm_exceptions = True
        # No compile cache: wasmtime-py's would load unauthenticated native
        # code from ~/.cache/wasmtime (see docs/security.md).
        # Deep Python recursion must end in MicroPython's RecursionError (its
        # check watches the 1 MiB shadow stack), not in a trap: the native
        # stack takes ~1.3x the shadow stack per level, more than wasmtime's
        # 512 KiB default.
        config.max_wasm_stack = NATIVE_STACK_BYTES
        _WASMTIME_ENGINE = wasmtime.Engine(config)
    engine = _WASMTIME_ENGINE
    try:
        compiled = wasmtime.Module.from_file(engine, str(module))
    except wasmtime.WasmtimeError as exc:
        hint = _legacy_hint(str(exc))
        raise EngineError(f"cannot compile {module}{hint}: {exc}") from exc
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    wasi.argv = list(argv)
    wasi.env = [(k, v) for k, v in env]
    for host, guest in preopens:
        # Read-only unless asked, as on Pylon's engine.
        wasi.preopen_dir(str(host), guest, fs_mutable=str(host) in writable)
    wasi.inherit_stdin()
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    store.set_wasi(wasi)
    try:
        instance = linker.instantiate(store, compiled)
        start = instance.exports(store)["_start"]
        if not isinstance(start, wasmtime.Func):  # a table, memory, global or tag of that name
            raise EngineError(f"{module}: its _start is not a function (is it a wasi-p1 command?)")
        start(store)
    except wasmtime.ExitTrap as exc:
        return exc.code
    except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
        raise EngineError(f"{module} trapped: {exc}") from exc
    return 0


def node() -> str | None:
    """Path of a Node.js new enough for node:wasi preview1 (18+), or None."""
    exe = shutil.which("node")
    if not exe:
        return None
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
        major = int(version.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    return exe if major >= 18 else None


def run_static_node(module: Path | str, argv: Sequence[str], env: Pairs = (), preopens: Pairs = (),
                    *, capture: bool = False) -> subprocess.CompletedProcess[str]:
    """Runs a ``--eh legacy`` module on Node.js (V8, no component model).

    Returns the CompletedProcess (its ``returncode`` is the module's exit status).
    """
    import json

    exe = node()
    if exe is None:
        raise EngineError("Node.js 18+ is not installed (scripts/install-system-deps.sh installs it)")
    child_env = {**os.environ,
                 "PYLON_WASI_ENV": json.dumps([list(p) for p in env]),
                 "PYLON_WASI_PREOPENS": json.dumps([[guest, str(host)] for host, guest in preopens])}
    return subprocess.run([exe, "--no-warnings", "-e", _NODE_RUNNER, "--", str(module), *argv],
                          env=child_env, capture_output=capture, text=capture)


def iwasm() -> str | None:
    """WAMR's iwasm (``PYLON_IWASM`` or PATH), built as docs/micropython-static.md says, or None."""
    exe = os.environ.get("PYLON_IWASM") or shutil.which("iwasm")
    return exe if exe and os.access(exe, os.X_OK) else None


#: iwasm's classic interpreter keeps wasm frames on its own stack (64 KiB by
#: default); MicroPython's recursion limit is reached at about 8 MiB.
IWASM_STACK_BYTES = 8 * 1024 * 1024


def run_static_iwasm(module: Path | str, argv: Sequence[str], env: Pairs = (), preopens: Pairs = (),
                     *, capture: bool = False) -> subprocess.CompletedProcess[str]:
    """Runs a ``--eh legacy`` module on WAMR's iwasm (classic interpreter with EH)."""
    exe = iwasm()
    if exe is None:
        raise EngineError("iwasm not found: build WAMR as docs/micropython-static.md says, "
                          "then put iwasm on PATH or set PYLON_IWASM")
    cmd = [exe, f"--stack-size={IWASM_STACK_BYTES}"]
    cmd += [f"--env={k}={v}" for k, v in env]
    cmd += [f"--map-dir={guest}::{host}" for host, guest in preopens]
    # iwasm takes argv[0] from the module path; the rest follow it.
    cmd += [str(module), *list(argv)[1:]]
    return subprocess.run(cmd, capture_output=capture, text=capture)


def script_invocation(script: Path | str, args: Sequence[str] = ()) -> tuple[list[str], list[tuple[str, str]]]:
    """argv and preopens for running a host script in the static module.

    The script's folder is preopened at its own absolute path, so tracebacks
    and ``__file__`` show the path the user knows, and sibling ``.py``
    modules import (the port puts the script's folder first on sys.path).
    """
    script = Path(script).resolve()
    if not script.is_file():
        raise EngineError(f"no such script: {script}")
    folder = str(script.parent)
    return ["pylon-mp", str(script), *args], [(folder, folder)]


def run_script(module: Path | str, script: Path | str, args: Sequence[str] = (), env: Pairs = (),
               *, runtime: str = "engine", dirs: Sequence[str] = (), timeout_s: float | None = None,
               memory_mb: int | None = None, tmp_mb: int | None = None) -> int:
    """Runs ``script`` (a host path) in the static ``module``; returns its exit status.

    ``runtime`` is ``"engine"`` (our engine or wasmtime-py, exnref modules),
    ``"node"`` or ``"iwasm"`` (legacy-EH modules). The script's folder and
    ``dirs`` (``DIR`` or ``DIR:rw``) are checked as for the CPython guest
    (:mod:`pylon.preopens`); on the engine they are read-only unless ``:rw``.

    On Pylon's engine the script also gets the run's private temporary
    folder at ``/tmp`` (``TMPDIR``), capped at ``tmp_mb`` (default 64), and
    an empty ``/dev/null`` (:mod:`pylon.scratch`). The other runtimes cannot
    be stopped when the folder passes its cap, so they get neither, and
    refuse an explicit ``tmp_mb``.
    """
    from pylon.preopens import plan_preopens

    argv, _ = script_invocation(script, args)
    checked = plan_preopens(Path(script).resolve(), dirs)
    preopens = [(str(p.path), str(p.path)) for p in checked]
    writable = [str(p.path) for p in checked if p.writable]
    if runtime == "node":
        return run_static_node(module, argv, env, preopens).returncode
    if runtime == "iwasm":
        return run_static_iwasm(module, argv, env, preopens).returncode
    if runtime != "engine":
        raise EngineError(f"unknown runtime {runtime!r}: use engine, node or iwasm")
    if _engine_runner() is None:
        if tmp_mb is not None:
            raise EngineError("--tmp-mb needs Pylon's engine (pylon._engine); the wasmtime-py fallback "
                              "cannot stop a run whose temporary folder passes its limit")
        return run_static(module, argv, env, preopens, writable=writable, timeout_s=timeout_s,
                          memory_mb=memory_mb)
    from pylon.engine import Interrupt
    from pylon.plan import DEFAULT_GUEST_LIMITS
    from pylon.scratch import scratch

    stop = Interrupt()
    limit = tmp_mb if tmp_mb is not None else DEFAULT_GUEST_LIMITS.tmp_mb
    assert limit is not None
    with scratch(limit, interrupt=stop, taken=[guest for _, guest in preopens]) as tmp:
        extra = [(str(p.path), p.as_engine_tuple()[1]) for p in tmp.preopens]
        guest_env = sorted({**tmp.env, **dict(env)}.items())
        return run_static(module, argv, guest_env, [*preopens, *extra],
                          writable=[*writable, str(tmp.preopen.path)], timeout_s=timeout_s,
                          memory_mb=memory_mb, interrupt=stop)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pylon.static_runner [--runtime engine|node|iwasm] MODULE SCRIPT [ARG...]``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m pylon.static_runner")
    parser.add_argument("--runtime", choices=("engine", "node", "iwasm"), default="engine")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("module")
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    env = [tuple(e.split("=", 1)) for e in ns.env if "=" in e]
    try:
        return run_script(ns.module, ns.script, ns.args, env, runtime=ns.runtime)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    raise SystemExit(main())
