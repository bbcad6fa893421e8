"""Zstandard compression for Pylon guests.

The API follows Python 3.14's ``compression.zstd`` for the common subset::

    from pylon_guest import zstd
    frame = zstd.compress(data, level=3)
    data = zstd.decompress(frame)                      # at most DEFAULT_MAX_OUTPUT bytes
    data = zstd.decompress(frame, max_output=1 << 20)  # or a limit of your own

    c = zstd.ZstdCompressor(level=3)
    out = c.compress(chunk) + c.compress(chunk2) + c.flush()   # flush() ends the frame

    d = zstd.ZstdDecompressor(max_output=1 << 30)
    data = d.decompress(part1) + d.decompress(part2)

Two backends, one API. When the guest was built with the zstd cap embedded
(``wac plug``), calls go straight to the typed ``pylon:zstd/zstd`` import.
Otherwise the cap is resolved at first use through ``pylon_guest.dynlink`` and
called by method name (see docs/embedded.md, "Typed calls over dynlink").

Errors: every failure is a :class:`ZstdError`; a frame that is not valid zstd
raises :class:`CorruptFrameError`, and output past the limit (a
decompression bomb, or a limit set too low) raises
:class:`OutputTooLargeError`. Decompression always has a limit:
``max_output`` per call, :data:`DEFAULT_MAX_OUTPUT` unless given.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "COMPRESSION_LEVEL_DEFAULT",
    "DEFAULT_MAX_OUTPUT",
    "CorruptFrameError",
    "OutputTooLargeError",
    "ZstdCompressor",
    "ZstdDecompressor",
    "ZstdError",
    "backend",
    "compress",
    "decompress",
]

# The typed import exists only in a guest whose world imports pylon:zstd/zstd
# (the embedded build). It must be imported here, at module import, because
# componentize-py bundles only modules imported while it pre-initialises the
# app: a lazy import would fail at run time even in an embedded build.
try:
    from wit_world.imports import zstd as _wit  # type: ignore[import-not-found]
    from componentize_py_types import Err as _WitErr  # type: ignore[import-not-found]
except ImportError:
    _wit = None
    _WitErr = None

COMPRESSION_LEVEL_DEFAULT = 3
#: The decompression limit when none is given: 256 MiB.
DEFAULT_MAX_OUTPUT = 256 * 1024 * 1024


class ZstdError(Exception):
    """Any zstd failure."""


class CorruptFrameError(ZstdError):
    """The input is not valid zstd data (bad magic, corrupt block, checksum
    mismatch, or a frame cut short)."""


class OutputTooLargeError(ZstdError):
    """Decompressing would produce more than the allowed number of bytes."""

    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(f"decompressed output would exceed the limit of {limit} bytes "
                         "(pass a larger max_output if the data is trusted)")


def _raise(kind: str, detail: Any) -> None:
    if kind == "corrupt":
        raise CorruptFrameError(f"corrupt zstd data: {detail}")
    if kind == "too-large":
        raise OutputTooLargeError(int(detail))
    raise ZstdError(str(detail))


class _Embedded:
    """Calls the typed import the embedded cap satisfies."""

    name = "embedded"

    def __init__(self, wit: Any):
        self.wit = wit
        self.errors = {wit.Error_Corrupt: "corrupt", wit.Error_TooLarge: "too-large", wit.Error_Failed: "failed"}

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except _WitErr as exc:
            err = exc.value
            _raise(self.errors.get(type(err), "failed"), err.value)

    def compress(self, data: bytes, level: int) -> bytes:
        return self._call(self.wit.compress, data, level)

    def decompress(self, data: bytes, max_output: int) -> bytes:
        return self._call(self.wit.decompress, data, max_output)

    def compressor(self, level: int) -> Any:
        return self.wit.Compressor(level)

    def compressor_call(self, handle: Any, method: str, *args: Any) -> bytes:
        return self._call(getattr(handle, method), *args)

    def decompressor(self, max_output: int) -> Any:
        return self.wit.Decompressor(max_output)

    def decompressor_call(self, handle: Any, method: str, *args: Any) -> Any:
        return self._call(getattr(handle, method), *args)

    def drop(self, handle: Any) -> None:
        handle.__exit__(None, None, None)


class _Dynlink:
    """Calls the zstd cap through ``pylon_guest.dynlink``: the typed interface's
    functions by name; ``result`` values arrive as ``{"ok": v}`` or
    ``{"err": {"kind": ..., "detail": ...}}``; resources are integer handles
    and their methods are named ``<resource>.<method>``. The cap reports
    corrupt input and output past the limit as dynlink's own ``bad-payload``
    and ``limit-exceeded`` (messages as below), turned back into
    CorruptFrameError and OutputTooLargeError here."""

    name = "dynlink"
    _CORRUPT = "corrupt zstd data: "
    _TOO_LARGE = "decompressed output would exceed the limit of "

    def __init__(self) -> None:
        from pylon_guest import dynlink  # type: ignore[attr-defined]

        self.dynlink = dynlink
        self.cap = dynlink.load("zstd")

    def _call(self, method: str, *args: Any) -> Any:
        try:
            reply = self.cap.call(method, *args)
        except (self.dynlink.BadPayload, self.dynlink.CapLimitExceeded) as exc:
            text = str(exc)
            if isinstance(exc, self.dynlink.BadPayload) and text.startswith(self._CORRUPT):
                _raise("corrupt", text[len(self._CORRUPT):])
            if text.startswith(self._TOO_LARGE):
                _raise("too-large", text[len(self._TOO_LARGE):].split(" ", 1)[0])
            raise
        if isinstance(reply, dict) and "err" in reply:
            err = reply["err"]
            _raise(err.get("kind", "failed"), err.get("detail"))
        return reply["ok"] if isinstance(reply, dict) and "ok" in reply else reply

    def compress(self, data: bytes, level: int) -> bytes:
        return self._call("compress", data, level)

    def decompress(self, data: bytes, max_output: int) -> bytes:
        return self._call("decompress", data, max_output)

    def compressor(self, level: int) -> Any:
        return ("compressor", self._call("compressor.new", level))

    def compressor_call(self, handle: Any, method: str, *args: Any) -> Any:
        return self._call(f"compressor.{method.replace('_', '-')}", handle[1], *args)

    def decompressor(self, max_output: int) -> Any:
        return ("decompressor", self._call("decompressor.new", max_output))

    def decompressor_call(self, handle: Any, method: str, *args: Any) -> Any:
        return self._call(f"decompressor.{method.replace('_', '-')}", handle[1], *args)

    def drop(self, handle: Any) -> None:
        self._call(f"{handle[0]}.drop", handle[1])


_backend: Any = None


def backend() -> Any:
    """The backend in use (resolved on first call): ``.name`` is "embedded"
    or "dynlink"."""
    global _backend
    if _backend is None:
        _backend = _Embedded(_wit) if _wit is not None else _Dynlink()
    return _backend


def _bytes(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"a bytes-like object is required, not {type(data).__name__!r}")


def _level(level: int | None) -> int:
    if level is None:
        return COMPRESSION_LEVEL_DEFAULT
    if not isinstance(level, int) or isinstance(level, bool):
        raise TypeError(f"level must be an int, not {type(level).__name__!r}")
    if not -(1 << 31) <= level < (1 << 31):
        raise ValueError(f"compression level {level} is out of range")
    return level


def _limit(max_output: int) -> int:
    if not isinstance(max_output, int) or isinstance(max_output, bool) or max_output < 0:
        raise ValueError(f"max_output must be a non-negative int, not {max_output!r}")
    return min(max_output, (1 << 64) - 1)


def compress(data: bytes, level: int | None = None) -> bytes:
    """One zstd frame holding ``data`` (its size recorded in the header)."""
    return backend().compress(_bytes(data), _level(level))


def decompress(data: bytes, *, max_output: int = DEFAULT_MAX_OUTPUT) -> bytes:
    """Every frame in ``data``, concatenated; at most ``max_output`` bytes."""
    return backend().decompress(_bytes(data), _limit(max_output))


class _Handle:
    """Owns one cap-side stream; released by close(), ``with`` or GC."""

    def __init__(self, handle: Any):
        self._b = backend()
        self._h = handle

    def _live(self) -> Any:
        if self._h is None:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._h

    def close(self) -> None:
        handle, self._h = self._h, None
        if handle is not None:
            self._b.drop(handle)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class ZstdCompressor(_Handle):
    """Streaming compression into one frame at a time."""

    #: Keep the data buffered; return what zstd has ready.
    CONTINUE = 0
    #: End the current block: everything so far becomes decompressible.
    FLUSH_BLOCK = 1
    #: End the frame; the next data starts a new frame.
    FLUSH_FRAME = 2

    def __init__(self, level: int | None = None):
        super().__init__(backend().compressor(_level(level)))

    def compress(self, data: bytes, mode: int = CONTINUE) -> bytes:
        out = self._b.compressor_call(self._live(), "compress", _bytes(data))
        if mode == self.CONTINUE:
            return out
        return out + self.flush(mode)

    def flush(self, mode: int = FLUSH_FRAME) -> bytes:
        if mode == self.FLUSH_FRAME:
            return self._b.compressor_call(self._live(), "finish")
        if mode == self.FLUSH_BLOCK:
            return self._b.compressor_call(self._live(), "flush")
        if mode == self.CONTINUE:
            return b""
        raise ValueError(f"unknown flush mode {mode!r}")


class ZstdDecompressor(_Handle):
    """Streaming decompression of one or more concatenated frames, with a
    limit on the total output."""

    def __init__(self, *, max_output: int = DEFAULT_MAX_OUTPUT):
        super().__init__(backend().decompressor(_limit(max_output)))

    def decompress(self, data: bytes) -> bytes:
        return self._b.decompressor_call(self._live(), "decompress", _bytes(data))

    @property
    def eof(self) -> bool:
        """True when the input so far ends exactly at the end of a frame."""
        return bool(self._b.decompressor_call(self._live(), "at_frame_end"))
