"""The trust policy: which cap digests the user allows, per cap name, and which guests.

Stored at :func:`pylon.paths.trust_file` as::

    {"version": 1, "allow": {"crc32c": ["sha256:<hex>", ...]}, "guests": ["sha256:<hex>"]}

A cap is trusted only if its exact digest is allowed *for that name*: allowing
``sha256:X`` for ``crc32c`` does not let the same bytes run as ``zlib``, and a
new build of ``crc32c`` (a new digest) must be allowed again. A guest
(pylon.wasm) is trusted by digest alone (``"guests"``, optional; ``composectl
setup`` allows the stock guest it built). Nothing is trusted by default.

:class:`TrustPolicy` is an in-memory copy: change it with :meth:`~TrustPolicy.allow`,
:meth:`~TrustPolicy.revoke`, :meth:`~TrustPolicy.allow_guest` and
:meth:`~TrustPolicy.revoke_guest`, then :meth:`~TrustPolicy.save` (atomic). The
runtime calls :meth:`~TrustPolicy.check_guest` before it runs a guest and
:meth:`~TrustPolicy.check` on every resolve. A refused resolve is told twice:
:meth:`~TrustPolicy.guest_message` for the guest's exception (the cap name, the
digest asked for and the command to run, nothing else: a guest learns no other
digest and no host path) and :meth:`~TrustPolicy.host_message` on the host's
stderr (which also lists the digests that are allowed for that name).

The file's format is ``schemas/trust.schema.json``, checked on every load with
the plan's machinery (:mod:`pylon.schema_check`); an error names the file, the
JSON path and what is wrong (``trust.json: at $.allow.crc32c[0]: bad digest
...``). Cap names follow the one rule in ``schemas/common.schema.json``
(:mod:`pylon.names`).

The trust file decides what native code runs, so it is read and written only
in a folder owned by the user and writable by no one else
(:func:`pylon.paths.private_dir`); a trust file another user could have
written is refused.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from pylon import paths
from pylon.blobstore import is_digest, write_atomic
from pylon.errors import TrustError
from pylon.names import CAP_NAME_RULE, is_cap_name
from pylon.schema_check import Schema, json_path

__all__ = ["TRUST_VERSION", "TrustEntry", "TrustPolicy", "allow_command", "allow_guest_command"]

#: The trust file format version this code reads and writes.
TRUST_VERSION = 1
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
#: The trust file's schema; a JSON object is "a JSON object" in its messages.
SCHEMA = Schema("trust", type_names={"object": "a JSON object"})


class TrustEntry(NamedTuple):
    """One allowed (cap name, digest) pair."""

    name: str
    digest: str


def allow_command(name: str, digest: str) -> str:
    """The exact command that allows ``digest`` for cap ``name``."""
    return f"composectl trust allow {name} {digest}"


def allow_guest_command(digest: str) -> str:
    """The exact command that allows the guest of ``digest``."""
    return f"composectl trust allow --guest {digest}"


def _good_digest(digest: object) -> bool:
    return isinstance(digest, str) and is_digest(digest) and _DIGEST_RE.fullmatch(digest) is not None


def _check_pair(name: str, digest: str | None, *, where: str) -> None:
    if not is_cap_name(name):
        raise TrustError(f"{where}bad cap name {name!r}: {CAP_NAME_RULE}")
    if digest is not None and not _good_digest(digest):
        raise TrustError(f"{where}bad digest {digest!r} for cap {name!r}: "
                         "expected 'sha256:' followed by 64 lowercase hex digits")


def _check_guest_digest(digest: str, *, where: str) -> None:
    if not _good_digest(digest):
        raise TrustError(f"{where}bad guest digest {digest!r}: "
                         "expected 'sha256:' followed by 64 lowercase hex digits")


class TrustPolicy:
    """Allowed digests per cap name, and allowed guest digests, in one JSON file.

    Args:
        path: the trust file; default :func:`pylon.paths.trust_file`.
        allow: initial ``name -> digests``; normally use :meth:`load`.
        guests: initial guest digests.
    """

    def __init__(self, *, path: Path | None = None, allow: dict[str, set[str]] | None = None,
                 guests: set[str] | None = None):
        self.path = Path(path) if path is not None else paths.trust_file()
        self._allow: dict[str, set[str]] = {k: set(v) for k, v in (allow or {}).items()}
        self._guests: set[str] = set(guests or ())

    @classmethod
    def load(cls, path: Path | None = None) -> TrustPolicy:
        """Reads the trust file; a missing file is an empty policy (nothing trusted).

        Raises:
            TrustError: the file is unreadable, not JSON, or malformed.
            StateError: the file or its folder is owned by another user or
                writable by others (anyone who can write it decides what runs).
        """
        path = Path(path) if path is not None else paths.trust_file()
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                raw = f.read()
        except FileNotFoundError:
            return cls(path=path)
        except OSError as exc:
            raise TrustError(f"{path}: cannot read trust policy: {exc.strerror or exc}") from exc
        paths.check_private(path.parent)
        paths.check_private(path, st)
        doc = _parse_json(raw, path)
        allow, guests = _parse(doc, where=f"{path}: ")
        return cls(path=path, allow=allow, guests=guests)

    def save(self) -> None:
        """Writes the policy atomically; sorted, so the file diffs cleanly.

        The folder is created ``0700`` (and refused if unsafe) by
        :func:`pylon.paths.private_dir`. ``"guests"`` is written only when
        some guest is allowed.

        Raises:
            StateError: the folder cannot be created or is unsafe.
        """
        doc: dict[str, object] = {
            "version": TRUST_VERSION,
            "allow": {name: sorted(ds) for name, ds in sorted(self._allow.items()) if ds}}
        if self._guests:
            doc["guests"] = sorted(self._guests)
        paths.private_dir(self.path.parent)
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
            TrustError: not allowed; the message is :meth:`host_message` (for
                the host's stderr: it lists other allowed digests). Show a
                guest :meth:`guest_message` instead.
        """
        if self.is_trusted(name, digest):
            return
        raise TrustError(self.host_message(name, digest))

    def host_message(self, name: str, digest: str) -> str:
        """Why cap ``name`` with ``digest`` is refused, in full, for the host's stderr.

        Names the cap, the digest, the digests that *are* allowed for that
        name (so a user sees "you allowed an older build") and the command.
        """
        others = sorted(self._allow.get(name, ()))
        why = (f"allowed digests for {name!r} are {', '.join(others)}" if others
               else f"no digest is allowed for {name!r}")
        return (f"cap {name!r} with digest {digest} is not trusted ({why}); "
                f"to allow it, run: {allow_command(name, digest)}")

    @staticmethod
    def guest_message(name: str, digest: str) -> str:
        """Why cap ``name`` with ``digest`` is refused, as the guest may see it.

        Only what the guest asked for and the command to run: no other
        digests, no paths (the guest is not told what else is trusted).
        """
        return f"cap {name!r} with digest {digest} is not trusted; to allow it, run: {allow_command(name, digest)}"

    # -- guests ----------------------------------------------------------------

    def allow_guest(self, digest: str) -> bool:
        """Allows the guest component of ``digest``; False if it already was.

        Raises:
            TrustError: the digest is malformed.
        """
        _check_guest_digest(digest, where="")
        if digest in self._guests:
            return False
        self._guests.add(digest)
        return True

    def revoke_guest(self, digest: str) -> bool:
        """Stops trusting the guest of ``digest``; False if it was not allowed.

        Raises:
            TrustError: the digest is malformed.
        """
        _check_guest_digest(digest, where="")
        if digest not in self._guests:
            return False
        self._guests.discard(digest)
        return True

    def guests(self) -> list[str]:
        """Every allowed guest digest, sorted."""
        return sorted(self._guests)

    def is_trusted_guest(self, digest: str) -> bool:
        """True if the guest component of exactly this digest is allowed."""
        return digest in self._guests

    def check_guest(self, digest: str) -> None:
        """Raises unless the guest of ``digest`` is allowed.

        Raises:
            TrustError: not allowed; the message names the digest and the
                command that allows it.
        """
        if not self.is_trusted_guest(digest):
            raise TrustError(f"guest with digest {digest} is not trusted; "
                             f"to allow it, run: {allow_guest_command(digest)}")


