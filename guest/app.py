"""The componentize-py entry module of pylon.wasm.

This module runs twice in a guest's life, and the difference matters:

* At build time componentize-py pre-initialises it and snapshots the heap.
  Everything imported here is in the snapshot: the guest package
  ``pylon_guest``, cbor2, and the whole standard library (see
  ``pylon_guest._stdlib``), because a module not imported now is not bundled
  at all. Modules that must only run at run time (they resolve caps on
  import) are stored as source by ``pylon_guest._lazy`` and executed on first
  import.
* At run time Pylon's engine calls ``Entry.run`` once, then, in an
  embedding host's session, ``Entry.run_more`` for each further chunk of
  code. Any other component host (wasmtime-py, ``wasmtime run``, jco) calls
  ``Run.run``, the ``wasi:cli/run`` export, instead (docs/portable.md).
"""

import sys

import pylon_guest._stdio
import pylon_guest._stdlib
import pylon_guest._lazy
import pylon_guest._runner
import pylon_guest.dynlink  # noqa: F401  (pre-imported so user scripts find it instantly)

# Cap modules with one API for embedded and dynlink caps. Each binds the typed
# import at import time when this build's world has it, which must happen now
# for componentize-py to bundle the binding; none resolves anything yet.
import crc32c  # noqa: F401
import pylon_guest.sqlite  # noqa: F401
import pylon_guest.zstd  # noqa: F401

pylon_guest._stdio.install()
pylon_guest._stdlib.preimport_all()
pylon_guest._lazy.install()

from componentize_py_types import Err  # noqa: E402
from wit_world import exports  # noqa: E402
# Imported now, at build time, so componentize-py bundles the bindings.
from wit_world.imports import environment as _environment  # noqa: E402
from wit_world.imports import exit as _exit  # noqa: E402


class Entry(exports.Entry):
    def run(self, argv: list[str], env: list[tuple[str, str]], cwd: str) -> int:
        return pylon_guest._runner.run(argv, env, cwd)

    def run_more(self, code: str) -> int:
        return pylon_guest._runner.run_more(code)


class Run(exports.Run):
    """``wasi:cli/run``: the command-line face for hosts other than Pylon's engine.

    argv, the environment and the working directory come from
    ``wasi:cli/environment`` (argv[0] is the program name, then
    ``script.py args...`` or ``-c CODE args...``, as for ``python``).
    """

    def run(self) -> None:
        argv = _environment.get_arguments()
        # A host with no notion of a working directory gives none: WASI's
        # own default (what wasi-libc starts from) is the root.
        cwd = _environment.initial_cwd() or "/"
        status = pylon_guest._runner.run(argv[1:], _environment.get_environment(), cwd)
        if status == 0:
            return
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        # `run` itself can only say ok or err (a host shows err as 1);
        # exit-with-code carries the status itself, reduced to 0-255 as
        # a POSIX shell sees it (sys.exit(-1) is 255). It does not return.
        _exit.exit_with_code(status & 0xFF)
        raise Err(None)  # a host whose exit-with-code returned: still a failure


# Last, once everything above is in the heap the snapshot keeps: every
# instance starts from those pages, shared copy-on-write. gc.freeze() moves
# all of it to the permanent generation, so no collection at run time (a
# guest's gc.collect(), or CPython's incremental collection of the old
# generation, which runs with the young collections) walks those objects or
# writes their headers: each such write copies a page of the shared image
# into the instance (docs/benchmarks.md, "RSS per session").
import gc  # noqa: E402

gc.collect()
gc.freeze()
