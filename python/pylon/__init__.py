"""Pylon: run untrusted Python in a WebAssembly sandbox, with native caps.

The embedding API (``docs/api.md``)::

    import pylon

    sb = pylon.Sandbox(timeout=2.0, memory_mb=256)
    print(sb.run("print(1)").stdout)

Names are imported on first use (PEP 562), so ``import pylon`` stays cheap:
``composectl run`` imports this package on every run and must not pay for
the engine, the plan machinery or cbor2 before it needs them.
"""

from __future__ import annotations

# Not `from typing import TYPE_CHECKING`: importing typing costs the CLI's
# run path milliseconds it would not otherwise spend (mypy reads this name
# the same way).
TYPE_CHECKING = False

__all__ = [
    "Sandbox",
    "Session",
    "Result",
    "Interrupt",
    "CapRefused",
    "errors",
    "PylonError",
    "GuestTimeout",
    "GuestInterrupted",
    "GuestOutOfFuel",
    "__version__",
]

__version__ = "0.1.0"

#: Where each public name lives.
_HOMES = {
    "Sandbox": "pylon.sandbox",
    "Session": "pylon.sandbox",
    "Result": "pylon.sandbox",
    "Interrupt": "pylon.engine",
    "CapRefused": "pylon.hostcaps",
    "PylonError": "pylon.errors",
    "GuestTimeout": "pylon.errors",
    "GuestInterrupted": "pylon.errors",
    "GuestOutOfFuel": "pylon.errors",
}

if TYPE_CHECKING:
    from typing import Any

    from pylon import errors
    from pylon.engine import Interrupt
    from pylon.errors import GuestInterrupted, GuestOutOfFuel, GuestTimeout, PylonError
    from pylon.hostcaps import CapRefused
    from pylon.sandbox import Result, Sandbox, Session


def __getattr__(name: str) -> Any:
    import importlib

    if name == "errors":
        return importlib.import_module("pylon.errors")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pylon' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
