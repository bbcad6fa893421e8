"""OCI registries end to end: composectl push, plan add and run against a real docker-registry."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from pathlib import Path

import pytest

from conftest import Pylon
from oci_registry import CuttingProxy, Registry
from pylon import oci
from pylon.blobstore import BlobStore
from pylon.errors import BlobError, PlanError

CRC_SCRIPT = "import _crc32c_dynlink_cap as crc; print(hex(crc.crc32c(b'123456789')))"


def cap_file(pylon: Pylon, name: str) -> tuple[Path, str]:
    """The stored blob of a stock cap (set up by the pylon fixture) and its digest."""
    digest = json.loads(pylon.default_plan.read_text())["caps"][name]["digest"]
    return pylon.home / "blobs" / "sha256" / digest.split(":", 1)[1], digest


def unique_module(tmp_path: Path, size: int = 4096) -> tuple[Path, str]:
    """A fresh wasm core module (a custom section of random bytes): a blob no other test pushes."""
    payload = b"\x04test" + secrets.token_bytes(size)
    body = bytes([0]) + _uleb(len(payload)) + payload
    path = tmp_path / f"m-{secrets.token_hex(4)}.wasm"
    path.write_bytes(b"\0asm\x01\0\0\0" + body)
    return path, "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def with_env(pylon: Pylon, **changes: str) -> Pylon:
    env = dict(pylon.env)
    env.update(changes)
    return Pylon(env, pylon.home)


def push(pylon: Pylon, file: Path, ref: str, *extra: str) -> str:
    result = pylon.composectl("push", str(file), ref, *extra, check=True)
    return result.stdout.strip()


# -- references ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "host", "repo", "tag", "digest"), [
    ("oci://127.0.0.1:5000/caps/crc32c:v1", "127.0.0.1:5000", "caps/crc32c", "v1", None),
    ("oci://localhost/a/b/c:1.2.3-rc_1", "localhost", "a/b/c", "1.2.3-rc_1", None),
    ("oci://[::1]:5000/x@sha256:" + "ab" * 32, "[::1]:5000", "x", None, "sha256:" + "ab" * 32),
    ("oci://Reg.Example:443/x.y__z:t@sha256:" + "cd" * 32, "reg.example:443", "x.y__z", "t", "sha256:" + "cd" * 32),
])
def test_reference_parses(text: str, host: str, repo: str, tag: str | None, digest: str | None) -> None:
    ref = oci.parse_reference(text)
    assert (ref.host, ref.repository, ref.tag, ref.digest) == (host, repo, tag, digest)
    assert oci.parse_reference(str(ref)) == ref


@pytest.mark.parametrize(("text", "why"), [
    ("https://127.0.0.1/x:v1", "does not start with oci://"),
    ("oci://127.0.0.1:5000", "no repository"),
    ("oci://127.0.0.1:5000/caps/crc32c", "neither a tag nor a digest"),
    ("oci://127.0.0.1:5000/Caps:v1", "not a repository name"),
    ("oci://127.0.0.1:5000/caps:v1@sha256:abc", "not a manifest digest"),
    ("oci://127.0.0.1:5000/caps:-bad", "not a valid tag"),
    ("oci://127.0.0.1:99999/caps:v1", "out of range"),
    ("oci://bad host/caps:v1", "not a host"),
])
def test_bad_references_are_refused(text: str, why: str) -> None:
    with pytest.raises(PlanError, match=why):
        oci.parse_reference(text)


def test_bad_reference_as_a_source_is_a_fetch_error(tmp_path: Path) -> None:
    with pytest.raises(BlobError, match="neither a tag nor a digest"):
        BlobStore(tmp_path).fetch("sha256:" + "00" * 32, ["oci://127.0.0.1:1/caps"])


def test_http_only_for_loopback_or_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    assert oci.plain_http("127.0.0.1:5000") and oci.plain_http("localhost") and oci.plain_http("[::1]:80")
    assert not oci.plain_http("10.1.2.3:5000")
    monkeypatch.setenv(oci.INSECURE_ENV, "10.1.2.3:5000, 10.9.9.9")
    assert oci.plain_http("10.1.2.3:5000") and oci.plain_http("10.9.9.9:443")
    assert not oci.plain_http("10.1.2.3:6000")


# -- push, plan add, run ------------------------------------------------------------


def test_push_plan_add_and_run_pulls_into_an_empty_store(pylon: Pylon, oci_registry: Registry,
                                                          tmp_path: Path) -> None:
    cap, digest = cap_file(pylon, "crc32c")
    manifest_digest = push(pylon, cap, oci_registry.ref("e2e/crc32c:v1"))
    assert oci.parse_reference(f"oci://h/r@{manifest_digest}").digest == manifest_digest
    # The layout: one application/wasm layer (the file's digest), the wasm config.
    with oci.client(oci_registry.host) as client:
        got = client.manifest(oci.parse_reference(oci_registry.ref("e2e/crc32c:v1")))
    assert got is not None and got[1] == manifest_digest
    manifest = json.loads(got[0])
    assert manifest["config"]["mediaType"] == oci.WASM_CONFIG_MEDIA_TYPE
    assert [(layer["mediaType"], layer["digest"]) for layer in manifest["layers"]] == [("application/wasm", digest)]
    config_bytes = oci_registry.blob_file(manifest["config"]["digest"]).read_bytes()
    config = json.loads(config_bytes)
    assert config["architecture"] == "wasm" and config["os"] == "wasip2"
    assert config["layerDigests"] == [digest]
    assert "compose:dynlink/provider@0.1.0" in config["component"]["exports"]

    plan = tmp_path / "plan.json"
    pylon.composectl("plan", "new", str(plan), check=True)
    pylon.composectl("plan", "add", str(plan), "crc32c", oci_registry.ref("e2e/crc32c:v1"), check=True)
    entry = json.loads(plan.read_text())["caps"]["crc32c"]
    assert entry["digest"] == digest and entry["size"] == cap.stat().st_size
    assert entry["sources"] == [oci_registry.ref(f"e2e/crc32c:v1@{manifest_digest}")]
    assert "signature" not in entry

    empty = with_env(pylon, PYLON_BLOB_DIR=str(tmp_path / "empty-store"))
    result = empty.run_code(CRC_SCRIPT, plan=plan)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0xe3069283\n"
    assert BlobStore(tmp_path / "empty-store").has(digest)


def test_tag_resolves_to_its_layer_and_a_moved_tag_is_refused(pylon: Pylon, oci_registry: Registry,
                                                              tmp_path: Path) -> None:
    crc, crc_digest = cap_file(pylon, "crc32c")
    cbor, cbor_digest = cap_file(pylon, "cborcalc")
    push(pylon, crc, oci_registry.ref("moving/cap:stable"))
    store = BlobStore(tmp_path / "store")
    source = oci_registry.ref("moving/cap:stable")
    assert store.fetch(crc_digest, [source]).read_bytes() == crc.read_bytes()
    push(pylon, cbor, oci_registry.ref("moving/cap:stable"))  # the tag moves
    other = BlobStore(tmp_path / "store2")
    with pytest.raises(BlobError) as info:
        other.fetch(crc_digest, [source])
    assert cbor_digest in str(info.value) and crc_digest in str(info.value)
    assert not other.has(crc_digest) and not other.has(cbor_digest)


def test_pinned_manifest_digest_survives_a_moved_tag(pylon: Pylon, oci_registry: Registry, tmp_path: Path) -> None:
    module, digest = unique_module(tmp_path)
    other, _ = unique_module(tmp_path)
    pinned = push(pylon, module, oci_registry.ref("pinned/m:v1"))
    push(pylon, other, oci_registry.ref("pinned/m:v1"))
    store = BlobStore(tmp_path / "store")
    assert store.fetch(digest, [oci_registry.ref(f"pinned/m:v1@{pinned}")]).read_bytes() == module.read_bytes()


def _crafted(registry: Registry, repo: str, layers: list[tuple[str, bytes]]) -> list[str]:
    config = registry.put_blob(repo, b"{}")
    descriptors = []
    for media_type, data in layers:
        descriptors.append({"mediaType": media_type, **registry.put_blob(repo, data)})
    registry.put_manifest(repo, "v1", {
        "schemaVersion": 2, "mediaType": oci.MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": oci.WASM_CONFIG_MEDIA_TYPE, **config}, "layers": descriptors})
    return [d["digest"] for d in descriptors]


def test_manifest_with_two_layers_is_refused(oci_registry: Registry, tmp_path: Path) -> None:
    first, _second = _crafted(oci_registry, "bad/two", [("application/wasm", b"\0asm\x01\0\0\0"),
                                                        ("application/wasm", b"\0asm\x01\0\0\0\0\x01\x00")])
    store = BlobStore(tmp_path)
    with pytest.raises(BlobError, match="has 2 layers; a Wasm artifact has exactly one"):
        store.fetch(first, [oci_registry.ref("bad/two:v1")])
    assert not store.has(first)


@pytest.mark.parametrize("media_type", ["application/vnd.oci.image.layer.v1.tar+gzip", "text/plain"])
def test_wrong_layer_media_type_is_refused(oci_registry: Registry, tmp_path: Path, media_type: str) -> None:
    (digest,) = _crafted(oci_registry, "bad/type", [(media_type, b"\0asm\x01\0\0\0" + media_type.encode())])
    store = BlobStore(tmp_path)
    with pytest.raises(BlobError, match=re.escape(f"media type '{media_type}' is not one Pylon accepts")):
        store.fetch(digest, [oci_registry.ref("bad/type:v1")])
    assert not store.has(digest)


@pytest.mark.parametrize("media_type", ["application/vnd.module.wasm.content.layer.v1+wasm",
                                        "application/vnd.wasm.content.layer.v1+wasm"])
def test_older_wasm_layer_types_are_read(oci_registry: Registry, tmp_path: Path, media_type: str) -> None:
    data = b"\0asm\x01\0\0\0" + secrets.token_bytes(8)
    (digest,) = _crafted(oci_registry, "courtesy/type", [(media_type, data)])
    assert BlobStore(tmp_path).fetch(digest, [oci_registry.ref("courtesy/type:v1")]).read_bytes() == data


def test_registry_serving_wrong_bytes_stores_nothing(pylon: Pylon, oci_registry: Registry, tmp_path: Path) -> None:
    module, digest = unique_module(tmp_path)
    push(pylon, module, oci_registry.ref("tampered/m:v1"))
    blob = oci_registry.blob_file(digest)
    blob.write_bytes(bytes(len(module.read_bytes())))  # same size, other bytes
    store = BlobStore(tmp_path / "store")
    with pytest.raises(BlobError, match="digest mismatch") as info:
        store.fetch(digest, [oci_registry.ref("tampered/m:v1")], size=module.stat().st_size)
    assert digest in str(info.value)
    assert not store.has(digest)
    assert list(store.blob_dir.iterdir()) == []  # no blob, no partial download kept


def test_interrupted_pull_resumes_with_a_range(pylon: Pylon, oci_registry: Registry, tmp_path: Path) -> None:
    module, digest = unique_module(tmp_path, size=300_000)
    size = module.stat().st_size
    push(pylon, module, oci_registry.ref("resume/m:v1"))
    proxy = CuttingProxy(oci_registry.host, cut_after=size // 2)
    try:
        store = BlobStore(tmp_path / "store")
        source = proxy.ref("resume/m:v1")
        with pytest.raises(BlobError, match="interrupted"):
            store.fetch(digest, [source], size=size)
        assert not store.has(digest)
        partial = store.blob_dir / f".tmp-{digest.split(':')[1]}.partial"
        assert partial.stat().st_size == size // 2
        seen: list[tuple[int, int | None]] = []
        path = store.fetch(digest, [source], size=size, progress=lambda done, total: seen.append((done, total)))
        assert path.read_bytes() == module.read_bytes()
        assert proxy.ranges == [None, f"bytes={size // 2}-"]
        assert seen[0] == (size // 2, size) and seen[-1] == (size, size)
        assert not partial.exists()
    finally:
        proxy.close()


def test_registry_ignoring_the_range_is_read_from_the_start(pylon: Pylon, oci_registry: Registry,
                                                             tmp_path: Path) -> None:
    module, digest = unique_module(tmp_path, size=200_000)
    size = module.stat().st_size
    push(pylon, module, oci_registry.ref("resume/norange:v1"))
    proxy = CuttingProxy(oci_registry.host, cut_after=size // 3, honour_range=False)
    try:
        store = BlobStore(tmp_path / "store")
        with pytest.raises(BlobError, match="interrupted"):
            store.fetch(digest, [proxy.ref("resume/norange:v1")])
        assert store.fetch(digest, [proxy.ref("resume/norange:v1")]).read_bytes() == module.read_bytes()
        assert proxy.ranges == [None, f"bytes={size // 3}-"]
    finally:
        proxy.close()


def test_store_limits_hold_on_the_oci_path(pylon: Pylon, oci_registry: Registry, tmp_path: Path) -> None:
    module, digest = unique_module(tmp_path, size=50_000)
    size = module.stat().st_size
    source = oci_registry.ref("limits/m:v1")
    push(pylon, module, source)
    store = BlobStore(tmp_path / "a")
    with pytest.raises(BlobError, match=f"gives the layer {size} bytes, not the expected {size - 1}"):
        store.fetch(digest, [source], size=size - 1)
    small = BlobStore(tmp_path / "b", max_blob_bytes=10_000)
    with pytest.raises(BlobError, match="larger than the store's limit of 10000 bytes"):
        small.fetch(digest, [source])
    assert not store.has(digest) and not small.has(digest)


def test_wrong_partial_download_is_dropped(pylon: Pylon, oci_registry: Registry, tmp_path: Path) -> None:
    module, digest = unique_module(tmp_path, size=10_000)
    push(pylon, module, oci_registry.ref("resume/bad:v1"))
    store = BlobStore(tmp_path / "store")
    store.blob_dir.mkdir(parents=True, mode=0o700)
    store.root.chmod(0o700)
    partial = store.blob_dir / f".tmp-{digest.split(':')[1]}.partial"
    partial.write_bytes(b"garbage")
    source = oci_registry.ref("resume/bad:v1")
    with pytest.raises(BlobError, match="digest mismatch"):
        store.fetch(digest, [source])
    assert not partial.exists()
    assert store.fetch(digest, [source]).read_bytes() == module.read_bytes()


# -- auth ---------------------------------------------------------------------------------


def test_auth_with_docker_config_and_clear_401(pylon: Pylon, oci_registry_auth: Registry, tmp_path: Path) -> None:
    registry = oci_registry_auth
    assert registry.password is not None
    module, digest = unique_module(tmp_path)
    ref = registry.ref("private/m:v1")

    anonymous = with_env(pylon, DOCKER_CONFIG=str(tmp_path / "no-config"), HOME=str(tmp_path))
    result = anonymous.composectl("push", str(module), ref)
    assert result.returncode == 2
    assert "HTTP 401" in result.stderr and "wants credentials" in result.stderr, result.stderr

    config_dir = tmp_path / "docker"
    registry.docker_config(config_dir)
    authed = with_env(pylon, DOCKER_CONFIG=str(config_dir), PYLON_BLOB_DIR=str(tmp_path / "store"))
    manifest_digest = push(authed, module, ref)
    plan = tmp_path / "plan.json"
    authed.composectl("plan", "new", str(plan), check=True)
    authed.composectl("plan", "add", str(plan), "m", ref, check=True)
    assert json.loads(plan.read_text())["caps"]["m"]["sources"] == [registry.ref(f"private/m:v1@{manifest_digest}")]
    assert BlobStore(tmp_path / "store").has(digest)

    result = anonymous.composectl("plan", "add", str(plan), "m", ref)
    assert result.returncode == 2 and "wants credentials" in result.stderr

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "config.json").write_text(json.dumps(
        {"auths": {f"http://{registry.host}/v2/": {"auth": "cHlsb246bm9wZQ=="}}}))  # pylon:nope
    result = with_env(pylon, DOCKER_CONFIG=str(wrong)).composectl("plan", "add", str(plan), "m", ref)
    assert result.returncode == 2 and "refused the credentials" in result.stderr, result.stderr
    for output in (result.stdout, result.stderr):
        assert registry.password not in output and "nope" not in output


# -- signatures ------------------------------------------------------------------------------


def test_push_with_signature_and_plan_add_records_it(pylon: Pylon, oci_registry: Registry, tmp_path: Path) -> None:
    module, digest = unique_module(tmp_path)
    envelope = tmp_path / "m.sig.json"
    envelope.write_text(json.dumps({"payloadType": "application/vnd.in-toto+json",
                                    "payload": "e30=", "signatures": [{"keyid": "k", "sig": "AA=="}]}))
    sig_digest = "sha256:" + hashlib.sha256(envelope.read_bytes()).hexdigest()
    push(pylon, module, oci_registry.ref("signed/m:v1"), "--signature", str(envelope))
    sig_ref = oci_registry.ref(f"signed/m:{oci.signature_tag(digest)}")
    with oci.client(oci_registry.host) as client:
        art = client.resolve(oci.parse_reference(sig_ref))
    assert art is not None and art.layer_media_type == oci.DSSE_MEDIA_TYPE and art.layer_digest == sig_digest

    store_dir = tmp_path / "store"
    env = with_env(pylon, PYLON_BLOB_DIR=str(store_dir))
    plan = tmp_path / "plan.json"
    env.composectl("plan", "new", str(plan), check=True)
    result = env.composectl("plan", "add", str(plan), "m", oci_registry.ref("signed/m:v1"), check=True)
    assert sig_digest in result.stderr
    entry = json.loads(plan.read_text())["caps"]["m"]
    assert entry["signature"] == {"digest": sig_digest, "size": envelope.stat().st_size, "sources": [sig_ref]}
    store = BlobStore(store_dir)
    assert store.read_bytes(sig_digest) == envelope.read_bytes()
    # The signature's own source goes through the same generic fetch.
    fresh = BlobStore(tmp_path / "fresh")
    assert fresh.fetch(sig_digest, [sig_ref]).read_bytes() == envelope.read_bytes()
    with pytest.raises(BlobError, match="holds layer"):
        fresh.fetch(digest, [sig_ref])  # a signature tag never serves the cap


def test_plan_add_with_a_local_signature_file(pylon: Pylon, oci_registry: Registry, tmp_path: Path) -> None:
    module, _digest = unique_module(tmp_path)
    push(pylon, module, oci_registry.ref("localsig/m:v1"))
    envelope = tmp_path / "local.sig.json"
    envelope.write_text('{"payloadType": "x", "payload": "", "signatures": []}')
    plan = tmp_path / "plan.json"
    pylon.composectl("plan", "new", str(plan), check=True)
    pylon.composectl("plan", "add", str(plan), "m", oci_registry.ref("localsig/m:v1"),
                     "--signature", str(envelope), check=True)
    signature = json.loads(plan.read_text())["caps"]["m"]["signature"]
    assert signature == {"digest": "sha256:" + hashlib.sha256(envelope.read_bytes()).hexdigest(),
                         "size": envelope.stat().st_size, "sources": [envelope.resolve().as_uri()]}
    # With a file too (no registry involved).
    pylon.composectl("plan", "add", str(plan), "m2", str(module), "--signature", str(envelope), check=True)
    assert json.loads(plan.read_text())["caps"]["m2"]["signature"] == signature


def test_plan_add_refuses_a_signature_artifact_as_a_cap(pylon: Pylon, oci_registry: Registry, tmp_path: Path) -> None:
    module, digest = unique_module(tmp_path)
    envelope = tmp_path / "e.json"
    envelope.write_text("{}")
    push(pylon, module, oci_registry.ref("sigcap/m:v1"), "--signature", str(envelope))
    plan = tmp_path / "plan.json"
    pylon.composectl("plan", "new", str(plan), check=True)
    result = pylon.composectl("plan", "add", str(plan), "m",
                              oci_registry.ref(f"sigcap/m:{oci.signature_tag(digest)}"))
    assert result.returncode == 2 and "not a component" in result.stderr


# -- push refusals ---------------------------------------------------------------------------


def test_push_refuses_non_wasm_and_digest_references(pylon: Pylon, oci_registry: Registry, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    result = pylon.composectl("push", str(text), oci_registry.ref("refuse/x:v1"))
    assert result.returncode == 2 and "not a WebAssembly file" in result.stderr
    module, _ = unique_module(tmp_path)
    result = pylon.composectl("push", str(module), oci_registry.ref("refuse/x@sha256:" + "ab" * 32))
    assert result.returncode == 2 and "push needs a tag" in result.stderr
    result = pylon.composectl("push", str(module), "oci://127.0.0.1:1/refuse/x:v1")
    assert result.returncode == 2 and "connection refused" in result.stderr, result.stderr


def test_unreachable_registry_is_a_fetch_error_fast(tmp_path: Path) -> None:
    with pytest.raises(BlobError, match="connection refused"):
        BlobStore(tmp_path).fetch("sha256:" + "00" * 32, ["oci://127.0.0.1:1/x:v1"])


def test_missing_tag_names_the_reference(oci_registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(BlobError, match="no manifest nope"):
        BlobStore(tmp_path).fetch("sha256:" + "00" * 32, [oci_registry.ref("absent/x:nope")])


def test_composectl_run_imports_no_registry_client() -> None:
    # The fast path must not pay for oras/requests unless a plan needs a registry.
    import subprocess
    import sys

    code = ("import sys, pylon.cli.entry, pylon.blobstore, pylon.runtime; "
            "print(sorted(m for m in ('oras', 'requests', 'pylon.oci') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ}).stdout
    assert out.strip() == "[]"
