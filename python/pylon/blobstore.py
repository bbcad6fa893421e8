"""A content-addressed blob store: every file is named by the sha256 of its bytes.

Layout (the subfolder names are constants so tools and docs can rely on them)::

    <root>/sha256/<64 hex>                 a verified blob, read-only
    <root>/sha256/.tmp-<hex>.<pid>.<rand>  a write or fetch in progress
    <root>/quarantine/<hex>.<time>         a blob that failed verification

``root`` is :func:`pylon.paths.blob_root` unless the constructor is given one.

Invariants every method keeps:

* Nothing partial or unverified ever sits at a final name. Bytes are written to
  a temp file *in the same folder* (so the rename is atomic), hashed while they
  are written, fsynced, compared with the digest they should have, and only then
  renamed into place. Any failure (a dead source, wrong bytes, an exception, a
  signal) removes the temp file; a ``kill -9`` can leave one behind, which
  :meth:`BlobStore.gc` removes once its writer is gone.
* A blob is verified before every use: :meth:`BlobStore.path` and
  :meth:`BlobStore.read_bytes` hash the bytes and raise
  :class:`~pylon.errors.DigestMismatch` (and quarantine the file) when they
  do not match. :meth:`BlobStore.has` only checks presence.
* The store's folders (root, ``sha256/``, ``quarantine/``) are created
  ``0700`` and refused (:class:`~pylon.errors.StateError`) when another user
  owns them or can write them (:func:`pylon.paths.private_dir`).

Fetching trusts a source for nothing but bytes that hash right, and bounds what
a hostile source can cost (see :meth:`BlobStore.fetch`): ``file://`` opens
regular files only; every source has an overall deadline and a size bound;
redirects go to ``https`` only (or ``http`` to ``http`` on loopback), at most
:data:`MAX_REDIRECTS` of them. ``oci://`` sources (pylon.oci) also check the
registry's manifest and resume an interrupted pull from
``sha256/.tmp-<hex>.partial`` (HTTP Range).

Errors carry the digest and the path or source they concern.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from pylon import paths
from pylon.errors import BlobError, BlobNotFound, DigestMismatch, FetchError, PylonError

if TYPE_CHECKING:
    import http.client
    import socket
    import ssl

__all__ = [
    "ALGORITHM",
    "DIGEST_PATTERN",
    "BadBlob",
    "BlobInfo",
    "BlobStore",
    "GcReport",
    "MAX_REDIRECTS",
    "Progress",
    "check_digest",
    "check_redirect",
    "digest_bytes",
    "digest_file",
    "is_digest",
    "write_atomic",
]

#: The one hash algorithm; also the name of the subfolder blobs live in.
ALGORITHM = "sha256"
#: What a digest looks like. ``schemas/plan.schema.json`` repeats this pattern.
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
_DIGEST_RE = re.compile(DIGEST_PATTERN)
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")

_BLOB_DIR = ALGORITHM
_QUARANTINE_DIR = "quarantine"
_TMP_PREFIX = ".tmp-"
#: A temp file whose writer cannot be identified is stale after this long.
_TMP_MAX_AGE_S = 24 * 3600
_CHUNK = 1 << 20
#: Network reads are smaller: each one re-arms the socket timeout with the time left.
_NET_CHUNK = 64 << 10
#: How many redirects one source may take before the fetch gives up.
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

#: ``progress(bytes_done, bytes_total_or_None)``, called as a fetch streams.
Progress = Callable[[int, "int | None"], None]


class BlobInfo(NamedTuple):
    """One stored blob, as listed by :meth:`BlobStore.ls`."""

    digest: str
    size: int


class BadBlob(NamedTuple):
    """A stored blob that failed :meth:`BlobStore.verify`."""

    digest: str
    found: str
    moved_to: Path


class GcReport(NamedTuple):
    """What :meth:`BlobStore.gc` removed."""

    removed: list[str]
    freed_bytes: int
    temps_removed: int


def is_digest(value: object) -> bool:
    """True if ``value`` is a ``sha256:<64 lowercase hex>`` string."""
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None


def check_digest(value: str) -> str:
    """Returns the hex part of a digest.

    Raises:
        BlobError: ``value`` is not ``sha256:`` followed by 64 lowercase hex digits.
    """
    if not is_digest(value):
        raise BlobError(f"not a digest: {value!r} (expected 'sha256:' followed by 64 lowercase hex digits)")
    return value.split(":", 1)[1]


def digest_bytes(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data``."""
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def digest_file(path: Path) -> str:
    """The ``sha256:<hex>`` digest of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return f"{ALGORITHM}:{hashlib.file_digest(f, ALGORITHM).hexdigest()}"


def _fsync_dir(folder: Path) -> None:
    """Makes a rename in ``folder`` durable (a no-op where dirs cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so readers see the old file or the new one, never half.

    A temp file in the same folder is written, fsynced and renamed over ``path``.
    The folder is created if needed (``0700``, see :func:`pylon.paths.private_dir`
    for Pylon's own state; a user's plan folder is only created, never checked).
    Used for plans and the trust policy too.
    """
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True
    return True


class _Sink:
    """A temp file in the store that hashes what is written to it.

    Used as a context manager: leaving it without :meth:`commit` (an error, an
    exception, a mismatch) deletes the temp file.
    """

    def __init__(self, folder: Path, hex_hint: str, *, max_bytes: int, expected_size: int | None = None):
        # The folder is the caller's to create (BlobStore._writable_dir checks it is private).
        # The pid in the name lets gc tell a live writer's file from a dead one's.
        self.tmp = folder / f"{_TMP_PREFIX}{hex_hint}.{os.getpid()}.{secrets.token_hex(4)}"
        self._file: BinaryIO = open(self.tmp, "xb")
        self._hash = hashlib.sha256()
        self._max = max_bytes
        self.expected_size = expected_size
        #: The most bytes this sink accepts: the expected size when known, else the store's limit.
        self.limit = expected_size if expected_size is not None else max_bytes
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Hashes and writes ``chunk``; refuses it (writing nothing) if it would pass the limit."""
        size = self.size + len(chunk)
        if self.expected_size is not None and size > self.expected_size:
            raise BlobError(f"more than the expected {self.expected_size} bytes arrived")
        if size > self._max:
            raise BlobError(f"blob is larger than the store's limit of {self._max} bytes")
        self.size = size
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> str:
        """Flushes and fsyncs; returns the digest of everything written."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return f"{ALGORITHM}:{self._hash.hexdigest()}"

    def commit(self, final: Path) -> None:
        """Renames the (finished, verified) temp file to its final name."""
        try:
            os.chmod(self.tmp, 0o444)  # blobs are immutable; catch accidental edits early
        except OSError:
            pass
        os.replace(self.tmp, final)
        _fsync_dir(final.parent)

    def __enter__(self) -> _Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._file.closed:
            self._file.close()
        self.tmp.unlink(missing_ok=True)


class _SinkBusy(Exception):
    """Another fetch holds the partial download of this digest."""


class _ResumableSink(_Sink):
    """A sink that keeps what arrived when a fetch stops early, so the next fetch continues it.

    The partial download is ``<root>/sha256/.tmp-<hex>.partial``: one per
    digest, so any later fetch of that digest finds it. It is locked
    (``flock``) while a fetch writes it; a second fetch of the same digest
    meanwhile gets :class:`_SinkBusy` and downloads into a private temp file
    instead. Opening it hashes the bytes already there (a hash state cannot be
    saved, and re-reading is cheap next to downloading), so :attr:`size` is
    where the download continues. Leaving the sink without :meth:`commit`
    keeps the file, except after :meth:`finish` (the bytes were complete and
    hashed: a mismatch proves them wrong, so they go). ``gc`` removes one
    untouched for a day, as it does any temp file whose writer is unknown.
    """

    def __init__(self, folder: Path, hex_: str, *, max_bytes: int, expected_size: int | None = None):
        import fcntl

        self.tmp = folder / f"{_TMP_PREFIX}{hex_}.partial"
        fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BlobError(f"{self.tmp} is not a regular file")
        except BlockingIOError:
            os.close(fd)
            raise _SinkBusy() from None
        except BaseException:
            os.close(fd)
            raise
        self._file = os.fdopen(fd, "r+b")
        self._max = max_bytes
        self.expected_size = expected_size
        self.limit = expected_size if expected_size is not None else max_bytes
        self._finished = False
        self._hash = hashlib.sha256()
        self.size = 0
        if os.fstat(fd).st_size > self.limit:
            self.restart()  # not a prefix of what we want
        while chunk := self._file.read(_CHUNK):
            self._hash.update(chunk)
            self.size += len(chunk)

    def restart(self) -> None:
        """Drops what earlier fetches left (the source ignored the Range, or it cannot be a prefix)."""
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.sha256()
        self.size = 0

    def finish(self) -> str:
        self._finished = True
        return super().finish()

    def __exit__(self, *exc: object) -> None:
        if not self._file.closed:
            try:
                self._file.flush()  # what arrived is kept; its hash is recomputed next time
            finally:
                self._file.close()  # releases the lock
        if self._finished:
            self.tmp.unlink(missing_ok=True)


class BlobStore:
    """A content-addressed store of verified blobs.

    Args:
        root: the store's root folder; default :func:`pylon.paths.blob_root`.
        timeout_s: the longest one network operation of a fetch (connect, one
            read) may wait for data.
        fetch_deadline_s: the longest one source may take to deliver a blob,
            from connecting to the last byte, redirects and TLS handshakes
            included. A source that drips bytes fails with "timed out after
            N s" instead of holding a run forever.
        max_blob_bytes: a fetch or put larger than this is refused (a source
            that streams forever must not fill the disk).
        ssl_context: verifies ``https`` sources; default
            :func:`ssl.create_default_context` (the system's CAs), made on
            first use so runs that fetch nothing never import :mod:`ssl`.
    """

    def __init__(self, root: Path | None = None, *, timeout_s: float = 30.0,
                 fetch_deadline_s: float = 300.0, max_blob_bytes: int = 4 << 30,
                 ssl_context: ssl.SSLContext | None = None):
        self.root = Path(root) if root is not None else paths.blob_root()
        self.timeout_s = timeout_s
        self.fetch_deadline_s = fetch_deadline_s
        self.max_blob_bytes = max_blob_bytes
        self.ssl_context = ssl_context
        # Hashing 30 MB costs ~60 ms here; a process that uses a blob many times
        # (tests, a long-lived host) pays it once per file identity. Memory only:
        # a new process always re-hashes. ctime is in the key because nothing
        # short of root can set it back after changing the bytes.
        self._verified: dict[str, tuple[int, int, int, int, int]] = {}

    # -- names -------------------------------------------------------------

    @property
    def blob_dir(self) -> Path:
        """The folder blobs live in: ``<root>/sha256``."""
        return self.root / _BLOB_DIR

    @property
    def quarantine_dir(self) -> Path:
        """Where blobs that failed verification are moved: ``<root>/quarantine``."""
        return self.root / _QUARANTINE_DIR

    def blob_path(self, digest: str) -> Path:
        """Where the blob of ``digest`` lives (whether or not it is there; not verified)."""
        return self.blob_dir / check_digest(digest)

    # -- reading -----------------------------------------------------------

    def has(self, digest: str) -> bool:
        """True if a blob of that name is stored (presence only; not hashed)."""
        return self.blob_path(digest).is_file()

    def path(self, digest: str) -> Path:
        """The path of a stored blob, after checking its bytes hash to ``digest``.

        The file can change after this returns; a caller that reads it once
        should prefer :meth:`read_bytes`, which verifies the very bytes it returns.

        Raises:
            BlobNotFound: the blob is not stored.
            DigestMismatch: the stored bytes are wrong; the file is quarantined.
        """
        final = self._existing(digest)
        key = self._identity(final)
        if self._verified.get(digest) == key:
            return final
        found = digest_file(final)
        if found != digest:
            self._quarantine(final)
            raise DigestMismatch(digest, found, str(final))
        self._verified[digest] = key
        return final

    def read_bytes(self, digest: str) -> bytes:
        """The bytes of a stored blob, verified after reading.

        Raises:
            BlobNotFound: the blob is not stored.
            DigestMismatch: the stored bytes are wrong; the file is quarantined.
        """
        final = self._existing(digest)
        data = final.read_bytes()
        found = digest_bytes(data)
        if found != digest:
            self._quarantine(final)
            raise DigestMismatch(digest, found, str(final))
        return data

    def ls(self) -> list[BlobInfo]:
        """Every stored blob (by name; not verified), sorted by digest."""
        out = []
        for entry in self._blob_entries():
            out.append(BlobInfo(f"{ALGORITHM}:{entry.name}", entry.stat().st_size))
        return sorted(out)

    # -- writing -----------------------------------------------------------

    def put_bytes(self, data: bytes) -> str:
        """Stores ``data``; returns its digest. Storing the same bytes twice leaves one copy."""
        with _Sink(self._writable_blob_dir(), "put", max_bytes=self.max_blob_bytes) as sink:
            sink.write(data)
            return self._settle(sink, expected=None)

    def put_file(self, path: Path) -> str:
        """Copies a file into the store; returns its digest.

        Raises:
            BlobError: the file cannot be read or is not a regular file.
        """
        try:
            src = _open_regular(Path(path))
        except OSError as exc:
            raise BlobError(f"cannot read {path}: {exc.strerror or exc}") from exc
        with src, _Sink(self._writable_blob_dir(), "put", max_bytes=self.max_blob_bytes) as sink:
            while chunk := src.read(_CHUNK):
                sink.write(chunk)
            return self._settle(sink, expected=None)

    def fetch(self, digest: str, sources: Sequence[str] = (), *, size: int | None = None,
              progress: Progress | None = None) -> Path:
        """Makes sure the blob of ``digest`` is stored and verified; returns its path.

        A stored blob that verifies is used as is. Otherwise each source
        (``file://``, ``http(s)://`` or ``oci://``, see :meth:`_copy_oci`
        and docs/registry.md) is tried in order until one delivers
        the right bytes. A stored blob that does not verify is quarantined and
        fetched again.

        Each source is bounded: it has ``fetch_deadline_s`` from connecting to
        the last byte (and ``timeout_s`` for any one read), it may not send
        more than ``size`` bytes (or ``max_blob_bytes`` when the size is not
        known), ``file://`` must name a regular file, and redirects may go to
        ``https`` only (``http`` to ``http`` when both ends are on loopback),
        at most :data:`MAX_REDIRECTS` of them. Whatever arrives is hashed and
        kept only if it matches ``digest``.

        Args:
            digest: ``sha256:<hex>``.
            sources: URLs to try, in order.
            size: the blob's exact size in bytes, when the plan gives it. A
                source that announces another ``Content-Length``, sends more,
                or ends sooner fails without more being read.
            progress: called with ``(bytes_done, bytes_total or None)`` while
                streaming; the total is ``size`` when given, else what the
                source announces.

        Raises:
            DigestMismatch: the only source served other bytes.
            FetchError: the only source could not deliver (unreachable, HTTP
                error, not a regular file, a refused redirect, timed out, the
                wrong size, interrupted).
            BlobNotFound: there was no source, or several all failed; the
                message lists what was tried and ``.attempts`` holds each
                source's error.
            StateError: the store's folders are unsafe (see :func:`pylon.paths.private_dir`).
        """
        final = self.blob_path(digest)
        if final.is_file():
            try:
                return self.path(digest)
            except DigestMismatch:
                pass  # quarantined by path(); fetch it anew below
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise BlobError(f"cannot fetch {digest}: size must be a whole number of bytes, not {size!r}")
            if size > self.max_blob_bytes:
                raise FetchError(f"cannot fetch {digest}: its size, {size} bytes, is more than the "
                                 f"store's limit of {self.max_blob_bytes} bytes")
        attempts: list[tuple[str, BlobError]] = []
        for source in sources:
            try:
                self._fetch_one(digest, source, size, progress)
                return self.path(digest)
            except BlobError as exc:
                attempts.append((source, exc))
        if len(attempts) == 1:
            raise attempts[0][1]
        tried = [f"  - store: {final} (not present)"]
        tried += [f"  - {source}: {_short(exc)}" for source, exc in attempts]
        why = "no source could deliver it" if attempts else "the plan gives no source for it"
        error = BlobNotFound(f"blob {digest} is not stored and {why}; tried:\n" + "\n".join(tried))
        error.attempts = attempts  # type: ignore[attr-defined]
        raise error

    # -- upkeep ------------------------------------------------------------

    def verify(self) -> list[BadBlob]:
        """Hashes every stored blob; quarantines and returns the bad ones."""
        self._check_dirs()
        bad = []
        for entry in self._blob_entries():
            digest = f"{ALGORITHM}:{entry.name}"
            found = digest_file(Path(entry.path))
            if found != digest:
                bad.append(BadBlob(digest, found, self._quarantine(Path(entry.path))))
            else:
                self._verified[digest] = self._identity(Path(entry.path))
        return sorted(bad)

    def gc(self, keep: Iterable[str]) -> GcReport:
        """Removes every blob not in ``keep``, stale temp files and the quarantine.

        A temp file is stale when the process that wrote it is gone (its pid is
        in the name) or it is older than a day. Temp files of live writers are
        left alone, so gc is safe beside a running fetch.

        Raises:
            BlobError: a digest in ``keep`` is malformed.
        """
        keep_hex = {check_digest(d) for d in keep}
        self._check_dirs()
        removed, freed, temps = [], 0, 0
        for entry in self._blob_entries():
            if entry.name not in keep_hex:
                freed += entry.stat().st_size
                os.unlink(entry.path)
                removed.append(f"{ALGORITHM}:{entry.name}")
                self._verified.pop(f"{ALGORITHM}:{entry.name}", None)
        if self.blob_dir.is_dir():
            for tmp in self.blob_dir.glob(f"{_TMP_PREFIX}*"):
                if self._stale(tmp):
                    tmp.unlink(missing_ok=True)
                    temps += 1
        shutil.rmtree(self.quarantine_dir, ignore_errors=True)
        return GcReport(sorted(removed), freed, temps)

    # -- internals ---------------------------------------------------------

    def _blob_entries(self) -> list[os.DirEntry[str]]:
        """Final-named blobs (64 hex names); temp files and strays are skipped."""
        try:
            with os.scandir(self.blob_dir) as it:
                return [e for e in it if _HEX_RE.match(e.name) and e.is_file()]
        except FileNotFoundError:
            return []

    def _existing(self, digest: str) -> Path:
        final = self.blob_path(digest)
        if not final.is_file():
            raise BlobNotFound(f"blob {digest} is not in the store ({final})")
        self._check_dirs()
        return final

    def _check_dirs(self) -> None:
        """StateError if the root or ``sha256/`` exists and another user owns or can write it.

        Whoever can write there could swap a blob between its verification and its use.
        """
        for folder in (self.root, self.blob_dir):
            if folder.exists():
                paths.check_private(folder)

    def _writable_blob_dir(self) -> Path:
        """``<root>/sha256``, created ``0700`` with the root; StateError if either is unsafe."""
        paths.private_dir(self.root)
        return paths.private_dir(self.blob_dir)

    @staticmethod
    def _identity(path: Path) -> tuple[int, int, int, int, int]:
        st = path.stat()
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _quarantine(self, path: Path) -> Path:
        """Moves a bad blob aside so it is never used again but can be inspected."""
        paths.private_dir(self.root)
        paths.private_dir(self.quarantine_dir)
        target = self.quarantine_dir / f"{path.name}.{time.time_ns()}"
        os.replace(path, target)
        self._verified.pop(f"{ALGORITHM}:{path.name}", None)
        return target

    def _stale(self, tmp: Path) -> bool:
        parts = tmp.name.split(".")
        # .tmp-<hint>.<pid>.<rand>: the pid is the second field from the end.
        pid = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
        if pid is not None and pid != os.getpid() and not _pid_alive(pid):
            return True
        try:
            return time.time() - tmp.stat().st_mtime > _TMP_MAX_AGE_S
        except FileNotFoundError:
            return False

    def _settle(self, sink: _Sink, *, expected: str | None, where: str = "") -> str:
        """Finishes a sink: verifies it against ``expected`` and renames it into place."""
        found = sink.finish()
        if expected is not None and found != expected:
            raise DigestMismatch(expected, found, where)
        final = self.blob_dir / found.split(":", 1)[1]
        sink.commit(final)
        # These bytes were just hashed on their way to disk: record the file's
        # identity so the path() that usually follows need not hash them again.
        self._verified[found] = self._identity(final)
        return found

    def _fetch_one(self, digest: str, source: str, size: int | None, progress: Progress | None) -> None:
        """Streams one source into a temp file, verifies it, renames it into place."""
        # Imported here, not at the top: http.client and ssl cost ~30 ms to
        # import, and most runs fetch nothing.
        import http.client

        scheme = urllib.parse.urlsplit(source).scheme.lower()
        if scheme not in ("file", "http", "https", "oci"):
            raise _fetch_error(digest, source, f"unsupported scheme {scheme or '(none)'!r} "
                               "(use file://, http://, https:// or oci://)")
        hex_ = check_digest(digest)
        deadline = _Deadline(self.fetch_deadline_s)
        folder = self._writable_blob_dir()
        sink: _Sink
        try:
            # Registry pulls resume (HTTP Range) from what an interrupted one left.
            sink = (_ResumableSink(folder, hex_, max_bytes=self.max_blob_bytes, expected_size=size)
                    if scheme == "oci" else _Sink(folder, hex_, max_bytes=self.max_blob_bytes,
                                                  expected_size=size))
        except _SinkBusy:
            sink = _Sink(folder, hex_, max_bytes=self.max_blob_bytes, expected_size=size)
        with sink:
            try:
                if scheme == "file":
                    self._copy_file(source, sink, progress, deadline)
                elif scheme == "oci":
                    self._copy_oci(source, digest, sink, progress, deadline)
                else:
                    self._copy_http(source, sink, progress, deadline)
            except BlobError as exc:
                raise _fetch_error(digest, source, str(exc)) from exc
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # Past the deadline, whatever broke (a read timeout, the
                # watchdog's shutdown, a handshake cut short) broke because of it.
                reason = deadline.reason() if deadline.expired() else _cause(exc, self.timeout_s)
                raise _fetch_error(digest, source, reason) from exc
            self._settle(sink, expected=digest, where=source)

    @staticmethod
    def _copy_file(source: str, sink: _Sink, progress: Progress | None, deadline: _Deadline) -> None:
        import urllib.request

        parts = urllib.parse.urlsplit(source)
        if parts.netloc not in ("", "localhost"):
            raise BlobError(f"file:// URLs must name a local path, not host {parts.netloc!r}")
        path = Path(urllib.request.url2pathname(parts.path))
        with _open_regular(path) as src:
            length = os.fstat(src.fileno()).st_size
            if sink.expected_size is not None and length != sink.expected_size:
                raise BlobError(f"the file has {length} bytes, not the expected {sink.expected_size}")
            if length > sink.limit:
                raise BlobError(f"blob is larger than the store's limit of {sink.limit} bytes "
                                f"(the file has {length})")
            total = sink.expected_size if sink.expected_size is not None else length
            _pump(src.read, sink, total, progress, deadline, _CHUNK)

    def _copy_oci(self, source: str, digest: str, sink: _Sink, progress: Progress | None,
                  deadline: _Deadline) -> None:
        """Pulls blob ``digest`` from the registry ``source`` names into ``sink`` (pylon.oci).

        The reference resolves to a manifest, which must hold exactly one layer
        of an accepted media type whose digest is ``digest`` (a tag or a
        manifest digest is never taken on trust); the layer is then GET from
        where ``sink`` holds bytes already (HTTP Range), within the same size
        bound and deadline as any source. The overall deadline is checked
        before each read and bounds each request's timeout; the protocol is
        oras's (requests), so a header-by-header drip is bounded by
        ``timeout_s`` per read rather than the watchdog http(s) sources have.
        """
        from pylon import oci

        try:
            ref = oci.parse_reference(source)
        except PylonError as exc:
            raise BlobError(getattr(exc, "detail", str(exc))) from None
        with oci.client(ref.host, timeout_s=min(self.timeout_s, deadline.left())) as client:
            artifact = client.resolve(ref)
            assert artifact is not None
            if artifact.layer_digest != digest:
                raise BlobError(f"{ref} holds layer {artifact.layer_digest}, not {digest} "
                                "(the digest the plan names)")
            expected = sink.expected_size
            if expected is not None and artifact.layer_size != expected:
                raise BlobError(f"the manifest gives the layer {artifact.layer_size} bytes, "
                                f"not the expected {expected}")
            if artifact.layer_size > sink.limit:
                raise BlobError(f"blob is larger than the store's limit of {sink.limit} bytes "
                                f"(the manifest gives {artifact.layer_size})")
            if isinstance(sink, _ResumableSink) and sink.size > artifact.layer_size:
                sink.restart()
            if sink.size == artifact.layer_size:
                return  # an earlier pull got every byte; the digest check decides
            body = client.open_blob(ref, digest, offset=sink.size)
            try:
                if body.start != sink.size:  # the registry ignored the Range: start over
                    assert isinstance(sink, _ResumableSink)
                    sink.restart()
                left = artifact.layer_size - sink.size
                if body.length is not None and body.length != left:
                    raise BlobError(f"the registry announces {body.length} bytes (Content-Length), "
                                    f"not the {left} still expected")
                _pump(body.read, sink, artifact.layer_size, progress, deadline, _NET_CHUNK)
            finally:
                body.close()
            if sink.size != artifact.layer_size:
                raise BlobError(f"interrupted: got {sink.size} of {artifact.layer_size} bytes")

    def _copy_http(self, source: str, sink: _Sink, progress: Progress | None, deadline: _Deadline) -> None:
        """GETs ``source`` (following allowed redirects) into ``sink``, within ``deadline``.

        Why http.client and not urllib or a third-party client: urllib's socket
        timeout bounds each read, not the whole transfer (a server that sends a
        byte every few seconds keeps it going forever), and it follows redirects
        to other schemes. No well-kept library gives both an overall deadline
        and a redirect policy we can state, so we own the socket here: the
        stdlib parses HTTP, we connect, re-arm the socket timeout with
        min(timeout_s, time left) before every read, shut the socket down when
        the deadline passes (a watchdog, for the reads http.client makes in
        loops of its own: headers) and decide each redirect.
        """
        url = source
        redirects = 0
        with _Watchdog(deadline) as watchdog:
            while True:
                sock, conn = self._connect(url, deadline, watchdog)
                response = None
                try:
                    sock.settimeout(min(self.timeout_s, deadline.left()))
                    conn.request("GET", _request_target(url),
                                 headers={"User-Agent": "pylon-blobstore", "Connection": "close"})
                    sock.settimeout(min(self.timeout_s, deadline.left()))
                    response = conn.getresponse()
                    where = "" if url == source else f" (at {url})"
                    if response.status in _REDIRECT_STATUSES:
                        location = response.getheader("Location")
                        if not location:
                            raise BlobError(f"HTTP {response.status} {response.reason} without a "
                                            f"Location header{where}")
                        target = urllib.parse.urljoin(url, location.strip())
                        if redirects >= MAX_REDIRECTS:
                            raise BlobError(f"too many redirects: more than {MAX_REDIRECTS} "
                                            f"(the next one to {target})")
                        check_redirect(url, target)
                        redirects += 1
                        url = target
                        continue
                    if response.status != 200:
                        raise BlobError(f"HTTP {response.status} {response.reason}{where}")
                    self._copy_body(response, sock, sink, progress, deadline)
                    return
                finally:
                    if response is not None:
                        response.close()
                    conn.close()
                    sock.close()

    def _connect(self, url: str, deadline: _Deadline,
                 watchdog: _Watchdog) -> tuple[socket.socket, http.client.HTTPConnection]:
        """A connected (and for https, handshaken) socket, and an HTTPConnection that uses it."""
        import http.client

        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        if not host:
            raise BlobError(f"no host in {url}")
        port = parts.port or (443 if scheme == "https" else 80)
        sock = self._connect_any(host, port, deadline)
        conn: http.client.HTTPConnection
        try:
            watchdog.watch(sock)
            if scheme == "https":
                context = self._ssl_context()
                sock.settimeout(min(self.timeout_s, deadline.left()))
                sock = context.wrap_socket(sock, server_hostname=host)
                conn = http.client.HTTPSConnection(host, port, context=context)
            else:
                conn = http.client.HTTPConnection(host, port)
        except BaseException:
            sock.close()
            raise
        conn.sock = sock  # so http.client uses our socket and never connects on its own
        return sock, conn

    def _connect_any(self, host: str, port: int, deadline: _Deadline) -> socket.socket:
        """A TCP connection to the first address of ``host`` that answers, within the deadline.

        Not ``socket.create_connection``: it gives *each* address the full
        timeout, so a name with many dead addresses would outlast the deadline.
        Name resolution itself is not bounded (getaddrinfo takes no timeout).
        """
        import socket

        last: OSError | None = None
        for family, kind, proto, _name, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            if deadline.expired():
                break
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(max(0.001, min(self.timeout_s, deadline.left())))
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        if deadline.expired():
            raise BlobError(deadline.reason())
        raise last or OSError(f"no address for {host}")

    def _ssl_context(self) -> ssl.SSLContext:
        if self.ssl_context is None:
            import ssl

            self.ssl_context = ssl.create_default_context()
        return self.ssl_context

    def _copy_body(self, response: http.client.HTTPResponse, sock: socket.socket, sink: _Sink,
                   progress: Progress | None, deadline: _Deadline) -> None:
        length = response.length  # Content-Length, or None (chunked, or until the server closes)
        expected = sink.expected_size
        if length is not None:
            if expected is not None and length != expected:
                raise BlobError(f"the server announces {length} bytes (Content-Length), "
                                f"not the expected {expected}")
            if length > sink.limit:
                raise BlobError(f"blob is larger than the store's limit of {sink.limit} bytes "
                                f"(the server announces {length})")

        def read(n: int) -> bytes:
            # read1 makes at most one recv, so no read waits longer than this.
            sock.settimeout(min(self.timeout_s, deadline.left()))
            return response.read1(n)

        total = expected if expected is not None else length
        _pump(read, sink, total, progress, deadline, _NET_CHUNK)
        if length is not None and sink.size != length:
            raise BlobError(f"interrupted: got {sink.size} of {length} bytes")


def _fetch_error(digest: str, source: str, reason: str) -> FetchError:
    error = FetchError(f"cannot fetch {digest} from {source}: {reason}")
    error.source = source  # type: ignore[attr-defined]
    error.reason = reason  # type: ignore[attr-defined]
    return error


def _short(exc: BlobError) -> str:
    """One source's failure without the digest and source the listing already shows."""
    if isinstance(exc, DigestMismatch):
        return f"served other bytes ({exc.found})"
    return getattr(exc, "reason", None) or str(exc)


def _pump(read: Callable[[int], bytes], sink: _Sink, total: int | None,
          progress: Progress | None, deadline: _Deadline, chunk: int) -> None:
    """Copies from ``read(n)`` into ``sink`` in chunks, reporting progress.

    Never asks for more than one byte past the sink's limit, so a source that
    sends too much is stopped after at most one extra byte; stops at the deadline.
    """
    if progress:
        progress(sink.size, total)  # > 0 when a pull resumes
    while True:
        deadline.left()  # raises once it has passed
        data = read(min(chunk, sink.limit - sink.size + 1))
        if not data:
            break
        sink.write(data)
        if progress:
            progress(sink.size, total)
    if deadline.expired():  # the watchdog cut the connection: that is the end we saw
        raise BlobError(deadline.reason())
    if sink.expected_size is not None and sink.size < sink.expected_size:
        raise BlobError(f"interrupted: got {sink.size} of the expected {sink.expected_size} bytes")


class _Deadline:
    """The end of the time one source has to deliver a blob."""

    #: Errors this close to the end are taken as caused by it (timeouts are rounded).
    SLACK_S = 0.05

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def expired(self) -> bool:
        return time.monotonic() >= self.end - self.SLACK_S

    def reason(self) -> str:
        return f"timed out after {self.seconds:g} s (the fetch deadline)"

    def left(self) -> float:
        """Seconds left (> 0). Raises BlobError ("timed out after N s") once none are."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise BlobError(self.reason())
        return left


class _Watchdog:
    """Shuts the current connection down when the deadline passes.

    Reads :func:`_pump` makes are bounded by the socket timeout it sets before
    each one, and ssl bounds a whole TLS handshake by the timeout it starts
    with. But http.client reads the status line, the headers and chunk-size
    lines in loops of recv calls, each allowed the whole timeout, so a server
    dripping them could outlast any per-read timeout; shutting the socket down
    wakes whichever read is waiting. The watchdog keeps a duplicate of the
    socket: ``wrap_socket`` detaches the one it wraps.
    """

    def __init__(self, deadline: _Deadline):
        import threading

        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._fired = False
        self._timer = threading.Timer(max(0.0, deadline.end - time.monotonic()), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._release()

    def watch(self, sock: socket.socket) -> None:
        """From now on the deadline shuts ``sock`` down (at once if it has passed)."""
        with self._lock:
            self._release()
            self._sock = sock.dup()
            if self._fired:
                self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            self._shutdown()

    def _shutdown(self) -> None:
        import socket

        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer

    def _release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _open_regular(path: Path) -> BinaryIO:
    """Opens ``path`` for reading, if it is a regular file.

    Raises:
        BlobError: it is a FIFO, a device (``/dev/zero`` streams forever), a
            socket or a folder. O_NONBLOCK makes opening a FIFO return at once
            instead of waiting for a writer; the check is ``fstat`` on the
            descriptor just opened, so nothing can be swapped in between.
        OSError: it cannot be opened.
    """
    import fcntl

    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # what opening a Unix socket gives
            raise BlobError(f"{path} is not a regular file (it is a socket or a device)") from exc
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BlobError(f"{path} is not a regular file (it is {_file_kind(mode)})")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return f"of type {stat.S_IFMT(mode):o}"


def _is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    if not host:
        return False
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_redirect(current: str, target: str) -> None:
    """Raises :class:`BlobError` unless a source may redirect from ``current`` to ``target``.

    Allowed: to ``https`` (from ``http`` or ``https``), and ``http`` to
    ``http`` when both hosts are loopback (``127.0.0.0/8``, ``::1``,
    ``localhost``: a local mirror or a test). Refused: ``https`` to ``http``
    (a downgrade anyone on the path could then serve), ``http`` to ``http``
    off loopback, and any other scheme (``file:``, ``ftp:``...: a server must
    not make us read local files). The digest check would catch wrong bytes
    either way; this keeps a source from steering the fetch. The message
    names both URLs and their schemes.
    """
    src, dst = urllib.parse.urlsplit(current), urllib.parse.urlsplit(target)
    s, d = src.scheme.lower(), dst.scheme.lower()
    if d == "https" and dst.hostname:
        return
    if d == "http" and s == "http" and _is_loopback(src.hostname) and _is_loopback(dst.hostname):
        return
    if d == "https":
        why = "the target names no host"
    elif d == "http" and s == "https":
        why = "https may not redirect to http"
    elif d == "http":
        why = "http may redirect to http only from and to a loopback address"
    else:
        why = f"redirects may go to https only, not to {d or 'a URL without a scheme'}"
    raise BlobError(f"refused a redirect from {s} to {d or '(none)'} ({why}): {current} -> {target}")


def _request_target(url: str) -> str:
    """The path and query of ``url``, as sent in the request line (the fragment is never sent)."""
    parts = urllib.parse.urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _cause(exc: BaseException, timeout_s: float) -> str:
    """A short, human reason for a failed fetch."""
    import http.client
    import socket

    if isinstance(exc, http.client.IncompleteRead):
        return f"interrupted: the connection closed with {exc.expected} bytes still to come"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"timed out: nothing arrived for {timeout_s:g} s"
    if isinstance(exc, FileNotFoundError):
        return f"no such file {exc.filename}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror or exc}"
    ssl = sys.modules.get("ssl")
    if ssl is not None and isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate refused: {exc.verify_message or exc}"
    if ssl is not None and isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError):
        if exc.errno == errno.ECONNRESET:
            return "connection reset"
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__
