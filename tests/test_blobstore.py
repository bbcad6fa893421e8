"""Blob store tests against a real HTTP server on 127.0.0.1 and real files; nothing mocked."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopback_http import Server
from pylon.blobstore import BlobStore, check_digest, digest_bytes, digest_file
from pylon.errors import BlobError, BlobNotFound, DigestMismatch, FetchError

PYTHON_DIR = Path(__file__).resolve().parents[1] / "python"


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", timeout_s=10)


def _closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/blob"


def _files(store: BlobStore) -> list[str]:
    return sorted(p.name for p in store.blob_dir.iterdir()) if store.blob_dir.exists() else []


def _make_writable(path: Path) -> None:
    os.chmod(path, 0o644)


# -- put, has, path, ls ------------------------------------------------------

def test_put_bytes_and_file(store: BlobStore, tmp_path: Path) -> None:
    d = store.put_bytes(b"hello")
    assert d == digest_bytes(b"hello")
    assert store.has(d)
    assert store.path(d) == store.blob_dir / check_digest(d)
    assert store.path(d).read_bytes() == b"hello"
    assert store.put_bytes(b"hello") == d  # idempotent
    f = tmp_path / "x.wasm"
    f.write_bytes(b"x" * 3_000_000)
    d2 = store.put_file(f)
    assert d2 == digest_file(f)
    assert [(b.digest, b.size) for b in store.ls()] == sorted([(d, 5), (d2, 3_000_000)])
    assert _files(store) == sorted([check_digest(d), check_digest(d2)])  # no temp files left
    assert not os.access(store.path(d), os.W_OK) or os.geteuid() == 0  # stored read-only


def test_missing_and_malformed(store: BlobStore, tmp_path: Path) -> None:
    d = digest_bytes(b"absent")
    assert not store.has(d)
    with pytest.raises(BlobNotFound, match=f"blob {d} is not in the store"):
        store.path(d)
    with pytest.raises(BlobError, match="not a digest: 'sha256:abc'"):
        store.has("sha256:abc")
    with pytest.raises(BlobError, match="cannot read"):
        store.put_file(tmp_path / "nope")


def test_path_verifies_and_quarantines_corruption(store: BlobStore) -> None:
    d = store.put_bytes(b"good bytes")
    blob = store.path(d)
    _make_writable(blob)
    blob.write_bytes(b"evil bytes")  # same size
    with pytest.raises(DigestMismatch) as info:
        store.path(d)
    assert info.value.expected == d and info.value.found == digest_bytes(b"evil bytes")
    assert f"expected {d}, found {digest_bytes(b'evil bytes')}" in str(info.value)
    assert not store.has(d)
    assert len(list(store.quarantine_dir.iterdir())) == 1


def test_verification_cache_sees_changes_that_keep_size_and_mtime(store: BlobStore) -> None:
    d = store.put_bytes(b"AAAA")
    blob = store.path(d)
    store.path(d)  # cached now
    st = blob.stat()
    _make_writable(blob)
    with open(blob, "r+b") as f:
        f.write(b"BBBB")
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # hide the change from mtime
    with pytest.raises(DigestMismatch):
        store.path(d)


def test_read_bytes_verifies(store: BlobStore) -> None:
    d = store.put_bytes(b"payload")
    assert store.read_bytes(d) == b"payload"
    _make_writable(store.blob_path(d))
    store.blob_path(d).write_bytes(b"PAYLOAD")
    with pytest.raises(DigestMismatch):
        store.read_bytes(d)


# -- fetch -------------------------------------------------------------------

def test_fetch_http_with_progress(store: BlobStore, server: Server) -> None:
    body = os.urandom(3 * 1024 * 1024 + 7)
    d = digest_bytes(body)
    server.serve("/cap.wasm", body)
    seen: list[tuple[int, int | None]] = []
    path = store.fetch(d, [server.url("/cap.wasm")], progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == body
    assert seen[0] == (0, len(body)) and seen[-1] == (len(body), len(body))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    # Stored now: a second fetch does not touch the network.
    store.fetch(d, [server.url("/cap.wasm")])
    assert server.requests == ["/cap.wasm"]


def test_fetch_file_url(store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "dir with space" / "cap.wasm"
    src.parent.mkdir()
    src.write_bytes(b"from a file")
    d = digest_bytes(b"from a file")
    assert store.fetch(d, [src.as_uri()]).read_bytes() == b"from a file"


def test_wrong_bytes_served_is_digest_mismatch_and_nothing_stored(store: BlobStore, server: Server) -> None:
    want = digest_bytes(b"the real cap")
    server.serve("/cap.wasm", b"a tampered cap")
    with pytest.raises(DigestMismatch) as info:
        store.fetch(want, [server.url("/cap.wasm")])
    assert str(info.value) == (f"digest mismatch for {server.url('/cap.wasm')}: expected {want}, "
                               f"found {digest_bytes(b'a tampered cap')}")
    assert _files(store) == []
    assert not store.has(digest_bytes(b"a tampered cap"))


def test_404_is_fetch_error_and_next_source_is_tried(store: BlobStore, server: Server) -> None:
    body = b"cap bytes"
    d = digest_bytes(body)
    with pytest.raises(FetchError) as info:
        store.fetch(d, [server.url("/missing")])
    assert str(info.value) == f"cannot fetch {d} from {server.url('/missing')}: HTTP 404 Not Found"
    server.serve("/good", body)
    assert store.fetch(d, [server.url("/missing"), server.url("/good")]).read_bytes() == body
    assert server.requests == ["/missing", "/missing", "/good"]


def test_refused_connection_is_fetch_error_and_next_source_is_tried(store: BlobStore, server: Server) -> None:
    body = b"cap bytes"
    d = digest_bytes(body)
    dead = _closed_port_url()
    with pytest.raises(FetchError, match=f"cannot fetch {d} from {dead}: connection refused"):
        store.fetch(d, [dead])
    server.serve("/good", body)
    assert store.fetch(d, [dead, server.url("/good")]).read_bytes() == body


def test_all_sources_failing_lists_what_was_tried(store: BlobStore, server: Server, tmp_path: Path) -> None:
    d = digest_bytes(b"wanted")
    server.serve("/wrong", b"unwanted")
    dead = _closed_port_url()
    sources = [server.url("/wrong"), dead, (tmp_path / "gone.wasm").as_uri(), "ftp://h.example/x"]
    with pytest.raises(BlobNotFound) as info:
        store.fetch(d, sources)
    text = str(info.value)
    assert text.startswith(f"blob {d} is not stored and no source could deliver it; tried:\n")
    assert f"  - store: {store.blob_path(d)} (not present)" in text
    assert f"  - {server.url('/wrong')}: served other bytes ({digest_bytes(b'unwanted')})" in text
    assert f"  - {dead}: connection refused" in text
    assert f"  - {sources[2]}: no such file {tmp_path / 'gone.wasm'}" in text
    assert "  - ftp://h.example/x: unsupported scheme 'ftp'" in text
    assert [type(e) for _, e in info.value.attempts] == [DigestMismatch, FetchError, FetchError, FetchError]
    assert _files(store) == []


def test_no_sources_is_blob_not_found(store: BlobStore) -> None:
    d = digest_bytes(b"x")
    with pytest.raises(BlobNotFound, match="the plan gives no source for it"):
        store.fetch(d, [])


def test_truncated_body_is_fetch_error_and_nothing_stored(store: BlobStore, server: Server) -> None:
    body = b"y" * 100_000
    server.serve("/short", body, send_then=1000)
    with pytest.raises(FetchError, match="interrupted"):
        store.fetch(digest_bytes(body), [server.url("/short")])
    assert _files(store) == []


def test_oversized_blob_is_refused(tmp_path: Path, server: Server) -> None:
    store = BlobStore(tmp_path / "b", max_blob_bytes=1000)
    body = b"z" * 5000
    server.serve("/big", body)
    with pytest.raises(FetchError, match="larger than the store's limit of 1000 bytes"):
        store.fetch(digest_bytes(body), [server.url("/big")])
    assert _files(store) == []


def test_fetch_replaces_a_corrupt_stored_blob(store: BlobStore, server: Server) -> None:
    body = b"real"
    d = store.put_bytes(body)
    _make_writable(store.blob_path(d))
    store.blob_path(d).write_bytes(b"fake")
    server.serve("/real", body)
    assert store.fetch(d, [server.url("/real")]).read_bytes() == body
    assert len(list(store.quarantine_dir.iterdir())) == 1


_KILLED_FETCH = """
import sys
from pathlib import Path
from pylon.blobstore import BlobStore
BlobStore(Path(sys.argv[1])).fetch(sys.argv[2], [sys.argv[3]])
"""


def test_fetch_killed_midway_leaves_nothing_at_final_name(store: BlobStore, server: Server) -> None:
    body = os.urandom(4 * 1024 * 1024)
    d = digest_bytes(body)
    server.serve("/slow", body, send_then=2 * 1024 * 1024, stall=True)
    env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_FETCH, str(store.root), d, server.url("/slow")],
                            env=env)
    try:
        deadline = time.monotonic() + 30
        temps: list[Path] = []
        while time.monotonic() < deadline:
            temps = [p for p in store.blob_dir.glob(".tmp-*")] if store.blob_dir.exists() else []
            if temps and temps[0].stat().st_size >= 1024 * 1024:
                break
            assert proc.poll() is None, "the fetch ended before it could be killed"
            time.sleep(0.05)
        assert temps, "the fetch never started writing"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not store.has(d)
    assert [p.name.startswith(".tmp-") for p in store.blob_dir.iterdir()] == [True]
    report = store.gc(keep=set())
    assert report.temps_removed == 1
    assert _files(store) == []


# -- verify and gc -----------------------------------------------------------

def test_verify_reports_and_quarantines_bad_blobs(store: BlobStore) -> None:
    good = store.put_bytes(b"good")
    bad = store.put_bytes(b"bad!")
    _make_writable(store.blob_path(bad))
    store.blob_path(bad).write_bytes(b"BAD!")
    report = store.verify()
    assert [(b.digest, b.found) for b in report] == [(bad, digest_bytes(b"BAD!"))]
    assert report[0].moved_to.parent == store.quarantine_dir and report[0].moved_to.exists()
    assert [b.digest for b in store.ls()] == [good]
    assert store.verify() == []


def test_gc_keeps_what_it_is_told_and_live_temps(store: BlobStore) -> None:
    keep = store.put_bytes(b"keep me")
    drop = store.put_bytes(b"drop me")
    store.blob_dir.joinpath(".tmp-abc.999999999.0000").write_bytes(b"dead writer")
    live = store.blob_dir / f".tmp-abc.{os.getpid()}.0000"
    live.write_bytes(b"live writer")
    store.quarantine_dir.mkdir()
    store.quarantine_dir.joinpath("old").write_bytes(b"x")
    report = store.gc(keep={keep})
    assert report.removed == [drop] and report.freed_bytes == 7 and report.temps_removed == 1
    assert _files(store) == sorted([check_digest(keep), live.name])
    assert not store.quarantine_dir.exists()
    with pytest.raises(BlobError):
        store.gc(keep={"nope"})


def test_default_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PYLON_BLOB_DIR", raising=False)
    monkeypatch.setenv("PYLON_CACHE_DIR", str(tmp_path / "cache"))
    assert BlobStore().root == tmp_path / "cache" / "blobs"


def test_store_never_imports_rich() -> None:
    code = "import sys, pylon.blobstore, pylon.plan, pylon.trust; print('rich' in sys.modules, 'typer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(PYTHON_DIR)},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"
