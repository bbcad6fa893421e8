"""Signed caps: Ed25519 keys, detached signatures, and the check that lets one vouch for a digest.

A signature is a DSSE envelope (securesystemslib's :class:`~securesystemslib.dsse.Envelope`,
payload type ``application/vnd.in-toto+json``) over an in-toto Statement v1::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "crc32c", "digest": {"sha256": "<hex of the .wasm bytes>"}}],
     "predicateType": "urn:pylon:cap-signature:v1",
     "predicate": {}}

It says "the holder of this key vouches for exactly these bytes running as
this cap name". The predicate type is our own, and a URN rather than an
address: in-toto defines no generic "I vouch for this artifact" predicate
(its release, provenance, link and test-result predicates claim other
things), and a signature the same key made for one of those must not let a
cap run. Keeping the signature beside the cap, not inside it, leaves the
cap's digest what the plan pins.

The pieces, in the order a user meets them:

* :func:`new_key` makes a key pair: the private key as PEM PKCS#8 (what
  securesystemslib's :class:`~securesystemslib.signer.CryptoSigner` loads,
  mode ``0600``), the public key as PEM SubjectPublicKeyInfo beside it.
* :func:`sign_file` signs a cap file for a cap name (``composectl sign``).
* :func:`read_public_key` turns a public key file into a
  :class:`~pylon.trust.TrustedKey` for ``composectl trust key add``.
* :func:`vouch` is what the runtime's trust gate calls for a cap whose digest
  is not pinned but whose plan entry carries a ``signature``: it fetches the
  signature blob (by its own digest, at most :data:`MAX_SIGNATURE_BYTES`)
  and :func:`verify_envelope` checks it, in this order: the envelope verifies
  under a key trusted for that cap name and not revoked (threshold 1) -> the
  payload type is in-toto's -> the Statement's type and predicate type are
  ours -> its one subject names this cap and this exact digest. Only then is
  the cap itself fetched, and the engine checks the cap's bytes against that
  same digest before compiling them, so a signature only ever vouches for
  the bytes that run.

A positive verdict is cached per process, keyed by (cap name, digest,
signature digest, the trusted keys): a verdict depends on nothing else, so a
Sandbox resolving the same cap again pays a dictionary lookup.

securesystemslib and cryptography cost ~110 ms to import; they are imported
inside the functions that need them, so runs whose plans carry no signature
never load them.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pylon import paths
from pylon.blobstore import BlobStore, Progress, digest_bytes, digest_file, write_atomic
from pylon.errors import BlobError, DigestMismatch, PylonError, SignatureError, StateError
from pylon.names import CAP_NAME_RULE, is_cap_name
from pylon.trust import TrustedKey, TrustPolicy, key_add_command

# securesystemslib.signer re-exports its classes without __all__, which mypy
# --strict reads as private: hence the ignores on those imports.
if TYPE_CHECKING:
    from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]

    from pylon.plan import BlobRef

__all__ = ["MAX_SIGNATURE_BYTES", "PAYLOAD_TYPE", "PREDICATE_TYPE", "STATEMENT_TYPE", "NewKey", "clear_cache",
           "key_paths", "load_signer", "new_key", "public_key_from_pem", "read_public_key", "sign_bytes",
           "sign_file", "sslib_key", "statement", "verify_envelope", "vouch"]

#: DSSE payload type of an in-toto Statement.
PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: in-toto Statement v1.
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
#: Our predicate: "the signer vouches for this digest running as this cap name".
PREDICATE_TYPE = "urn:pylon:cap-signature:v1"
#: The largest signature parsed or fetched. An envelope with one Ed25519
#: signature is under 1 KiB; the bound keeps a hostile source from making the
#: host download or parse megabytes before any key has vouched for anything.
MAX_SIGNATURE_BYTES = 64 * 1024

#: Key names: a file name, nothing that walks out of the keys folder.
_KEY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class NewKey(NamedTuple):
    """What :func:`new_key` wrote."""

    private: Path
    public: Path
    keyid: str


# -- keys ---------------------------------------------------------------------


def key_paths(name_or_path: str | Path, *, out: Path | None = None) -> tuple[Path, Path]:
    """The private and public key files of a key name, or of ``out``.

    A name ``NAME`` lives in :func:`pylon.paths.keys_dir` as ``NAME.key`` and
    ``NAME.pub``. With ``out``, the private key is ``out`` and the public key
    sits beside it, ``.key`` swapped for ``.pub`` (else ``.pub`` appended).

    Raises:
        PylonError: the name could be a path (``/``, ``..``) or is otherwise unusable.
    """
    if out is not None:
        out = Path(out)
        public = out.with_suffix(".pub") if out.suffix == ".key" else out.with_name(out.name + ".pub")
        return out, public
    name = str(name_or_path)
    if not _KEY_NAME_RE.fullmatch(name):
        raise PylonError(f"bad key name {name!r}: use letters, digits, '.', '_' and '-', starting with a "
                         "letter or digit, at most 64 characters (or give a file with -o)")
    folder = paths.keys_dir()
    return folder / f"{name}.key", folder / f"{name}.pub"


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Writes ``data`` to a new file ``path`` of ``mode``, atomically, never replacing a file.

    :func:`pylon.blobstore.write_atomic` renames over whatever is there; a
    key must never silently replace another (the old private key would be
    lost, and whatever it signed could no longer be re-signed). So: a temp
    file of the final mode, fsynced, then hard-linked to its name, which
    fails if the name exists, then the temp name removed. Readers see no
    file or the whole file.
    """
    import secrets

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # the umask may have narrowed or the fs ignored it
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise PylonError(f"refusing to overwrite {path}: it already exists") from None
        except OSError as exc:
            raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def new_key(name: str, *, out: Path | None = None) -> NewKey:
    """Makes an Ed25519 key pair; returns the files written and the key id.

    The private key is PEM PKCS#8, unencrypted, mode ``0600``; in the default
    place its folder is :func:`pylon.paths.private_dir` (``0700``, refused if
    others can write it). The public key is PEM SubjectPublicKeyInfo, the
    standard form any tool reads. The key id is securesystemslib's (sha256 of
    the public key's canonical JSON), the id a signature names its key by.

    Raises:
        PylonError: either file exists (nothing is written), or the name is bad.
        StateError: the keys folder is unsafe or cannot be written.
    """
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]

    private, public = key_paths(name, out=out)
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise PylonError(f"refusing to overwrite {path}: it already exists "
                             "(a key is made once; pick another name or remove it yourself)")
    if out is None:
        paths.private_dir(private.parent)
    else:
        try:
            private.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create {private.parent}: {exc.strerror or exc}") from exc
    signer = CryptoSigner.generate_ed25519()
    crypto_public = signer.public_key._crypto_key()
    public_pem = crypto_public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    _write_new(private, signer.private_bytes, 0o600)
    try:
        _write_new(public, public_pem, 0o644)
    except BaseException:
        private.unlink(missing_ok=True)  # half a pair is worse than none
        raise
    return NewKey(private, public, signer.public_key.keyid)


