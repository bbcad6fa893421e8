"""Pre-imports the standard library at build time.

componentize-py bundles only what the app imported while it was being
pre-initialised; anything else raises ModuleNotFoundError at run time. A
script in pylon.wasm must be able to import any stdlib module WASI allows
(json, decimal, hashlib, xml.etree.ElementTree, ...), so the build imports
every one, submodules included, and the snapshot keeps them.

Skipped: modules that cannot work under WASI or act at import time
(``this`` prints, ``antigravity`` opens a browser), GUI and test suites.

Before importing anything, :func:`preimport_all` installs the guest's
``os.devnull`` hooks (:mod:`pylon_guest._devnull`): a module that keeps a reference
to ``open`` at import time then keeps the hooked one, and the hooks are in the
snapshot, so every run and every session starts with them.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

# Top-level names never imported: they do something on import, need a GUI
# or processes, or are test/dev tooling with no use in a sandbox.
SKIP_TOP = frozenset({
    "this", "antigravity", "__main__", "__hello__", "__phello__",
    "idlelib", "tkinter", "turtle", "turtledemo", "test", "ensurepip",
    "lib2to3", "pydoc_data", "venv", "multiprocessing", "concurrent",
    "curses", "dbm", "readline", "tty", "pty", "msvcrt", "winreg", "winsound",
    "_winapi", "nt", "_msi", "msilib", "webbrowser", "pdb", "_pyrepl", "site",
})

# Submodule name parts never walked into.
SKIP_PARTS = frozenset({"test", "tests", "idle_test", "__main__"})


def _walk(package) -> list[str]:
    names: list[str] = []
    path = getattr(package, "__path__", None)
    if not path:
        return names
    for info in pkgutil.walk_packages(path, package.__name__ + ".", onerror=lambda _: None):
        if SKIP_PARTS.intersection(info.name.split(".")):
            continue
        names.append(info.name)
    return names


def preimport_all() -> list[str]:
    """Installs the devnull hooks, then imports every importable stdlib module; returns the ones that failed."""
    from pylon_guest import _devnull

    _devnull.install()
    failed: list[str] = []
    for name in sorted(sys.stdlib_module_names):
        if name in SKIP_TOP:
            continue
        try:
            module = importlib.import_module(name)
        except BaseException:
            failed.append(name)
            continue
        for sub in _walk(module):
            try:
                importlib.import_module(sub)
            except BaseException:
                failed.append(sub)
    return failed
