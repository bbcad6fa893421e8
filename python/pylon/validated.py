"""An authenticated record of documents that passed validation.

Validating a plan costs ~12 ms in a fresh process (importing and compiling
the schema validator), paid by every ``composectl run`` for a plan that has
not changed. So a document that passed is remembered by an empty file whose
*name* is an HMAC-SHA256, under a per-install secret, of the schema and the
canonical document. Whoever can write the cache folder but not read the
secret cannot make a record that vouches for a document (the old memo was a
plain hash, which anyone could compute for an out-of-range plan); and the
secret lives where no guest is ever let in (``pylon.preopens`` refuses the
cache root). Anything odd (a missing or unsafe folder or key) means "not
remembered": the document is validated in full, never accepted unchecked.

Layout: ``<cache root>/validated/<64 hex>`` records and ``.../key`` (32 random
bytes, ``0600``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from pylon import paths
from pylon.errors import StateError

__all__ = ["Memo"]

_KEY_BYTES = 32


class Memo:
    """Records of documents that passed a check, under one schema."""

    def __init__(self, schema_bytes: bytes, folder: Path | None = None):
        self._schema = hashlib.sha256(schema_bytes).digest()
        self._folder = folder if folder is not None else paths.cache_root() / "validated"
        self._key: bytes | None = None

    def _record(self, doc: Any) -> Path | None:
        key = self._load_key()
        if key is None:
            return None
        try:
            canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            return None
        tag = hmac.new(key, self._schema + canonical.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return self._folder / tag.hexdigest()

    def knows(self, doc: Any) -> bool:
        """Whether ``doc`` passed before (under this schema and this install's key)."""
        record = self._record(doc)
        return record is not None and record.is_file()

    def remember(self, doc: Any) -> None:
        """Records that ``doc`` passed (best effort: it is only a cache)."""
        record = self._record(doc)
        if record is not None:
            try:
                record.touch()
            except OSError:
                pass

    def _load_key(self) -> bytes | None:
        if self._key is None:
            try:
                paths.private_dir(self._folder)
                self._key = _read_or_create_key(self._folder / "key")
            except (OSError, StateError):
                return None
        return self._key


def _read_or_create_key(path: Path) -> bytes | None:
    """The key, created once (0600); None when the file is not ours alone."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(_KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077
                or st.st_size != _KEY_BYTES):
            return None
        key = f.read()
    return key if len(key) == _KEY_BYTES else None
