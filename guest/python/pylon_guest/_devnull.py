"""``os.devnull`` in the guest: reading gives EOF, writing discards.

WASI has no device files, and a host folder cannot serve one: wasmtime opens
regular files and folders in a preopen (a symlink out of it is refused, and
making a device node needs root). So the design is split:

* **Reading** needs nothing here. The host gives every run a read-only
  folder at ``/dev`` holding one empty regular file, ``null``
  (``pylon.scratch`` on the host). Empty and unwritable, it reads as EOF
  forever; ``os.stat``, ``os.path.exists`` and ``open(os.devnull)`` work on it
  as they are.
* **Writing** is done here, and the bytes never leave the guest: an open of
  ``os.devnull`` for writing gets a null file object whose ``write`` counts
  the bytes and drops them, and ``os.write`` on a descriptor opened by
  ``os.open(os.devnull, ...)`` returns at once. A writable host file instead
  would put every byte on the host's disk (a guest writing gigabytes "to
  /dev/null" would fill it, and the temporary folder's cap would stop
  it), and a reader would see what was written. Here writing gigabytes costs
  CPU time only.

What is hooked, by :func:`install` (called once at build time, before the
standard library is imported, so modules that keep a reference to ``open``
keep the hook):

* ``open`` / ``io.open`` (the same function) of ``os.devnull`` in a writing
  mode (``w``, ``a`` or ``+``), and of a null descriptor: a null file object,
  buffered and text-wrapped exactly as ``open`` would. Its ``fileno()`` is a
  real descriptor of ``/dev/null`` (opened read-only), so ``os.fstat`` and
  ``isatty`` work.
* ``os.open(os.devnull, O_WRONLY or O_RDWR)``: a read-only descriptor of
  ``/dev/null``, remembered as a null descriptor; ``os.write`` and
  ``os.pwrite`` on it report every byte written; ``os.fdopen`` of it goes
  through ``open`` above. A null descriptor is recognised by its number *and*
  by the file it is open on (``fstat``), so a number closed some other way
  and reused for a real file is written for real.

Not hooked: ``io.FileIO(os.devnull, "w")`` built directly, opens through an
``opener``, exclusive creation (``"x"``, ``O_CREAT | O_EXCL``: ``/dev/null``
exists), and C code writing to a null descriptor (``faulthandler``): those
see the read-only file and get an error.
"""

from __future__ import annotations

import builtins
import io
import os

__all__ = ["install"]

DEVNULL = os.devnull

_real_open = io.open
_real_os_open = os.open
_real_write = os.write
_real_pwrite = getattr(os, "pwrite", None)

#: Null descriptor -> (st_dev, st_ino) of the /dev/null it is open on.
_null_fds: dict[int, tuple[int, int]] = {}


def _names_devnull(file: object) -> bool:
    """Whether ``file`` (a path of any kind, not a descriptor) is ``os.devnull``."""
    if isinstance(file, int):
        return False
    try:
        path = os.fspath(file)
    except TypeError:
        return False
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    # Cheap test first: this runs on every open() in the guest.
    return path.endswith("null") and os.path.abspath(path) == DEVNULL


def _is_null_fd(fd: int) -> bool:
    """Whether ``fd`` is a null descriptor still open on ``/dev/null``."""
    identity = _null_fds.get(fd)
    if identity is None:
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        st = None
    if st is None or (st.st_dev, st.st_ino) != identity:
        del _null_fds[fd]  # closed some other way; the number may now be a real file
        return False
    return True


def _null_fd() -> int:
    """A new null descriptor: ``/dev/null`` opened read-only, remembered."""
    fd = _real_os_open(DEVNULL, os.O_RDONLY)
    st = os.fstat(fd)
    _null_fds[fd] = (st.st_dev, st.st_ino)
    return fd


