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

Errors carry the digest and the path or source they concern.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO, NamedTuple

from pylon import paths
from pylon.errors import BlobError, BlobNotFound, DigestMismatch, FetchError

__all__ = [
    "ALGORITHM",
    "DIGEST_PATTERN",
    "BadBlob",
    "BlobInfo",
    "BlobStore",
    "GcReport",
    "Progress",
    "check_digest",
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
    return isinstance(value, str) and _DIGEST_RE.match(value) is not None


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

    def __init__(self, folder: Path, hex_hint: str, *, max_bytes: int):
        folder.mkdir(parents=True, exist_ok=True)
        # The pid in the name lets gc tell a live writer's file from a dead one's.
        self.tmp = folder / f"{_TMP_PREFIX}{hex_hint}.{os.getpid()}.{secrets.token_hex(4)}"
        self._file: BinaryIO = open(self.tmp, "xb")
        self._hash = hashlib.sha256()
        self._max = max_bytes
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max:
            raise BlobError(f"blob is larger than the store's limit of {self._max} bytes")
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


class BlobStore:
    """A content-addressed store of verified blobs.

    Args:
        root: the store's root folder; default :func:`pylon.paths.blob_root`.
        timeout_s: socket timeout for each network read of a fetch.
        max_blob_bytes: a fetch or put larger than this is refused (a source
            that streams forever must not fill the disk).
    """

    def __init__(self, root: Path | None = None, *, timeout_s: float = 30.0,
                 max_blob_bytes: int = 4 << 30):
        self.root = Path(root) if root is not None else paths.blob_root()
        self.timeout_s = timeout_s
        self.max_blob_bytes = max_blob_bytes
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
        with _Sink(self.blob_dir, "put", max_bytes=self.max_blob_bytes) as sink:
            sink.write(data)
            return self._settle(sink, expected=None)

    def put_file(self, path: Path) -> str:
        """Copies a file into the store; returns its digest.

        Raises:
            BlobError: the file cannot be read.
        """
        try:
            src = open(path, "rb")
        except OSError as exc:
            raise BlobError(f"cannot read {path}: {exc.strerror or exc}") from exc
        with src, _Sink(self.blob_dir, "put", max_bytes=self.max_blob_bytes) as sink:
            while chunk := src.read(_CHUNK):
                sink.write(chunk)
            return self._settle(sink, expected=None)

    def fetch(self, digest: str, sources: Sequence[str] = (), *,
              progress: Progress | None = None) -> Path:
        """Makes sure the blob of ``digest`` is stored and verified; returns its path.

        A stored blob that verifies is used as is. Otherwise each source
        (``file://`` or ``http(s)://``) is tried in order until one delivers
        the right bytes. A stored blob that does not verify is quarantined and
        fetched again.

        Args:
            digest: ``sha256:<hex>``.
            sources: URLs to try, in order.
            progress: called with ``(bytes_done, bytes_total or None)`` while
                streaming.

        Raises:
            DigestMismatch: the only source served other bytes.
            FetchError: the only source could not deliver (unreachable, HTTP
                error, unreadable file, interrupted).
            BlobNotFound: there was no source, or several all failed; the
                message lists what was tried and ``.attempts`` holds each
                source's error.
        """
        final = self.blob_path(digest)
        if final.is_file():
            try:
                return self.path(digest)
            except DigestMismatch:
                pass  # quarantined by path(); fetch it anew below
        attempts: list[tuple[str, BlobError]] = []
        for source in sources:
            try:
                self._fetch_one(digest, source, progress)
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
        return final

    @staticmethod
    def _identity(path: Path) -> tuple[int, int, int, int, int]:
        st = path.stat()
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _quarantine(self, path: Path) -> Path:
        """Moves a bad blob aside so it is never used again but can be inspected."""
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
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

    def _fetch_one(self, digest: str, source: str, progress: Progress | None) -> None:
        """Streams one source into a temp file, verifies it, renames it into place."""
        # Imported here, not at the top: urllib.request and http.client cost
        # ~30 ms to import, and most runs fetch nothing.
        import http.client
        import urllib.error

        scheme = urllib.parse.urlsplit(source).scheme.lower()
        if scheme not in ("file", "http", "https"):
            raise _fetch_error(digest, source, f"unsupported scheme {scheme or '(none)'!r} "
                               "(use file://, http:// or https://)")
        hex_ = check_digest(digest)
        with _Sink(self.blob_dir, hex_, max_bytes=self.max_blob_bytes) as sink:
            try:
                if scheme == "file":
                    self._copy_file(source, sink, progress)
                else:
                    self._copy_http(source, sink, progress)
            except BlobError as exc:
                raise _fetch_error(digest, source, str(exc)) from exc
            except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as exc:
                raise _fetch_error(digest, source, _cause(exc)) from exc
            self._settle(sink, expected=digest, where=source)

    @staticmethod
    def _copy_file(source: str, sink: _Sink, progress: Progress | None) -> None:
        import urllib.request

        parts = urllib.parse.urlsplit(source)
        if parts.netloc not in ("", "localhost"):
            raise BlobError(f"file:// URLs must name a local path, not host {parts.netloc!r}")
        path = Path(urllib.request.url2pathname(parts.path))
        with open(path, "rb") as src:
            total = os.fstat(src.fileno()).st_size
            _pump(src, sink, total, progress)

    def _copy_http(self, source: str, sink: _Sink, progress: Progress | None) -> None:
        import urllib.request

        request = urllib.request.Request(source, headers={"User-Agent": "pylon-blobstore"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            _pump(response, sink, total, progress)
            if total is not None and sink.size != total:
                raise BlobError(f"interrupted: got {sink.size} of {total} bytes")


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


def _pump(src: BinaryIO, sink: _Sink, total: int | None, progress: Progress | None) -> None:
    """Copies ``src`` into ``sink`` in chunks, reporting progress."""
    if progress:
        progress(0, total)
    while chunk := src.read(_CHUNK):
        sink.write(chunk)
        if progress:
            progress(sink.size, total)


def _cause(exc: BaseException) -> str:
    """A short, human reason for a failed fetch."""
    import http.client
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, OSError):
            return _cause(reason)
        return str(reason)
    if isinstance(exc, http.client.IncompleteRead):
        return f"interrupted: the connection closed with {exc.expected} bytes still to come"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, FileNotFoundError):
        return f"no such file {exc.filename}"
    if isinstance(exc, OSError):
        if exc.errno == errno.ECONNRESET:
            return "connection reset"
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__
