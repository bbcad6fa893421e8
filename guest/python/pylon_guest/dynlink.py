"""Run-time dynamic linking of caps, from inside the guest.

``load(name)`` asks the host to resolve the cap the plan calls ``name``
(``compose:dynlink/linker.resolve-by-id``); the host checks the plan and the
trust policy, fetches the blob on first use and instantiates the provider
in its own Store. The returned :class:`Cap` routes every call through
``instance.invoke(method, payload)``.

Payload convention for :meth:`Cap.call`: the CBOR encoding of the single
argument, or of the array of arguments when there are several (none:
CBOR null); the reply is CBOR-decoded.

Errors are :class:`DynlinkError` subclasses, one per WIT error case::

    DynlinkError
    ├── CapDenied          the trust policy refused the cap
    ├── CapNotFound        not in the plan, or its blob could not be had
    ├── BadMethod          the cap has no such method
    ├── CapTrapped         the cap trapped (it is dead from then on)
    ├── CapLimitExceeded   memory, time or payload limit hit
    └── BadPayload         the cap could not decode the payload
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any

import cbor2

from componentize_py_types import Err
from wit_world.imports import compose_dynlink_types as _types
from wit_world.imports import linker as _linker

__all__ = [
    "load", "Cap", "DynlinkError", "CapDenied", "CapNotFound", "BadMethod",
    "CapTrapped", "CapLimitExceeded", "BadPayload",
]


class DynlinkError(Exception):
    """A resolve or call failed; ``kind`` is the WIT error case."""

    kind = "error"


class CapDenied(DynlinkError):
    kind = "denied"


class CapNotFound(DynlinkError, ImportError):
    kind = "not-found"


class BadMethod(DynlinkError, AttributeError):
    kind = "bad-method"


class CapTrapped(DynlinkError):
    kind = "trapped"


class CapLimitExceeded(DynlinkError):
    kind = "limit-exceeded"


class BadPayload(DynlinkError, ValueError):
    kind = "bad-payload"

# compose:dynlink's instance.invoke called from C (guest/native/
# _dynlink_binding.c): about three times cheaper per call than
# componentize-py's generic import path. Every guest built by pylon links
# it; the generic path below stays for a guest built without it.
try:
    import _dynlink_binding  # type: ignore[import-not-found]
except ImportError:
    _dynlink_binding = None
else:
    # In the WIT's case order.
    _dynlink_binding.set_errors((CapDenied, CapNotFound, BadMethod, CapTrapped, CapLimitExceeded, BadPayload))

_BY_CASE = {
    _types.Error_Denied: CapDenied,
    _types.Error_NotFound: CapNotFound,
    _types.Error_BadMethod: BadMethod,
    _types.Error_Trapped: CapTrapped,
    _types.Error_LimitExceeded: CapLimitExceeded,
    _types.Error_BadPayload: BadPayload,
}


def _translate(err: Err) -> DynlinkError:
    case = err.value
    return _BY_CASE.get(type(case), DynlinkError)(getattr(case, "value", str(case)))


class Cap:
    """A resolved cap. Create with :func:`load`."""

    def __init__(self, name: str, instance: Any):
        self.name = name
        self._instance = instance
        self._invoke = instance.invoke
        self._api: types.ModuleType | None = None
        if _dynlink_binding is not None:
            # The same call, made from C: any bytes-like payload, errors raised
            # as the classes above. Shadows the method below for this object.
            self.invoke = functools.partial(_dynlink_binding.invoke, instance.handle)

    def invoke(self, method: str, payload: bytes = b"") -> bytes:
        """Calls ``method`` with raw ``payload`` bytes; returns the reply bytes."""
        if type(payload) is not bytes:
            # componentize-py lowers only `bytes` to `list<u8>`; a bytearray
            # or memoryview made the guest trap.
            payload = bytes(payload)
        try:
            return self._invoke(method, payload)
        except Err as err:
            raise _translate(err) from None

    def call(self, method: str, *args: Any) -> Any:
        """Calls ``method`` with CBOR-encoded ``args``; returns the decoded reply."""
        if len(args) == 1:
            payload = cbor2.dumps(args[0])
        elif args:
            payload = cbor2.dumps(list(args))
        else:
            payload = cbor2.dumps(None)
        return cbor2.loads(self.invoke(method, payload))

    @property
    def api(self) -> types.ModuleType | None:
        """The cap's typed shim as a module (``pylon_guest.caps.<name>``), or None."""
        if self._api is None:
            source = self._instance.shim()
            if source is None:
                return None
            module = types.ModuleType(f"pylon_guest.caps.{self.name}")
            module.__file__ = f"<cap {self.name} shim>"
            module.cap = self
            # In sys.modules while it runs, as an import would be (dataclasses
            # look their module up there), and compiled without this file's
            # own `from __future__` flags.
            sys.modules[module.__name__] = module
            try:
                exec(compile(source, module.__file__, "exec", dont_inherit=True), module.__dict__)
            except BaseException:
                del sys.modules[module.__name__]
                raise
            self._api = module
        return self._api

    def __repr__(self) -> str:
        return f"<pylon_guest.dynlink.Cap {self.name!r}>"


_loaded: dict[str, Cap] = {}


def load(name: str) -> Cap:
    """Resolves cap ``name`` (once per run) and returns it.

    Raises a :class:`DynlinkError` subclass when the host refuses.
    """
    cap = _loaded.get(name)
    if cap is None:
        try:
            instance = _linker.resolve_by_id(name)
        except Err as err:
            raise _translate(err) from None
        cap = _loaded[name] = Cap(name, instance)
    return cap
