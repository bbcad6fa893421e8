"""Host caps: an application's own Python objects, served to the guest as caps.

``pylon.Sandbox(caps={"kv": store})`` lets a script do
``dynlink.load("kv").call("get", "key")`` (``from pylon_guest import
dynlink``, the guest's own package): the guest resolves ``"kv"`` like any
other cap and each call reaches ``store.get("key")`` on the host. This is
how an application exposes its own functions to untrusted scripts, so every
byte from the guest is treated as hostile here:

* Only public callables are methods: a mapping's values, or an object's
  attributes whose names do not start with ``_`` (no ``__class__``, no
  ``_private``). Anything else is ``bad-method``.
* The payload is CBOR (cbor2, the same library the guest encodes with),
  decoded under the cap's payload limit (the engine refuses larger ones
  before they reach Python). Arguments follow the guest's
  ``Cap.call(method, *args)`` convention: no argument is CBOR null, one is
  itself, several are an array. A method taking one parameter gets the value
  as is; one taking several gets the array spread; arguments that do not fit
  the signature are ``bad-payload``.
* An exception a method raises reaches the guest as a typed cap error, but
  only a :class:`CapRefused` carries its own text: any other exception's
  message may hold host details, so the guest hears only its type's name
  and the host's ``report`` gets the traceback.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import cbor2

from pylon.errors import PylonError

__all__ = ["CapRefused", "HostCapError", "host_cap_handler", "public_methods"]

#: The WIT error cases a host cap may answer with.
KINDS = ("denied", "not-found", "bad-method", "trapped", "limit-exceeded", "bad-payload")


class CapRefused(Exception):
    """Raise it in a host cap's method to give the guest a typed error.

    ``kind`` is the WIT case the guest sees (its ``pylon_guest.dynlink`` class:
    ``"bad-payload"`` is ``BadPayload``, ``"denied"`` is ``CapDenied``...);
    the message is shown to the guest as written.
    """

    def __init__(self, message: str, kind: str = "bad-payload"):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        super().__init__(message)
        self.dynlink_kind = kind


class HostCapError(PylonError):
    """A host cap given to a sandbox is unusable (no public methods, a bad name)."""


class _GuestError(Exception):
    """What the engine turns into the guest's cap error (``dynlink_kind`` is the case)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.dynlink_kind = kind


def public_methods(obj: object) -> dict[str, Callable[..., Any]]:
    """The methods a guest may call on ``obj``: a mapping's callable values,
    or the public callable attributes of any other object."""
    if isinstance(obj, Mapping):
        items = [(str(k), v) for k, v in obj.items()]
    else:
        items = [(name, getattr(obj, name, None)) for name in dir(obj) if not name.startswith("_")]
    return {name: fn for name, fn in items if callable(fn) and not name.startswith("_")}


class _Method:
    """A host cap's method with its signature worked out once (``inspect.signature``
    costs ~6 µs, several times a whole call)."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin without a signature: the call itself will tell
            self.signature = None
        params = [] if self.signature is None else [
            p for p in self.signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.positional = len(params)
        # Binding is needed only when a call could mismatch; a plain positional
        # signature is checked by counting.
        self.simple = self.signature is not None and all(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
            for p in self.signature.parameters.values())

    def arguments(self, value: Any) -> tuple[Any, ...]:
        """``value`` as positional arguments (see the module's convention)."""
        if value is None and not self.positional:
            return ()
        if self.positional == 1:
            return (value,)
        if isinstance(value, list):
            return tuple(value)
        return (value,)

    def check(self, args: tuple[Any, ...]) -> str | None:
        """Why ``args`` do not fit the signature, or None."""
        if self.signature is None:
            return None
        if self.simple:
            if len(args) == self.positional:
                return None
            return f"takes {self.positional} argument{'s' if self.positional != 1 else ''}, got {len(args)}"
        try:
            self.signature.bind(*args)
        except TypeError as exc:
            return str(exc)
        return None


def host_cap_handler(name: str, obj: object, report: Callable[[str], None]) -> Callable[[str, bytes], bytes]:
    """The engine's ``handler(method, payload) -> reply`` for ``obj``.

    Raises:
        HostCapError: ``obj`` has no public methods.
    """
    methods = {method: _Method(fn) for method, fn in public_methods(obj).items()}
    if not methods:
        raise HostCapError(f"host cap {name!r} has no public methods: give an object with methods "
                           "or a mapping of names to functions")

    def handler(method: str, payload: bytes) -> bytes:
        found = methods.get(method)
        if found is None:
            raise _GuestError("bad-method", f"host cap {name!r} has no method {method!r}")
        try:
            value = cbor2.loads(payload) if payload else None
        except Exception as exc:  # noqa: BLE001 - any decode failure is the guest's bad payload
            raise _GuestError("bad-payload", f"host cap {name!r}: the payload is not CBOR "
                                             f"({type(exc).__name__})") from None
        args = found.arguments(value)
        mismatch = found.check(args)
        if mismatch is not None:
            raise _GuestError("bad-payload", f"host cap {name!r} method {method!r}: {mismatch}")
        try:
            result = found.fn(*args)
        except CapRefused:
            raise
        except Exception as exc:  # noqa: BLE001 - the guest hears the type, the host the traceback
            report(f"host cap {name!r} method {method!r} raised:\n{traceback.format_exc().rstrip()}")
            raise _GuestError("trapped", f"host cap {name!r} method {method!r} failed with "
                                         f"{type(exc).__name__}") from None
        try:
            return cbor2.dumps(result)
        except Exception as exc:  # noqa: BLE001
            report(f"host cap {name!r} method {method!r} returned a value CBOR cannot encode: {exc}")
            raise _GuestError("trapped", f"host cap {name!r} method {method!r} returned a value "
                                         "that cannot be sent") from None

    return handler
