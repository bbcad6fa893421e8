"""The process-wide engine: one wasmtime engine, its compile cache on disk.

Only this module and :mod:`pylon.runtime` touch ``pylon._engine``.
"""

from __future__ import annotations

import functools

from pylon import _engine, paths

ProviderSpec = _engine.ProviderSpec
HostCapSpec = _engine.HostCapSpec
Interrupt = _engine.Interrupt


@functools.cache
def get_engine(*, fuel: bool = False) -> _engine.Engine:
    """The shared engine, with its compile cache under ``paths.compiled_root()``.

    ``fuel=True`` is a second engine that meters wasm instructions (for a
    deterministic CPU budget): its code is compiled separately, so its first
    run of a guest compiles it (tens of seconds, then cached on disk).

    Raises:
        StateError: the cache root is owned by another user or writable by
            others (it holds compiled code, build tools and the venv).
    """
    paths.private_dir(paths.cache_root())
    return _engine.Engine(str(paths.compiled_root()), fuel=fuel)
