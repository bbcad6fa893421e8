"""The componentize-py entry module of pylon.wasm.

This module runs twice in a guest's life, and the difference matters:

* At build time componentize-py pre-initialises it and snapshots the heap.
  Everything imported here is in the snapshot: the guest-side ``pylon``
  package, cbor2, and the whole standard library (see ``pylon._stdlib``),
  because a module not imported now is not bundled at all. Modules that must
  only run at run time (they resolve caps on import) are stored as source by
  ``pylon._lazy`` and executed on first import.
* At run time the host calls ``Entry.run`` once, then, in an embedding
  host's session, ``Entry.run_more`` for each further chunk of code.
"""

import pylon._stdlib
import pylon._lazy
import pylon._runner
import pylon.dynlink  # noqa: F401  (pre-imported so user scripts find it instantly)

# Cap modules with one API for embedded and dynlink caps. Each binds the typed
# import at import time when this build's world has it, which must happen now
# for componentize-py to bundle the binding; none resolves anything yet.
import crc32c  # noqa: F401
import pylon.sqlite  # noqa: F401
import pylon.zstd  # noqa: F401

pylon._stdlib.preimport_all()
pylon._lazy.install()

from wit_world import exports  # noqa: E402


class Entry(exports.Entry):
    def run(self, argv: list[str], env: list[tuple[str, str]], cwd: str) -> int:
        return pylon._runner.run(argv, env, cwd)

    def run_more(self, code: str) -> int:
        return pylon._runner.run_more(code)