def load_signer(key: str | Path) -> CryptoSigner:
    """The signer of a private key: a key name (see :func:`key_paths`) or a PEM PKCS#8 file.

    A private key file that others can read or write is refused: a key anyone
    could have copied or swapped vouches for nothing.

    Raises:
        PylonError: no such key, an unreadable or unsafe file, not a private key.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]

    text = str(key)
    path = Path(text) if ("/" in text or Path(text).is_file()) else key_paths(text)[0]
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read(MAX_SIGNATURE_BYTES)
    except FileNotFoundError:
        raise PylonError(f"no private key {path}: make one with: composectl key new NAME") from None
    except OSError as exc:
        raise PylonError(f"cannot read private key {path}: {exc.strerror or exc}") from exc
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PylonError(f"refusing to use private key {path}: its mode is {st.st_mode & 0o777:o} "
                         f"(it must be yours and readable by you only: chmod 600 {path})")
    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PylonError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise PylonError(f"{path} is not an Ed25519 private key (caps are signed with Ed25519)")
    return CryptoSigner(private)


def public_key_from_pem(data: bytes, where: str) -> TrustedKey:
    """A PEM SubjectPublicKeyInfo Ed25519 public key as a :class:`~pylon.trust.TrustedKey`.

    Raises:
        PylonError: not a PEM public key, or not Ed25519.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]

    try:
        public = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        hint = " (that is a private key: give the .pub file)" if b"PRIVATE KEY" in data else ""
        raise PylonError(f"{where} is not a PEM public key{hint}: {exc}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise PylonError(f"{where} is not an Ed25519 public key (caps are signed with Ed25519)")
    key = SSlibKey.from_crypto(public)
    return TrustedKey(key.keyid, key.keytype, key.scheme, key.keyval["public"])


def read_public_key(path: Path) -> TrustedKey:
    """Reads a public key file (PEM SubjectPublicKeyInfo, Ed25519).

    Raises:
        PylonError: unreadable, not a public key, or not Ed25519.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIGNATURE_BYTES)
    except OSError as exc:
        raise PylonError(f"cannot read public key {path}: {exc.strerror or exc}") from exc
    return public_key_from_pem(data, str(path))


@functools.lru_cache(maxsize=256)
def sslib_key(key: TrustedKey) -> SSlibKey:
    """The securesystemslib key of a trusted key, its id checked against its material.

    The id is recomputed from the key itself: a trust file edited to list
    key B under key A's id would otherwise let B's signatures pass as A's
    and let B dodge a revocation of its real id. Cached per key (a
    :class:`~pylon.trust.TrustedKey` is its material, so the answer cannot
    change): recomputing the id is ~40 µs, a third of a verification.

    Raises:
        SignatureError: the stored id is not the key's.
    """
    from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]

    made = SSlibKey(key.keyid, key.keytype, key.scheme, {"public": key.public})
    real = SSlibKey.from_crypto(made._crypto_key(), scheme=key.scheme).keyid
    if real != key.keyid:
        raise SignatureError(f"the trust policy lists key id {key.keyid} with the material of key {real}; "
                             "remove it and add the key again with composectl trust key add",
                             keyids=(key.keyid, real))
    return made


# -- signing ------------------------------------------------------------------


def statement(name: str, digest: str) -> dict[str, Any]:
    """The in-toto Statement v1 a cap signature carries, for cap ``name`` at ``digest``."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {},
    }


