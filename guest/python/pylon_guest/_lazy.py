"""Run-time-only modules: kept as source at build time, executed on import.

Some guest modules must not run while componentize-py pre-initialises the
app: ``_crc32c_dynlink_cap`` resolves its cap when imported, and there is no
host to resolve against during the build. Yet componentize-py bundles only
modules imported at build time. So the build reads their source into this
module's table (which the heap snapshot keeps) and a meta-path finder
compiles and executes them on their first run-time import.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

#: module name -> (source, filename, is_package), filled at build time.
SOURCES: dict[str, tuple[str, str, bool]] = {}


def _collect(root: str) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for filename in filenames:
            if not filename.endswith(".py"):
                continue
            path = os.path.join(dirpath, filename)
            rel = os.path.relpath(path, root)[: -len(".py")].split(os.sep)
            is_pkg = rel[-1] == "__init__"
            if is_pkg:
                rel = rel[:-1]
            name = ".".join(rel)
            if name and name not in sys.modules:
                with open(path, encoding="utf-8") as f:
                    SOURCES[name] = (f.read(), f"<pylon.wasm>/{'/'.join(rel)}.py", is_pkg)


class _SourceLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        source, filename, _ = SOURCES[module.__spec__.name]
        exec(compile(source, filename, "exec"), module.__dict__)


class LazySourceFinder(importlib.abc.MetaPathFinder):
    """Finds modules in :data:`SOURCES`."""

    _loader = _SourceLoader()

    def find_spec(self, fullname, path=None, target=None):
        entry = SOURCES.get(fullname)
        if entry is None:
            return None
        spec = importlib.util.spec_from_loader(fullname, self._loader, is_package=entry[2])
        if entry[2]:
            spec.submodule_search_locations = []
        return spec


def install() -> None:
    """Collects the guest's not-yet-imported modules and installs the finder."""
    _collect(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not any(isinstance(f, LazySourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, LazySourceFinder())
