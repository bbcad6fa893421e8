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
Otherwise the cap is resolved at first use through ``pylon_guest.dynlink``
and called through its generated proxy (docs/cap-interface.md, "The guest
proxy"): the same functions, resources and ``Err``, one ``invoke`` per call.
:func:`use_backend` picks one explicitly.

Errors: every failure is a :class:`ZstdError`; a frame that is not valid zstd
raises :class:`CorruptFrameError`, and output past the limit (a
decompression bomb, or a limit set too low) raises
:class:`OutputTooLargeError`. Decompression always has a limit:
``max_output`` per call, :data:`DEFAULT_MAX_OUTPUT` unless given. Over
dynlink the host's own failures (the cap's memory or time limit) arrive as
``pylon_guest.dynlink``'s exceptions.
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
    "use_backend",
]

# The typed import exists only in a guest whose world imports pylon:zstd/zstd
# (the embedded build). It must be imported here, at module import, because
# componentize-py bundles only modules imported while it pre-initialises the
# app: a lazy import would fail at run time even in an embedded build.
try:
    from wit_world.imports import zstd as _wit  # type: ignore[import-not-found]
except ImportError:
    _wit = None
# The cap's guest binding (caps/zstd/guest_binding.c): the one-shot calls
# from C, each result placed by the host straight in the bytes returned.
# Only a guest that embeds zstd has it.
try:
    import _zstd_binding  # type: ignore[import-not-found]
except ImportError:
    _zstd_binding = None
# The embedded import raises componentize-py's Err for a WIT `result`'s
# error; in a guest the dynlink proxy's Err is the same class.
try:
    from componentize_py_types import Err as _WitErr  # type: ignore[import-not-found]
except ImportError:  # not in a componentize-py guest

    class _WitErr(Exception):  # type: ignore[no-redef]
        """Never raised: the stand-in outside a guest."""

        value: Any = None

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


if _zstd_binding is not None:
    _zstd_binding.set_errors(ZstdError, CorruptFrameError, OutputTooLargeError)


class _Backend:
    """The cap's typed API: ``.name`` is "embedded" (the typed import) or
    "dynlink" (the zstd cap's generated proxy, docs/cap-interface.md). Both
    have the same functions and resource classes and raise an ``Err`` around
    the same ``error`` variant, so the rest of this module has one code
    path."""

    def __init__(self, want: str | None = None) -> None:
        if want == "embedded" and _wit is None:
            raise ImportError("this pylon has no embedded zstd; use the dynlink backend")
        api: Any
        self.binding: Any = None
        if _wit is not None and want != "dynlink":
            self.name = "embedded"
            api, self._err = _wit, _WitErr
            self.binding = _zstd_binding
        else:
            from pylon_guest import dynlink  # type: ignore[attr-defined]

            api = dynlink.load("zstd").api
            if api is None:
                raise dynlink.CapNotFound("the cap the plan calls 'zstd' has no typed face "
                                          "(no pylon:shim section): build it from caps/zstd")
            self.name = "dynlink"
            # componentize_py_types.Err in a guest; the proxy's own stand-in
            # when it runs elsewhere (the host's tests).
            self._err = api.Err
        self.api = api
        self._corrupt = api.Error_Corrupt
        self._too_large = api.Error_TooLarge

    def error(self, err: Any) -> ZstdError:
        """The exception for the WIT ``error`` value ``err``."""
        if isinstance(err, self._corrupt):
            return CorruptFrameError(f"corrupt zstd data: {err.value}")
        if isinstance(err, self._too_large):
            return OutputTooLargeError(int(err.value))
        return ZstdError(str(getattr(err, "value", err)))

    def call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._err as exc:
            raise self.error(exc.value) from None


_backend: Any = None


def backend() -> Any:
    """The backend in use (resolved on first call): ``.name`` is "embedded"
    or "dynlink"."""
    global _backend
    if _backend is None:
        _backend = _Backend()
    return _backend


def use_backend(name: str | None) -> Any:
    """Chooses the backend for later calls: "embedded" (the cap plugged into
    this pylon), "dynlink" (the cap the plan calls "zstd", e.g. a newer build
    swapped in without rebuilding pylon) or None (embedded when present, else
    dynlink). Streams already open keep theirs. Returns the backend; raises
    ImportError (no embedded cap) or a dynlink error (no usable cap in the
    plan) at once rather than at the next call."""
    global _backend
    if name not in ("embedded", "dynlink", None):
        raise ValueError(f"backend must be 'embedded', 'dynlink' or None, not {name!r}")
    _backend = _Backend(name)
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


def _bytes_like(data: Any) -> Any:
    """``data`` itself for the guest binding, which reads any buffer in place
    (a strided memoryview copied first); TypeError as :func:`_bytes` raises."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return data
    return _bytes(data)


def compress(data: bytes, level: int | None = None) -> bytes:
    """One zstd frame holding ``data`` (its size recorded in the header)."""
    b = backend()
    if b.binding is not None:
        return b.binding.compress(_bytes_like(data), _level(level))  # type: ignore[no-any-return]
    return b.call(b.api.compress, _bytes(data), _level(level))


def decompress(data: bytes, *, max_output: int = DEFAULT_MAX_OUTPUT) -> bytes:
    """Every frame in ``data``, concatenated; at most ``max_output`` bytes."""
    b = backend()
    if b.binding is not None:
        return b.binding.decompress(_bytes_like(data), _limit(max_output))  # type: ignore[no-any-return]
    return b.call(b.api.decompress, _bytes(data), _limit(max_output))


class _Handle:
    """Owns one cap-side stream (a WIT resource of the backend that made
    it); released by close(), ``with`` or GC."""

    def __init__(self, b: Any, handle: Any):
        self._b = b
        self._h = handle

    def _live(self) -> Any:
        if self._h is None:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._h

    def _call(self, method: str, *args: Any) -> Any:
        return self._b.call(getattr(self._live(), method), *args)

    def close(self) -> None:
        handle, self._h = self._h, None
        if handle is not None:
            # The resource's drop on both backends (the proxy's close()).
            handle.__exit__(None, None, None)

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
        b = backend()
        super().__init__(b, b.api.Compressor(_level(level)))

    def compress(self, data: bytes, mode: int = CONTINUE) -> bytes:
        out: bytes = self._call("compress", _bytes(data))
        if mode == self.CONTINUE:
            return out
        return out + self.flush(mode)

    def flush(self, mode: int = FLUSH_FRAME) -> bytes:
        if mode == self.FLUSH_FRAME:
            return self._call("finish")
        if mode == self.FLUSH_BLOCK:
            return self._call("flush")
        if mode == self.CONTINUE:
            return b""
        raise ValueError(f"unknown flush mode {mode!r}")


class ZstdDecompressor(_Handle):
    """Streaming decompression of one or more concatenated frames, with a
    limit on the total output."""

    def __init__(self, *, max_output: int = DEFAULT_MAX_OUTPUT):
        b = backend()
        super().__init__(b, b.api.Decompressor(_limit(max_output)))

    def decompress(self, data: bytes) -> bytes:
        return self._call("decompress", _bytes(data))

    @property
    def eof(self) -> bool:
        """True when the input so far ends exactly at the end of a frame."""
        return bool(self._live().at_frame_end())
