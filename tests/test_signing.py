"""Signed caps end to end: real Ed25519 keys, real DSSE envelopes, real guest runs.

A cap whose digest is not pinned runs when the plan's signature for it is
by a key trusted for its name and covers exactly its digest; every way a
signature can be wrong is refused before the cap is fetched or instantiated,
the guest hears only the usual "not trusted", and the host's stderr names
the cap, the digest and the key.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, Pylon
from pylon import signing
from pylon.blobstore import BlobStore, digest_bytes, digest_file
from pylon.errors import SignatureError, TrustError
from pylon.plan import BlobRef, Plan
from pylon.runtime import Resolver
from pylon.trust import TrustPolicy

CHECK = "0xe3069283"  # crc32c(b"123456789"), RFC 3720
RUN_CRC = textwrap.dedent("""
    from pylon_guest import dynlink
    try:
        cap = dynlink.load("crc32c")
    except dynlink.DynlinkError as e:
        print(f"{type(e).__name__}: {e}")
    else:
        import _crc32c_dynlink_cap as crc
        print(hex(crc.crc32c(b"123456789")))
""")


# -- keys and helpers ----------------------------------------------------------


@dataclass(frozen=True)
class Key:
    private: Path
    public: Path
    keyid: str


def composectl(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pylon.cli", *map(str, args)], env=env, cwd=REPO,
                          text=True, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def keys(pylon: Pylon, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    """Three real key pairs made by `composectl key new -o`."""
    folder = tmp_path_factory.mktemp("keys")
    made = {}
    for name in ("alice", "bob", "mallory"):
        result = composectl(pylon.env, "key", "new", name, "-o", folder / f"{name}.key")
        assert result.returncode == 0, result.stderr
        made[name] = Key(folder / f"{name}.key", folder / f"{name}.pub", result.stdout.strip())
    return made


@pytest.fixture(scope="module")
def crc(pylon: Pylon) -> tuple[str, Path]:
    """The stock crc32c cap: its digest and file."""
    entry = json.loads(pylon.default_plan.read_text())["caps"]["crc32c"]
    path = Path(entry["sources"][0].removeprefix("file://"))
    assert digest_file(path) == entry["digest"]
    return entry["digest"], path


def home(pylon: Pylon, tmp: Path, *, keys: dict[str, list[Key]] = {},  # noqa: B006 - read only
         revoked: tuple[str, ...] = (), pin: dict[str, str] | None = None) -> dict[str, str]:
    """An environment whose config has the session's guest trusted, ``keys`` per cap name, and
    nothing else (the session's blob store is shared: blobs are content-addressed)."""
    config = tmp / "config"
    config.mkdir(mode=0o700)
    shutil.copyfile(pylon.home / "config" / "stock.json", config / "stock.json")
    session = TrustPolicy.load(pylon.home / "config" / "trust.json")
    policy = TrustPolicy(path=config / "trust.json", guests=set(session.guests()))
    for name, ks in keys.items():
        for k in ks:
            policy.add_key(name, signing.read_public_key(k.public))
    for keyid in revoked:
        policy.revoke_key(keyid)
    for name, digest in (pin or {}).items():
        policy.allow(name, digest)
    policy.save()
    return {**pylon.env, "PYLON_CONFIG_DIR": str(config)}


def sign(key: Key, name: str, digest: str) -> bytes:
    return signing.sign_bytes(name, digest, signing.load_signer(key.private))


def signed_plan(tmp: Path, digest: str, cap: Path, sig: bytes | None, *, sig_digest: str | None = None,
                size: int | None = None) -> Path:
    """A plan whose crc32c is ``digest`` from ``cap``, with ``sig`` as its signature file."""
    signature = None
    if sig is not None:
        sig_file = tmp / "crc32c.sig"
        sig_file.write_bytes(sig)
        signature = BlobRef(digest=sig_digest or digest_bytes(sig), sources=[sig_file.as_uri()], size=size)
    plan = Plan().with_cap("crc32c", digest=digest, sources=[cap.as_uri()], signature=signature)
    path = tmp / "plan.json"
    plan.save(path)
    return path


def envelope(sig: bytes) -> dict[str, object]:
    doc: dict[str, object] = json.loads(sig)
    return doc


def payload(sig: bytes) -> dict[str, object]:
    doc: dict[str, object] = json.loads(base64.b64decode(str(envelope(sig)["payload"])))
    return doc


def with_payload(sig: bytes, change: Callable[[dict[str, object]], None]) -> bytes:
    """The envelope with its Statement changed and the old signature kept (a forgery)."""
    env, stmt = envelope(sig), payload(sig)
    change(stmt)
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    return json.dumps(env).encode()


# -- key new, sign, trust key add: the CLI -------------------------------------


def test_key_new_is_private_and_never_overwrites(pylon: Pylon, tmp_path: Path) -> None:
    env = {**pylon.env, "PYLON_CONFIG_DIR": str(tmp_path / "config")}
    made = composectl(env, "key", "new", "release")
    assert made.returncode == 0, made.stderr
    keyid = made.stdout.strip()
    folder = tmp_path / "config" / "keys"
    private, public = folder / "release.key", folder / "release.pub"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert signing.read_public_key(public).keyid == keyid and len(keyid) == 64
    assert sorted(p.name for p in folder.iterdir()) == ["release.key", "release.pub"]  # no temp left
    before = private.read_bytes()
    again = composectl(env, "key", "new", "release")
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr and str(private) in again.stderr
    assert private.read_bytes() == before
    # -o: the public key beside it; a lone existing .pub also stops it, and nothing is written.
    (tmp_path / "other.pub").write_text("mine")
    clash = composectl(env, "key", "new", "x", "-o", tmp_path / "other.key")
    assert clash.returncode == 2 and "other.pub" in clash.stderr and not (tmp_path / "other.key").exists()
    bad = composectl(env, "key", "new", "../escape")
    assert bad.returncode == 2 and "bad key name" in bad.stderr


def test_sign_writes_a_dsse_envelope_over_an_in_toto_statement(pylon: Pylon, keys: dict[str, Key],
                                                               crc: tuple[str, Path], tmp_path: Path) -> None:
    digest, cap = crc
    out = tmp_path / "crc32c.sig"
    result = composectl(pylon.env, "sign", cap, "--key", keys["alice"].private, "--name", "crc32c", "-o", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == digest_file(out)
    assert keys["alice"].keyid in result.stderr and digest in result.stderr
    sig = out.read_bytes()
    env = envelope(sig)
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert [s["keyid"] for s in env["signatures"]] == [keys["alice"].keyid]  # type: ignore[attr-defined]
    assert payload(sig) == {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "crc32c", "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": "urn:pylon:cap-signature:v1",
        "predicate": {}}
    # A signature is just bytes: the blob store takes it.
    put = composectl(pylon.env, "blob", "put", out)
    assert put.returncode == 0 and put.stdout.strip() == digest_file(out)
    # A private key others can read is refused, and so is a bad cap name.
    loose = tmp_path / "loose.key"
    shutil.copyfile(keys["alice"].private, loose)
    loose.chmod(0o644)
    refused = composectl(pylon.env, "sign", cap, "--key", loose, "--name", "crc32c")
    assert refused.returncode == 2 and "chmod 600" in refused.stderr
    bad = composectl(pylon.env, "sign", cap, "--key", keys["alice"].private, "--name", "CRC")
    assert bad.returncode == 2 and "bad cap name 'CRC'" in bad.stderr


def test_trust_key_add_revoke_ls(pylon: Pylon, keys: dict[str, Key], tmp_path: Path) -> None:
    env = home(pylon, tmp_path)
    alice, bob = keys["alice"], keys["bob"]
    added = composectl(env, "trust", "key", "add", "crc32c", alice.public)
    assert added.returncode == 0 and added.stdout.strip() == alice.keyid, added.stderr
    assert composectl(env, "trust", "key", "add", "zstd", bob.public).returncode == 0
    doc = json.loads((tmp_path / "config" / "trust.json").read_text())
    # The key material is stored, not the file's path: changing the file later changes nothing.
    assert doc["keys"]["crc32c"] == [{"keyid": alice.keyid, "keytype": "ed25519", "scheme": "ed25519",
                                      "public": signing.read_public_key(alice.public).public}]
    assert str(alice.public) not in json.dumps(doc)
    listing = composectl(env, "trust", "ls")
    assert alice.keyid in listing.stdout and bob.keyid in listing.stdout and "crc32c" in listing.stdout
    # A private key, or anything else, is not a public key.
    wrong = composectl(env, "trust", "key", "add", "crc32c", alice.private)
    assert wrong.returncode == 2 and "give the .pub file" in wrong.stderr
    # Revoke for one name: the key can come back.
    assert composectl(env, "trust", "key", "revoke", "zstd", bob.keyid).returncode == 0
    assert composectl(env, "trust", "key", "revoke", "zstd", bob.keyid).returncode == 1
    # Revoke everywhere: gone from every name, refused by add unless --unrevoke.
    gone = composectl(env, "trust", "key", "revoke", "--all", alice.keyid)
    assert gone.returncode == 0 and "crc32c" in gone.stderr
    policy = TrustPolicy.load(tmp_path / "config" / "trust.json")
    assert policy.keys("crc32c") == [] and policy.revoked_keys() == [alice.keyid]
    back = composectl(env, "trust", "key", "add", "crc32c", alice.public)
    assert back.returncode == 2 and "was revoked" in back.stderr and "--unrevoke" in back.stderr
    listing = composectl(env, "trust", "key", "ls")
    assert alice.keyid in listing.stdout and "(revoked)" in listing.stdout
    forced = composectl(env, "trust", "key", "add", "--unrevoke", "crc32c", alice.public)
    assert forced.returncode == 0, forced.stderr
    assert TrustPolicy.load(tmp_path / "config" / "trust.json").revoked_keys() == []


# -- runs ----------------------------------------------------------------------


def test_signed_unpinned_cap_runs(pylon: Pylon, keys: dict[str, Key], crc: tuple[str, Path],
                                  tmp_path: Path) -> None:
    digest, cap = crc
    env = home(pylon, tmp_path, keys={"crc32c": [keys["alice"]]})
    assert not TrustPolicy.load(tmp_path / "config" / "trust.json").is_trusted("crc32c", digest)
    plan = signed_plan(tmp_path, digest, cap, sign(keys["alice"], "crc32c", digest))
    result = composectl(env, "run", "--plan", plan, "-c", RUN_CRC)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == CHECK


def test_signed_cap_runs_in_a_sandbox_and_is_verified_once(pylon: Pylon, keys: dict[str, Key],
                                                           crc: tuple[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import pylon as api

    digest, cap = crc
    env = home(pylon, tmp_path, keys={"crc32c": [keys["alice"]]})
    for var in ("PYLON_CONFIG_DIR", "PYLON_BLOB_DIR"):
        monkeypatch.setenv(var, env[var])
    plan = signed_plan(tmp_path, digest, cap, sign(keys["alice"], "crc32c", digest))
    signing.clear_cache()
    calls = []
    real = signing.verify_envelope

    def counted(*args: object, **kwargs: object) -> str:
        calls.append(args[:2])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(signing, "verify_envelope", counted)
    sandbox = api.Sandbox(plan=plan)
    for _ in range(3):
        r = sandbox.run(RUN_CRC)
        assert r.exit_code == 0 and r.stdout.decode().strip() == CHECK, r.stderr
    assert calls == [("crc32c", digest)]


def test_plan_verify_and_show_accept_a_signed_cap_and_name_a_bad_signature(
        pylon: Pylon, keys: dict[str, Key], crc: tuple[str, Path], tmp_path: Path) -> None:
    digest, cap = crc
    env = home(pylon, tmp_path, keys={"crc32c": [keys["alice"]]})
    good = signed_plan(tmp_path, digest, cap, sign(keys["alice"], "crc32c", digest))
    result = composectl(env, "plan", "verify", good)
    assert result.returncode == 0, result.stdout + result.stderr
    shown = composectl(env, "plan", "show", good)
    assert "signed by" in shown.stdout and keys["alice"].keyid[:8] in shown.stdout.replace("\n", "")
    (tmp_path / "other").mkdir()
    bad = signed_plan(tmp_path / "other", digest, cap, sign(keys["alice"], "zlib", digest))
    result = composectl(env, "plan", "verify", bad)
    assert result.returncode == 1
    assert "cap crc32c" in result.stdout + result.stderr and digest in (result.stdout + result.stderr).replace("\n", "")


def test_pinned_cap_needs_no_signature(pylon: Pylon, crc: tuple[str, Path], tmp_path: Path) -> None:
    digest, cap = crc
    env = home(pylon, tmp_path, pin={"crc32c": digest})
    plan = signed_plan(tmp_path, digest, cap, None)
    result = composectl(env, "run", "--plan", plan, "-c", RUN_CRC)
    assert result.returncode == 0 and result.stdout.strip() == CHECK, result.stderr


def test_unsigned_unpinned_cap_is_refused_as_before(pylon: Pylon, keys: dict[str, Key], crc: tuple[str, Path],
                                                    tmp_path: Path) -> None:
    digest, cap = crc
    env = home(pylon, tmp_path, keys={"crc32c": [keys["alice"]]})
    plan = signed_plan(tmp_path, digest, cap, None)
    result = composectl(env, "run", "--plan", plan, "-c", RUN_CRC)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"CapDenied: cap 'crc32c' with digest {digest} is not trusted; "
                                     f"to allow it, run: composectl trust allow crc32c {digest}")
    assert "gives no signature" in result.stderr and keys["alice"].keyid in result.stderr


def _tamper_sig(sig: bytes) -> bytes:
    env = envelope(sig)
    raw = bytearray(base64.b64decode(env["signatures"][0]["sig"]))  # type: ignore[index]
    raw[5] ^= 1
    env["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()  # type: ignore[index]
    return json.dumps(env).encode()


def _other_digest(stmt: dict[str, object]) -> None:
    stmt["subject"] = [{"name": "crc32c", "digest": {"sha256": "ab" * 32}}]


# Each case: how to make the signature from alice's good one, what the host's stderr must say.
# Keys: "alice" is trusted for crc32c, "bob" is trusted for crc32c but revoked, "mallory" not trusted.
BAD = {
    "tampered_payload": (lambda k, d, good: with_payload(good, _other_digest), "does not verify under it"),
    "tampered_signature": (lambda k, d, good: _tamper_sig(good), "does not verify under it"),
    "untrusted_key": (lambda k, d, good: sign(k["mallory"], "crc32c", d), "not trusted for 'crc32c'"),
    "other_digest": (lambda k, d, good: sign(k["alice"], "crc32c", "sha256:" + "ab" * 32),
                     "is for digest sha256:" + "ab" * 32),
    "other_name": (lambda k, d, good: sign(k["alice"], "zstd", d), "is for cap 'zstd'"),
    "revoked_key": (lambda k, d, good: sign(k["bob"], "crc32c", d), "which is revoked"),
    "truncated": (lambda k, d, good: good[: len(good) // 2], "invalid JSON"),
    "missing_fields": (lambda k, d, good: json.dumps({"payload": envelope(good)["payload"]}).encode(),
                       "is not a DSSE envelope"),
    "oversized": (lambda k, d, good: good[:-2] + b" " * (70 << 10) + good[-2:], "limit of 65536 bytes"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_signature_is_denied(pylon: Pylon, keys: dict[str, Key], crc: tuple[str, Path], tmp_path: Path,
                                 case: str) -> None:
    digest, cap = crc
    make, words = BAD[case]
    env = home(pylon, tmp_path, keys={"crc32c": [keys["alice"], keys["bob"]]}, revoked=(keys["bob"].keyid,))
    sig = make(keys, digest, sign(keys["alice"], "crc32c", digest))
    plan = signed_plan(tmp_path, digest, cap, sig)
    result = composectl(env, "run", "--plan", plan, "-c", RUN_CRC)
    assert result.returncode == 0, result.stderr
    # The guest hears the usual refusal and nothing else: no path, no key.
    assert result.stdout.strip() == (f"CapDenied: cap 'crc32c' with digest {digest} is not trusted; "
                                     f"to allow it, run: composectl trust allow crc32c {digest}")
    # The host hears why: the cap, the digest, the key (when there is one to name).
    assert words in result.stderr, result.stderr
    assert "'crc32c'" in result.stderr and digest in result.stderr
    signer = {"untrusted_key": "mallory", "revoked_key": "bob"}.get(case, "alice")
    if case not in ("truncated", "missing_fields", "oversized"):
        assert keys[signer].keyid in result.stderr
    else:
        assert digest_bytes(sig) in result.stderr


def test_signature_blob_that_does_not_match_its_digest_is_denied(
        pylon: Pylon, keys: dict[str, Key], crc: tuple[str, Path], tmp_path: Path) -> None:
    digest, cap = crc
    env = home(pylon, tmp_path, keys={"crc32c": [keys["alice"]]})
    good = sign(keys["alice"], "crc32c", digest)
    claimed = "sha256:" + "5e" * 32
    plan = signed_plan(tmp_path, digest, cap, good, sig_digest=claimed)
    result = composectl(env, "run", "--plan", plan, "-c", RUN_CRC)
    assert result.stdout.strip().startswith("CapDenied: cap 'crc32c'"), result.stderr
    assert claimed in result.stderr and "mismatch" in result.stderr and digest in result.stderr


# -- the gate itself: nothing is fetched or handed to the engine before the signature passes --


@pytest.fixture
def gate(pylon: Pylon, keys: dict[str, Key], crc: tuple[str, Path], tmp_path: Path) -> Callable[..., object]:
    """Resolves crc32c through a real Resolver with a private, empty blob store."""
    digest, cap = crc
    signing.clear_cache()

    def resolve(sig: bytes | None, trusted: list[Key], *, revoked: tuple[str, ...] = (),
                size: int | None = None) -> tuple[object, BlobStore, list[str]]:
        folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        store = BlobStore(folder / "blobs")
        policy = TrustPolicy(path=folder / "trust.json")
        for k in trusted:
            policy.add_key("crc32c", signing.read_public_key(k.public))
        for keyid in revoked:
            policy.revoke_key(keyid)
        plan = Plan.load(signed_plan(folder, digest, cap, sig, size=size))
        heard: list[str] = []
        resolver = Resolver(plan, "plan.json", store=store, trust=policy, report=heard.append)
        try:
            return resolver("crc32c"), store, heard
        except Exception as exc:  # noqa: BLE001 - the refusal is the result
            return exc, store, heard

    return resolve


def test_gate_fetches_the_cap_only_after_its_signature_passed(gate: Callable[..., tuple[object, BlobStore, list[str]]],
                                                              keys: dict[str, Key], crc: tuple[str, Path]) -> None:
    digest, _ = crc
    good = sign(keys["alice"], "crc32c", digest)
    spec, store, heard = gate(good, [keys["alice"]])
    assert getattr(spec, "digest", None) == digest and heard == []
    assert store.has(digest) and store.has(digest_bytes(good))
    bad = sign(keys["mallory"], "crc32c", digest)
    refused, store, heard = gate(bad, [keys["alice"]])
    assert getattr(refused, "dynlink_kind", None) == "denied"
    assert store.has(digest_bytes(bad)) and not store.has(digest)  # the cap was never fetched
    assert keys["mallory"].keyid in heard[0]


def test_gate_fetches_no_signature_without_a_trusted_key(gate: Callable[..., tuple[object, BlobStore, list[str]]],
                                                          keys: dict[str, Key], crc: tuple[str, Path]) -> None:
    digest, _ = crc
    good = sign(keys["alice"], "crc32c", digest)
    refused, store, heard = gate(good, [])
    assert getattr(refused, "dynlink_kind", None) == "denied"
    assert not store.has(digest_bytes(good)) and not store.has(digest)
    assert "no key is trusted to sign 'crc32c'" in heard[0]


def test_gate_refuses_a_signature_the_plan_says_is_too_big_without_fetching(
        gate: Callable[..., tuple[object, BlobStore, list[str]]], keys: dict[str, Key],
        crc: tuple[str, Path]) -> None:
    digest, _ = crc
    good = sign(keys["alice"], "crc32c", digest)
    refused, store, heard = gate(good, [keys["alice"]], size=1 << 20)
    assert getattr(refused, "dynlink_kind", None) == "denied" and not store.has(digest_bytes(good))
    assert "1048576 bytes by the plan" in heard[0]


def test_an_oversized_stream_is_cut_off_at_the_bound(gate: Callable[..., tuple[object, BlobStore, list[str]]],
                                                     keys: dict[str, Key], crc: tuple[str, Path]) -> None:
    # No size in the plan, the source serves 1 MiB: the fetch stops at 64 KiB and stores nothing.
    digest, _ = crc
    big = sign(keys["alice"], "crc32c", digest) + b" " * (1 << 20)
    refused, store, heard = gate(big, [keys["alice"]])
    assert getattr(refused, "dynlink_kind", None) == "denied" and not store.has(digest_bytes(big))
    assert "could not be fetched" in heard[0]


# -- verification, directly ------------------------------------------------------


def test_verify_checks_the_key_id_against_the_key_material(keys: dict[str, Key], crc: tuple[str, Path]) -> None:
    # A trust file edited to list mallory's key under alice's id must not let
    # mallory's signatures through, nor let mallory dodge a revocation.
    digest, _ = crc
    alice = signing.read_public_key(keys["alice"].public)
    mallory = signing.read_public_key(keys["mallory"].public)
    policy = TrustPolicy()
    policy.add_key("crc32c", alice._replace(public=mallory.public))
    forged = signing.sign_bytes("crc32c", digest, signing.load_signer(keys["mallory"].private))
    forged = forged.replace(keys["mallory"].keyid.encode(), keys["alice"].keyid.encode())
    with pytest.raises(SignatureError, match=f"with the material of key {mallory.keyid}"):
        signing.verify_envelope("crc32c", digest, forged, policy)


def test_wrong_payload_or_predicate_type_is_refused(keys: dict[str, Key], crc: tuple[str, Path]) -> None:
    # Even signed by a trusted key: a signature over anything but our Statement vouches for nothing.
    from securesystemslib.dsse import Envelope

    digest, _ = crc
    policy = TrustPolicy()
    policy.add_key("crc32c", signing.read_public_key(keys["alice"].public))
    signer = signing.load_signer(keys["alice"].private)

    def signed(stmt: dict[str, object], payload_type: str = signing.PAYLOAD_TYPE) -> bytes:
        env = Envelope(json.dumps(stmt).encode(), payload_type, {})
        env.sign(signer)
        return json.dumps(env.to_dict()).encode()

    good = signing.statement("crc32c", digest)
    assert signing.verify_envelope("crc32c", digest, signed(good), policy) == keys["alice"].keyid
    cases = {
        "payload type": signed(good, "application/json"),
        "in-toto Statement": signed({**good, "_type": "https://in-toto.io/Statement/v0.1"}),
        "urn:pylon:cap-signature:v1": signed({**good, "predicateType": "https://slsa.dev/provenance/v1"}),
        "exactly one subject": signed({**good, "subject": good["subject"] * 2}),
    }
    for words, sig in cases.items():
        with pytest.raises(SignatureError, match=words) as info:
            signing.verify_envelope("crc32c", digest, sig, policy)
        assert keys["alice"].keyid in str(info.value) and digest in str(info.value)
        assert isinstance(info.value, TrustError) and info.value.cap == "crc32c"


def test_a_cached_verdict_depends_on_the_trusted_keys(keys: dict[str, Key], crc: tuple[str, Path],
                                                      tmp_path: Path) -> None:
    digest, _ = crc
    signing.clear_cache()
    store = BlobStore(tmp_path / "blobs")
    good = sign(keys["alice"], "crc32c", digest)
    ref = BlobRef(digest=store.put_bytes(good))
    policy = TrustPolicy()
    policy.add_key("crc32c", signing.read_public_key(keys["alice"].public))
    assert signing.vouch("crc32c", digest, ref, store=store, trust=policy) == keys["alice"].keyid
    os.unlink(store.blob_path(ref.digest))  # the verdict is remembered; the blob is not needed again
    assert signing.vouch("crc32c", digest, ref, store=store, trust=policy) == keys["alice"].keyid
    policy.revoke_key(keys["alice"].keyid)  # a revocation is seen at once
    with pytest.raises(SignatureError, match="no key is trusted"):
        signing.vouch("crc32c", digest, ref, store=store, trust=policy)


def test_a_stored_signature_over_the_bound_is_not_read(keys: dict[str, Key], crc: tuple[str, Path],
                                                       tmp_path: Path) -> None:
    # Put in the store by hand (`composectl blob put` takes anything): still bounded.
    digest, _ = crc
    store = BlobStore(tmp_path / "blobs")
    big = sign(keys["alice"], "crc32c", digest) + b" " * (1 << 20)
    ref = BlobRef(digest=store.put_bytes(big))
    policy = TrustPolicy()
    policy.add_key("crc32c", signing.read_public_key(keys["alice"].public))
    with pytest.raises(SignatureError, match="more than the 65536 bytes") as info:
        signing.vouch("crc32c", digest, ref, store=store, trust=policy)
    assert info.value.cap == "crc32c" and info.value.digest == digest


def test_trust_file_keys_round_trip(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    folder.mkdir(mode=0o700)
    source = REPO / "tests" / "trust_files" / "good_keys.json"
    shutil.copyfile(source, folder / "trust.json")
    policy = TrustPolicy.load(folder / "trust.json")
    doc = json.loads(source.read_text())
    [key] = policy.keys("crc32c")
    assert key.as_json() == doc["keys"]["crc32c"][0]
    assert policy.revoked_keys() == doc["revoked-keys"] and policy.keys("zstd") == []
    signing.sslib_key(key)  # the fixture's id is its key's
    policy.save()
    again = json.loads((folder / "trust.json").read_text())
    assert again["keys"] == {"crc32c": doc["keys"]["crc32c"]}  # an empty list is dropped
    assert again["revoked-keys"] == doc["revoked-keys"] and again["allow"] == doc["allow"]
    # A file without the new keys reads and writes exactly as before (version 1 unchanged).
    old = TrustPolicy(path=folder / "old.json", allow={"crc32c": {doc["allow"]["crc32c"][0]}})
    old.save()
    assert set(json.loads((folder / "old.json").read_text())) == {"version", "allow"}


def test_runs_without_signatures_never_import_the_crypto_libraries() -> None:
    code = ("import sys, pylon, pylon.runtime, pylon.trust, pylon.sandbox, pylon.cli.entry\n"
            "print(sorted(m for m in ('securesystemslib', 'cryptography', 'pylon.signing') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], text=True, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
