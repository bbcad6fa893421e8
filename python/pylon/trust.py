"""The trust policy: which cap digests the user allows, per cap name, and which guests.

Stored at :func:`pylon.paths.trust_file` as::

    {"version": 1, "allow": {"crc32c": ["sha256:<hex>", ...]}, "guests": ["sha256:<hex>"],
     "keys": {"crc32c": [{"keyid": "<hex>", "keytype": "ed25519", "scheme": "ed25519",
                          "public": "<hex>"}]},
     "revoked-keys": ["<keyid>", ...]}

A cap is trusted only if its exact digest is allowed *for that name*: allowing
``sha256:X`` for ``crc32c`` does not let the same bytes run as ``zlib``, and a
new build of ``crc32c`` (a new digest) must be allowed again. A guest
(pylon.wasm) is trusted by digest alone (``"guests"``, optional; ``composectl
setup`` allows the stock guest it built). Nothing is trusted by default.

A cap whose digest is not pinned may instead be vouched for by a signature
(:mod:`pylon.signing`, docs/signing.md): ``"keys"`` (optional) lists, per cap
name, the Ed25519 public keys whose signature counts for that name and no
other. The key material itself is stored, not a path to a key file, so
editing a file on disk later cannot change what is trusted. ``"revoked-keys"``
(optional) lists key ids refused for every name, even where a key of that id
is still listed (a hand-edited file, an old backup merged back); adding a
revoked key again needs an explicit ``unrevoke=True``, because revocation
usually means a key leaked and a slip must not undo it. The file stays
version 1: both keys are optional, and a file without them reads as before.

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

__all__ = ["TRUST_VERSION", "TrustEntry", "TrustPolicy", "TrustedKey", "allow_command", "allow_guest_command",
           "key_add_command"]

#: The trust file format version this code reads and writes.
TRUST_VERSION = 1
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
#: The trust file's schema; a JSON object is "a JSON object" in its messages.
SCHEMA = Schema("trust", type_names={"object": "a JSON object"})


class TrustEntry(NamedTuple):
    """One allowed (cap name, digest) pair."""

    name: str
    digest: str


class TrustedKey(NamedTuple):
    """A public key trusted to sign caps, in securesystemslib's terms.

    Attributes:
        keyid: securesystemslib's key id (sha256 of the key's canonical JSON).
            Checked against the material when the key is used
            (:func:`pylon.signing.sslib_key`), so a stored id cannot disguise
            another key.
        keytype: ``"ed25519"`` (the only type this version accepts).
        scheme: ``"ed25519"``.
        public: the raw 32-byte public key, as 64 lowercase hex digits.
    """

    keyid: str
    keytype: str
    scheme: str
    public: str

    def as_json(self) -> dict[str, str]:
        return {"keyid": self.keyid, "keytype": self.keytype, "scheme": self.scheme, "public": self.public}


def key_add_command(name: str) -> str:
    """The command that trusts a public key for cap ``name``."""
    return f"composectl trust key add {name} PUBLIC_KEY_FILE"


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


def _check_keyid(keyid: str) -> None:
    if not (isinstance(keyid, str) and _HEX64_RE.fullmatch(keyid)):
        raise TrustError(f"bad key id {keyid!r}: expected 64 lowercase hex digits")


def _check_key(key: TrustedKey) -> None:
    _check_keyid(key.keyid)
    if (key.keytype, key.scheme) != ("ed25519", "ed25519"):
        raise TrustError(f"key {key.keyid}: unsupported key type {key.keytype}/{key.scheme} "
                         "(only ed25519 keys can sign caps)")
    if not (isinstance(key.public, str) and _HEX64_RE.fullmatch(key.public)):
        raise TrustError(f"key {key.keyid}: bad Ed25519 public key: expected 64 lowercase hex digits")


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
        keys: initial ``name -> public keys`` trusted to sign that cap.
        revoked_keys: initial key ids refused for every name.
    """

    def __init__(self, *, path: Path | None = None, allow: dict[str, set[str]] | None = None,
                 guests: set[str] | None = None, keys: dict[str, list[TrustedKey]] | None = None,
                 revoked_keys: set[str] | None = None):
        self.path = Path(path) if path is not None else paths.trust_file()
        self._allow: dict[str, set[str]] = {k: set(v) for k, v in (allow or {}).items()}
        self._guests: set[str] = set(guests or ())
        self._keys: dict[str, dict[str, TrustedKey]] = {
            name: {k.keyid: k for k in ks} for name, ks in (keys or {}).items()}
        self._revoked_keys: set[str] = set(revoked_keys or ())

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
        allow, guests, keys, revoked = _parse(doc, where=f"{path}: ")
        return cls(path=path, allow=allow, guests=guests, keys=keys, revoked_keys=revoked)

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
        keys = {name: [k.as_json() for _, k in sorted(ks.items())] for name, ks in sorted(self._keys.items()) if ks}
        if keys:
            doc["keys"] = keys
        if self._revoked_keys:
            doc["revoked-keys"] = sorted(self._revoked_keys)
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
        signers = self.keys(name)
        why += (f"; keys trusted to sign {name!r}: {', '.join(k.keyid for k in signers)}, "
                "but the plan gives no signature for it" if signers else "")
        return (f"cap {name!r} with digest {digest} is not trusted ({why}); "
                f"to allow it, run: {allow_command(name, digest)}")

    @staticmethod
    def guest_message(name: str, digest: str) -> str:
        """Why cap ``name`` with ``digest`` is refused, as the guest may see it.

        Only what the guest asked for and the command to run: no other
        digests, no paths (the guest is not told what else is trusted).
        """
        return f"cap {name!r} with digest {digest} is not trusted; to allow it, run: {allow_command(name, digest)}"

    # -- signing keys ----------------------------------------------------------

    def add_key(self, name: str, key: TrustedKey, *, unrevoke: bool = False) -> bool:
        """Trusts ``key``'s signatures for cap ``name`` (only); False if it already was.

        Raises:
            TrustError: the name or key is malformed, or the key id was
                revoked and ``unrevoke`` is not set (revocation usually means
                the key leaked; undoing it must be deliberate).
        """
        _check_pair(name, None, where="")
        _check_key(key)
        if key.keyid in self._revoked_keys:
            if not unrevoke:
                raise TrustError(f"key {key.keyid} was revoked; to trust it again anyway, "
                                 f"run: composectl trust key add --unrevoke {name} PUBLIC_KEY_FILE")
            self._revoked_keys.discard(key.keyid)
        keys = self._keys.setdefault(name, {})
        if keys.get(key.keyid) == key:
            return False
        keys[key.keyid] = key
        return True

    def remove_key(self, name: str, keyid: str) -> bool:
        """Stops trusting key ``keyid`` for cap ``name``; False if it was not listed there.

        The key may be added again later; see :meth:`revoke_key` for a key
        that must never count again.

        Raises:
            TrustError: the name or key id is malformed.
        """
        _check_pair(name, None, where="")
        _check_keyid(keyid)
        keys = self._keys.get(name, {})
        if keys.pop(keyid, None) is None:
            return False
        if not keys:
            self._keys.pop(name, None)
        return True

    def revoke_key(self, keyid: str) -> list[str]:
        """Revokes key ``keyid`` for every cap name; returns the names it was listed under.

        The id is recorded in ``"revoked-keys"``: it is refused even if it
        is listed again by hand, and :meth:`add_key` refuses it unless told
        to ``unrevoke``.

        Raises:
            TrustError: the key id is malformed.
        """
        _check_keyid(keyid)
        names = sorted(name for name, keys in self._keys.items() if keyid in keys)
        for name in names:
            self.remove_key(name, keyid)
        self._revoked_keys.add(keyid)
        return names

    def keys(self, name: str) -> list[TrustedKey]:
        """The keys whose signatures count for cap ``name``: listed for it and not revoked."""
        return [k for _, k in sorted(self._keys.get(name, {}).items()) if k.keyid not in self._revoked_keys]

    def key_entries(self) -> list[tuple[str, TrustedKey]]:
        """Every listed (cap name, key), sorted; revoked ones included (see :meth:`is_revoked_key`)."""
        return [(name, k) for name in sorted(self._keys) for _, k in sorted(self._keys[name].items())]

    def revoked_keys(self) -> list[str]:
        """Every revoked key id, sorted."""
        return sorted(self._revoked_keys)

    def is_revoked_key(self, keyid: str) -> bool:
        """True if ``keyid`` is revoked for every name."""
        return keyid in self._revoked_keys

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


def _parse(doc: Any, *, where: str) -> tuple[dict[str, set[str]], set[str], dict[str, list[TrustedKey]], set[str]]:
    """Checks a trust document against the schema.

    Returns ``name -> digests``, the guest digests, ``name -> keys`` and the
    revoked key ids.

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
    keys = {name: [TrustedKey(k["keyid"], k["keytype"], k["scheme"], k["public"]) for k in ks]
            for name, ks in doc.get("keys", {}).items()}
    return ({name: set(digests) for name, digests in doc.get("allow", {}).items()}, set(doc.get("guests", [])),
            keys, set(doc.get("revoked-keys", [])))


def _memo() -> Any:
    from pylon.validated import Memo

    return Memo(json.dumps(SCHEMA.document, sort_keys=True).encode())