def sign_bytes(name: str, digest: str, signer: CryptoSigner) -> bytes:
    """A signature (DSSE envelope JSON) vouching for ``digest`` as cap ``name``."""
    from securesystemslib.dsse import Envelope

    if not is_cap_name(name):
        raise PylonError(f"bad cap name {name!r}: {CAP_NAME_RULE}")
    payload = json.dumps(statement(name, digest), sort_keys=True, separators=(",", ":")).encode()
    envelope = Envelope(payload, PAYLOAD_TYPE, {})
    envelope.sign(signer)
    return (json.dumps(envelope.to_dict(), indent=2, sort_keys=True) + "\n").encode()


def sign_file(path: Path, name: str, key: str | Path, *, out: Path | None = None) -> tuple[Path, str, str, str]:
    """Signs the cap file ``path`` for cap ``name`` with private key ``key``; writes ``out`` atomically.

    Returns ``(signature file, the cap's digest, the signature's digest, key id)``.
    ``out`` defaults to ``path`` + ``.sig``.

    Raises:
        PylonError: a bad name or key, an unreadable file.
    """
    if not is_cap_name(name):
        raise PylonError(f"bad cap name {name!r}: {CAP_NAME_RULE}")
    signer = load_signer(key)
    try:
        digest = digest_file(Path(path))
    except OSError as exc:
        raise PylonError(f"cannot read {path}: {exc.strerror or exc}") from exc
    data = sign_bytes(name, digest, signer)
    out = Path(out) if out is not None else Path(f"{path}.sig")
    write_atomic(out, data)
    return out, digest, digest_bytes(data), signer.public_key.keyid


# -- verifying ----------------------------------------------------------------


def _bad(name: str, digest: str, why: str, keyids: tuple[str, ...] = ()) -> SignatureError:
    return SignatureError(f"cap {name!r} with digest {digest} is not trusted: {why}",
                          cap=name, digest=digest, keyids=keyids)


