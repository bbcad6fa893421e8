"""crc32c for scripts in pylon.wasm, embedded or by dynlink, one API.

``crc32c(data, crc=0) -> int`` uses the typed ``pylon:crc32c`` import when
this pylon.wasm embeds the cap (composed with ``wac plug``: a plain component
call), and otherwise the ``crc32c`` cap by runtime dynlink, resolved on the
first call. ``backend()`` says which.
"""

# Imported here, at module import: componentize-py bundles only what the app
# imports while it is pre-initialised, so a lazy import would never work.
try:
    from wit_world.imports import crc32c as _wit  # type: ignore[import-not-found]
except ImportError:
    _wit = None

# The cap's guest binding (caps/crc32c/guest_binding.c): the same typed
# import called from C, about four times cheaper per call than the generic
# route below. A guest that embeds crc32c has it; its absence only costs speed.
try:
    from _crc32c_binding import crc32c as _binding  # type: ignore[import-not-found]
except ImportError:
    _binding = None

__all__ = ["crc32c", "backend"]

_dynlink = None


def backend() -> str:
    """``"embedded"`` or ``"dynlink"``."""
    return "embedded" if _wit is not None else "dynlink"


def crc32c(data, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of bytes-like ``data``, continuing from ``crc``."""
    if _wit is not None:
        return _wit.update(crc, data if isinstance(data, bytes) else bytes(data))
    global _dynlink, crc32c
    if _dynlink is None:
        import _crc32c_dynlink_cap as _dynlink  # resolves the cap now, on first use
        # From now on `crc32c.crc32c` is the dynlink module's own function
        # (one Python call fewer); a reference taken earlier still works.
        crc32c = _dynlink.crc32c
    return _dynlink.crc32c(data, crc)


if _wit is not None and _binding is not None:
    crc32c = _binding  # noqa: F811 (the same function, called from C)
