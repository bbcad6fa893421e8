"""The trust policy: which cap digests the user allows, per cap name.

Stored at :func:`pylon.paths.trust_file` as::

    {"version": 1, "allow": {"crc32c": ["sha256:<hex>", ...]}}

A cap is trusted only if its exact digest is allowed *for that name*: allowing
``sha256:X`` for ``crc32c`` does not let the same bytes run as ``zlib``, and a
new build of ``crc32c`` (a new digest) must be allowed again. Nothing is
trusted by default.

:class:`TrustPolicy` is an in-memory copy: change it with :meth:`~TrustPolicy.allow`
and :meth:`~TrustPolicy.revoke`, then :meth:`~TrustPolicy.save` (atomic). The
runtime calls :meth:`~TrustPolicy.check` on every resolve.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

from pylon import paths
from pylon.blobstore import is_digest, write_atomic
from pylon.errors import TrustError
from pylon.plan import CAP_NAME_PATTERN

__all__ = ["TRUST_VERSION", "TrustEntry", "TrustPolicy", "allow_command"]

#: The trust file format version this code reads and writes.
TRUST_VERSION = 1
_NAME_RE = re.compile(CAP_NAME_PATTERN)


class TrustEntry(NamedTuple):
    """One allowed (cap name, digest) pair."""

    name: str
    digest: str


def allow_command(name: str, digest: str) -> str:
    """The exact command that allows ``digest`` for cap ``name``."""
    return f"composectl trust allow {name} {digest}"


def _check_pair(name: str, digest: str | None, *, where: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise TrustError(f"{where}bad cap name {name!r}: use lowercase letters, digits, '_' and '-', "
                         "starting with a letter or digit, at most 64 characters")
    if digest is not None and not is_digest(digest):
        raise TrustError(f"{where}bad digest {digest!r} for cap {name!r}: "
                         "expected 'sha256:' followed by 64 lowercase hex digits")


class TrustPolicy:
    """Allowed digests per cap name, loaded from and saved to one JSON file.

    Args:
        path: the trust file; default :func:`pylon.paths.trust_file`.
        allow: initial ``name -> digests``; normally use :meth:`load`.
    """

    def __init__(self, *, path: Path | None = None, allow: dict[str, set[str]] | None = None):
        self.path = Path(path) if path is not None else paths.trust_file()
        self._allow: dict[str, set[str]] = {k: set(v) for k, v in (allow or {}).items()}

    @classmethod
    def load(cls, path: Path | None = None) -> TrustPolicy:
        """Reads the trust file; a missing file is an empty policy (nothing trusted).

        Raises:
            TrustError: the file is unreadable, not JSON, or malformed.
        """
        path = Path(path) if path is not None else paths.trust_file()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path=path)
        except (OSError, UnicodeDecodeError) as exc:
            raise TrustError(f"{path}: cannot read trust policy: {exc}") from exc
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TrustError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                             f"{exc.msg}") from exc
        return cls(path=path, allow=_parse(doc, where=f"{path}: "))

    def save(self) -> None:
        """Writes the policy atomically; sorted, so the file diffs cleanly."""
        doc = {"version": TRUST_VERSION,
               "allow": {name: sorted(ds) for name, ds in sorted(self._allow.items()) if ds}}
        write_atomic(self.path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"))

    def allow(self, name: str, digest: str) -> bool:
        """Allows ``digest`` for cap ``name``; False if it already was.

        Raises:
            TrustError: the name or digest is malformed.
        """
        _check_pair(name, digest, where="")
        digests = self._allow.setdefault(name, set())
        if digest in digests:
            return False
        digests.add(digest)
        return True

    def revoke(self, name: str, digest: str | None = None) -> list[str]:
        """Stops trusting ``digest`` for ``name`` (every digest if ``None``); returns what was removed.

        Raises:
            TrustError: the name or digest is malformed.
        """
        _check_pair(name, digest, where="")
        digests = self._allow.get(name, set())
        removed = sorted(digests) if digest is None else sorted(digests & {digest})
        digests.difference_update(removed)
        if not digests:
            self._allow.pop(name, None)
        return removed

    def entries(self) -> list[TrustEntry]:
        """Every allowed pair, sorted by name then digest."""
        return [TrustEntry(name, d) for name in sorted(self._allow) for d in sorted(self._allow[name])]

    def is_trusted(self, name: str, digest: str) -> bool:
        """True if exactly this digest is allowed for exactly this name."""
        return digest in self._allow.get(name, ())

    def check(self, name: str, digest: str) -> None:
        """Raises unless ``digest`` is allowed for cap ``name``.

        Raises:
            TrustError: not allowed; the message names the cap, the digest, any
                other digests allowed for that name, and the command to allow it.
        """
        if self.is_trusted(name, digest):
            return
        others = sorted(self._allow.get(name, ()))
        why = (f"allowed digests for {name!r} are {', '.join(others)}" if others
               else f"no digest is allowed for {name!r}")
        raise TrustError(f"cap {name!r} with digest {digest} is not trusted ({why}); "
                         f"to allow it, run: {allow_command(name, digest)}")


def _parse(doc: Any, *, where: str) -> dict[str, set[str]]:
    """Checks a trust document's shape; returns ``name -> digests``."""
    if not isinstance(doc, dict):
        raise TrustError(f"{where}expected a JSON object")
    unknown = sorted(set(doc) - {"version", "allow"})
    if unknown:
        raise TrustError(f"{where}unknown key {unknown[0]!r} (allowed: allow, version)")
    if type(doc.get("version")) is not int or doc["version"] != TRUST_VERSION:
        raise TrustError(f"{where}unsupported trust file version {json.dumps(doc.get('version'))}: "
                         f"this Pylon reads version {TRUST_VERSION}")
    allow = doc.get("allow", {})
    if not isinstance(allow, dict):
        raise TrustError(f"{where}'allow' must be an object of cap name -> list of digests")
    out: dict[str, set[str]] = {}
    for name, digests in allow.items():
        if not isinstance(digests, list):
            raise TrustError(f"{where}allow.{name} must be a list of digests")
        _check_pair(name, None, where=where)
        for digest in digests:
            _check_pair(name, digest, where=where)
        out[name] = set(digests)
    return out