def _decode_envelope(name: str, digest: str, data: bytes, where: str) -> Any:
    """The envelope of ``data``; every malformation is a :class:`SignatureError`."""
    from securesystemslib.dsse import Envelope

    if len(data) > MAX_SIGNATURE_BYTES:
        raise _bad(name, digest, f"its signature {where} is {len(data)} bytes, more than the "
                                 f"{MAX_SIGNATURE_BYTES} a signature may have")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(name, digest, f"its signature {where} is not a DSSE envelope: invalid JSON "
                                 f"({type(exc).__name__})") from None
    shape = (isinstance(doc, dict) and isinstance(doc.get("payload"), str)
             and isinstance(doc.get("payloadType"), str) and isinstance(doc.get("signatures"), list)
             and all(isinstance(s, dict) and isinstance(s.get("keyid"), str) and isinstance(s.get("sig"), str)
                     for s in doc["signatures"]))
    if not shape:
        raise _bad(name, digest, f"its signature {where} is not a DSSE envelope (it needs payload, "
                                 "payloadType and signatures of keyid and sig)")
    try:
        return Envelope.from_dict(doc)
    except Exception as exc:  # noqa: BLE001 - base64, duplicate key ids, FormatError...: all "malformed"
        raise _bad(name, digest, f"its signature {where} is not a DSSE envelope: {type(exc).__name__}: "
                                 f"{str(exc)[:200]}") from None