def _parse_json(raw: bytes, path: Path) -> Any:
    """The trust file's JSON; a key given twice is an error (json would keep the last)."""
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise TrustError(f"{path}: duplicate key {key!r}")
            seen[key] = value
        return seen

    def no_constants(name: str) -> Any:
        raise TrustError(f"{path}: invalid JSON: {name} is not a JSON number")

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except UnicodeDecodeError as exc:
        raise TrustError(f"{path}: cannot read trust policy: not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise TrustError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except (ValueError, RecursionError) as exc:
        raise TrustError(f"{path}: invalid JSON: {type(exc).__name__}") from exc


def _parse(doc: Any, *, where: str) -> tuple[dict[str, set[str]], set[str]]:
    """Checks a trust document against the schema; returns ``name -> digests`` and the guest digests.

    The version first: a newer file would otherwise fail on its new keys,
    which hides the real reason. A document this install checked before is
    recognised by an authenticated record (:mod:`pylon.validated`), so an
    unchanged trust file costs no validator on each run.
    """
    if isinstance(doc, dict) and "version" in doc and (type(doc["version"]) is not int
                                                       or doc["version"] != TRUST_VERSION):
        raise TrustError(f"{where}at $.version: unsupported trust file version {json.dumps(doc.get('version'))}: "
                         f"this Pylon reads version {TRUST_VERSION}")
    memo = _memo()
    if not memo.knows(doc):
        problem = SCHEMA.first_problem(doc)
        if problem is not None:
            raise TrustError(f"{where}at {json_path(problem.path)}: {problem.message}")
        memo.remember(doc)
    return {name: set(digests) for name, digests in doc.get("allow", {}).items()}, set(doc.get("guests", []))


def _memo() -> Any:
    from pylon.validated import Memo

    return Memo(json.dumps(SCHEMA.document, sort_keys=True).encode())