class NullIO(io.RawIOBase):
    """A raw file that reads nothing and accepts every write (``/dev/null`` opened for writing).

    ``fd`` is the descriptor ``fileno()`` returns: a null descriptor, or None
    under a host that gives the guest no ``/dev/null`` (then the file still
    works, without a descriptor, as an ``io.BytesIO`` does).
    """

    def __init__(self, fd: int | None, name: object, mode: str, readable: bool, closefd: bool):
        super().__init__()
        self._fd = fd
        self.name = name
        self.mode = mode
        self._can_read = readable
        self._closefd = closefd

    def __repr__(self) -> str:
        return f"<pylon NullIO name={self.name!r} mode={self.mode!r} closefd={self._closefd}>"

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def readable(self) -> bool:
        self._check_open()
        return self._can_read

    def writable(self) -> bool:
        self._check_open()
        return True

    def seekable(self) -> bool:
        self._check_open()
        return True

    def fileno(self) -> int:
        self._check_open()
        if self._fd is None:
            raise io.UnsupportedOperation("os.devnull has no file descriptor in this guest (no /dev/null)")
        return self._fd

    def isatty(self) -> bool:
        self._check_open()
        return False

    def readinto(self, buffer) -> int:
        self._check_open()
        if not self._can_read:
            raise io.UnsupportedOperation("File not open for reading")
        return 0

    def write(self, data) -> int:
        self._check_open()
        return memoryview(data).nbytes

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_open()
        return 0

    def tell(self) -> int:
        self._check_open()
        return 0

    def truncate(self, size: int | None = None) -> int:
        self._check_open()
        return 0

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
        finally:
            if self._closefd and self._fd is not None:
                _null_fds.pop(self._fd, None)
                os.close(self._fd)


def _raw_mode(mode: str, readable: bool) -> str:
    """The ``mode`` a ``FileIO`` opened with ``mode`` reports."""
    if "a" in mode:
        return "ab+" if readable else "ab"
    return "rb+" if readable else "wb"


def _writing_mode(mode: object) -> bool:
    """Whether ``mode`` is a valid ``open`` mode that writes (``w``, ``a`` or ``+``; not ``x``)."""
    if not isinstance(mode, str) or len(set(mode)) != len(mode) or not set(mode) <= set("rwab+t"):
        return False
    return sum(c in mode for c in "rwa") == 1 and not ("b" in mode and "t" in mode) and (
        "w" in mode or "a" in mode or "+" in mode)


def _null_file(fd, name, mode, buffering, encoding, errors, newline, closefd):
    """A null file object layered as ``open`` layers a ``FileIO``."""
    readable = "r" in mode or "+" in mode
    raw = NullIO(fd, name, _raw_mode(mode, readable), readable, closefd)
    if buffering == 0:
        return raw
    size = buffering if buffering > 1 else io.DEFAULT_BUFFER_SIZE
    buffered = (io.BufferedRandom if readable else io.BufferedWriter)(raw, size)
    if "b" in mode:
        return buffered
    text = io.TextIOWrapper(buffered, encoding, errors, newline, line_buffering=buffering == 1)
    text.mode = mode
    return text


def open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, closefd=True,  # noqa: A001
         opener=None):
    """``io.open``, except that writing to ``os.devnull`` or a null descriptor discards the bytes."""
    # Anything open() would refuse (a bad mode or argument mix) goes to the
    # real open, which raises the error it always raises.
    if (opener is None and _writing_mode(mode) and isinstance(buffering, int)
            and ("b" not in mode or (encoding is None and errors is None and newline is None))
            and ("b" in mode or buffering != 0)):
        if isinstance(file, int) and not isinstance(file, bool) and _is_null_fd(file):
            return _null_file(file, file, mode, buffering, encoding, errors, newline, closefd)
        if closefd and _names_devnull(file):
            try:
                fd = _null_fd()
            except OSError:
                fd = None  # a host that gives no /dev/null: the file works without a descriptor
            return _null_file(fd, file, mode, buffering, encoding, errors, newline, True)
    return _real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)


def os_open(path, flags, mode=0o777, *, dir_fd=None):
    """``os.open``; for ``os.devnull`` opened for writing, a null descriptor."""
    if (dir_fd is None and isinstance(flags, int) and (flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
            and (flags & (os.O_CREAT | os.O_EXCL)) != (os.O_CREAT | os.O_EXCL) and _names_devnull(path)):
        return _null_fd()
    return _real_os_open(path, flags, mode, dir_fd=dir_fd)


def os_write(fd, data, /):
    """``os.write``; on a null descriptor every byte is written, nowhere."""
    if fd in _null_fds and _is_null_fd(fd):
        return memoryview(data).nbytes
    return _real_write(fd, data)


def os_pwrite(fd, data, offset, /):
    """``os.pwrite``; on a null descriptor every byte is written, nowhere."""
    if fd in _null_fds and _is_null_fd(fd):
        return memoryview(data).nbytes
    return _real_pwrite(fd, data, offset)


def install() -> None:
    """Puts the hooks in place (idempotent)."""
    builtins.open = io.open = open
    os.open = os_open
    os.write = os_write
    if _real_pwrite is not None:
        os.pwrite = os_pwrite