def verify_envelope(name: str, digest: str, data: bytes, trust: TrustPolicy, *,
                    where: str = "") -> str:
    """Checks that signature ``data`` vouches for ``digest`` as cap ``name``; returns the key id that did.

    The order: the envelope parses (at most :data:`MAX_SIGNATURE_BYTES`) ->
    one of its signatures verifies under a key trusted for ``name`` that is
    not revoked -> only then is the payload read: its type is in-toto's, the
    Statement's ``_type`` and ``predicateType`` are ours, and its one subject
    is ``name`` with exactly ``digest``. Nothing an unverified payload says
    is parsed.

    Raises:
        SignatureError: any step fails; the message names the cap, the
            digest and the key ids concerned (for the host's stderr only).
    """
    from securesystemslib.exceptions import VerificationError

    envelope = _decode_envelope(name, digest, data, where)
    signers = tuple(sorted(envelope.signatures))
    try:
        keys = [sslib_key(k) for k in trust.keys(name)]
    except SignatureError as exc:
        raise _bad(name, digest, str(exc), exc.keyids) from None
    if not keys:
        raise _bad(name, digest, f"no key is trusted to sign {name!r}; to trust one, run: {key_add_command(name)}",
                   signers)
    try:
        accepted = envelope.verify(keys, 1)
    except (VerificationError, ValueError):
        revoked = [k for k in signers if trust.is_revoked_key(k)]
        trusted = ", ".join(k.keyid for k in keys)
        if revoked:
            why = f"its signature is by key {', '.join(revoked)}, which is revoked"
        elif any(k in {t.keyid for t in keys} for k in signers):
            why = (f"its signature claims key {', '.join(signers)} but does not verify under it "
                   "(the signature or its payload was changed)")
        else:
            why = (f"its signature is by key {', '.join(signers) or '(none)'}, which is not trusted for "
                   f"{name!r} (trusted: {trusted})")
        raise _bad(name, digest, why, signers) from None
    keyid: str = sorted(accepted)[0]
    if envelope.payload_type != PAYLOAD_TYPE:
        raise _bad(name, digest, f"the signature by key {keyid} has payload type "
                                 f"{envelope.payload_type[:100]!r}, not {PAYLOAD_TYPE!r}", (keyid,))
    try:
        stmt = json.loads(envelope.payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        stmt = None
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
        raise _bad(name, digest, f"the signature by key {keyid} does not carry an in-toto Statement v1", (keyid,))
    if stmt.get("predicateType") != PREDICATE_TYPE:
        shown = str(stmt.get("predicateType"))[:100]
        raise _bad(name, digest, f"the signature by key {keyid} states {shown!r}, not {PREDICATE_TYPE!r}", (keyid,))
    subject = stmt.get("subject")
    if not (isinstance(subject, list) and len(subject) == 1 and isinstance(subject[0], dict)):
        raise _bad(name, digest, f"the signature by key {keyid} must name exactly one subject", (keyid,))
    signed_name, signed_digest = subject[0].get("name"), subject[0].get("digest")
    if signed_name != name:
        raise _bad(name, digest, f"the signature by key {keyid} is for cap {str(signed_name)[:64]!r}, "
                                 f"not {name!r}", (keyid,))
    wanted = {"sha256": digest.removeprefix("sha256:")}
    if signed_digest != wanted:
        shown = (f"sha256:{signed_digest['sha256']}"[:80] if isinstance(signed_digest, dict)
                 and isinstance(signed_digest.get("sha256"), str) else str(signed_digest)[:100])
        raise _bad(name, digest, f"the signature by key {keyid} is for digest {shown}, not this one", (keyid,))
    return keyid


#: Positive verdicts: (name, digest, signature digest, trusted keys) -> key id.
_VERDICTS: dict[tuple[str, str, str, tuple[TrustedKey, ...]], str] = {}
_MAX_VERDICTS = 4096


def _signature_bytes(name: str, digest: str, signature: BlobRef, store: BlobStore,
                     progress: Progress | None) -> bytes:
    """The signature blob's bytes, fetched by its own digest, at most :data:`MAX_SIGNATURE_BYTES`, verified."""
    if signature.size is not None and signature.size > MAX_SIGNATURE_BYTES:
        raise _bad(name, digest, f"its signature {signature.digest} is {signature.size} bytes by the plan, "
                                 f"more than the {MAX_SIGNATURE_BYTES} a signature may have")
    try:
        if not store.has(signature.digest):
            # A copy of the store whose size limit is the signature's bound: a
            # source that does not stop is cut off there, not at 4 GiB.
            bounded = copy.copy(store)
            bounded.max_blob_bytes = MAX_SIGNATURE_BYTES
            bounded.fetch(signature.digest, signature.sources, size=signature.size, progress=progress)
        with open(store.blob_path(signature.digest), "rb") as f:
            data = f.read(MAX_SIGNATURE_BYTES + 1)
        if len(data) > MAX_SIGNATURE_BYTES:
            raise _bad(name, digest, f"its signature {signature.digest} is more than the "
                                     f"{MAX_SIGNATURE_BYTES} bytes a signature may have")
        found = digest_bytes(data)
        if found != signature.digest:
            with contextlib.suppress(BlobError):
                store.path(signature.digest)  # quarantines the bad copy
            raise DigestMismatch(signature.digest, found, "the stored signature")
    except (BlobError, StateError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _bad(name, digest, f"its signature {signature.digest} could not be fetched: {reason}") from None
    return data


def vouch(name: str, digest: str, signature: BlobRef, *, store: BlobStore, trust: TrustPolicy,
          progress: Progress | None = None) -> str:
    """Checks that the plan's ``signature`` vouches for cap ``name`` at ``digest``; returns the signer's key id.

    The runtime calls this when ``digest`` is not pinned for ``name``. With
    no key trusted for ``name`` nothing is fetched. Otherwise the signature
    blob is fetched by its own digest (bounded) and :func:`verify_envelope`
    decides. A pass is remembered for this process.

    Raises:
        SignatureError: no trusted key, the signature could not be fetched,
            or it does not vouch for exactly this (name, digest).
    """
    keys = tuple(trust.keys(name))
    if not keys:
        raise _bad(name, digest, f"it is not pinned and no key is trusted to sign {name!r}; to allow it, "
                                 f"run: composectl trust allow {name} {digest} (or {key_add_command(name)})")
    memo = (name, digest, signature.digest, keys)
    known = _VERDICTS.get(memo)
    if known is not None:
        return known
    data = _signature_bytes(name, digest, signature, store, progress)
    keyid = verify_envelope(name, digest, data, trust, where=signature.digest)
    if len(_VERDICTS) >= _MAX_VERDICTS:
        _VERDICTS.clear()
    _VERDICTS[memo] = keyid
    return keyid


def clear_cache() -> None:
    """Forgets every cached verdict (benchmarks measure the cold path with it)."""
    _VERDICTS.clear()
