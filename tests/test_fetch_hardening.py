"""Fetching trusts a source for bytes only (issue 9, finding 5).

Each test plays a hostile or broken source against a real BlobStore: FIFOs and
devices behind ``file://``, servers on 127.0.0.1 that drip, overflow, lie about
their size or redirect where they should not. Every server here listens on
loopback only, and every test is bounded in time (a source that would hang the
old code is unblocked by the test and the test fails).
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from loopback_http import Server
from pylon.blobstore import BlobStore, check_redirect, digest_bytes
from pylon.errors import BlobError, FetchError, StateError

PYTHON_DIR = Path(__file__).resolve().parents[1] / "python"

#: How long a test waits for a fetch that should fail fast before calling it hung.
HANG_S = 8.0

@pytest.fixture
def tls() -> Any:
    """A test CA (trustme) and a server context with a cert for 127.0.0.1 and localhost."""
    import trustme  # a test dependency (pyproject's test extra)

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


@pytest.fixture
def tls_server(tls: Any) -> Iterator[Server]:
    srv = Server(tls=tls[0])
    yield srv
    srv.close()


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", timeout_s=10, fetch_deadline_s=30)


def _leftovers(store: BlobStore) -> list[str]:
    return sorted(p.name for p in store.blob_dir.iterdir()) if store.blob_dir.exists() else []


def _fetch_bounded(fn: Callable[[], Any], *, unblock: Callable[[], None] | None = None) -> tuple[Any, float]:
    """Runs ``fn`` in a thread; returns (its exception or result, seconds taken).

    Fails the test if it takes more than HANG_S, after ``unblock`` has freed the thread.
    """
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 (handed back to the test)
            out["value"] = exc

    thread = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(HANG_S)
    took = time.monotonic() - start
    if thread.is_alive():
        if unblock is not None:
            unblock()
            thread.join(5)
        pytest.fail(f"the fetch hung for more than {HANG_S} s")
    return out["value"], took


# -- file:// sources must be regular files -----------------------------------

def test_fifo_source_fails_fast(store: BlobStore, tmp_path: Path) -> None:
    fifo = tmp_path / "cap.wasm"
    os.mkfifo(fifo)
    d = digest_bytes(b"whatever")

    def unblock() -> None:  # the old code sits in open() waiting for a writer: be one
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    error, took = _fetch_bounded(lambda: store.fetch(d, [fifo.as_uri()]), unblock=unblock)
    assert isinstance(error, FetchError), error
    assert str(error) == f"cannot fetch {d} from {fifo.as_uri()}: {fifo} is not a regular file (it is a FIFO)"
    assert took < 2
    assert _leftovers(store) == []


def test_dev_zero_fails_fast(tmp_path: Path) -> None:
    # The limit only keeps the old code from writing 4 GiB here before it fails.
    store = BlobStore(tmp_path / "blobs", max_blob_bytes=16 << 20)
    d = digest_bytes(b"whatever")
    error, took = _fetch_bounded(lambda: store.fetch(d, ["file:///dev/zero"]))
    assert isinstance(error, FetchError), error
    assert error.reason == "/dev/zero is not a regular file (it is a character device)"  # type: ignore[attr-defined]
    assert took < 2
    assert _leftovers(store) == []


def test_folder_and_socket_sources_are_not_regular_files(store: BlobStore, tmp_path: Path) -> None:
    d = digest_bytes(b"whatever")
    with pytest.raises(FetchError, match=f"{tmp_path} is not a regular file \\(it is a folder\\)"):
        store.fetch(d, [tmp_path.as_uri()])
    # AF_UNIX paths are short (108 bytes): bind in a short temp folder.
    with tempfile.TemporaryDirectory(dir="/tmp") as short, socket.socket(socket.AF_UNIX) as sock:
        path = Path(short) / "s"
        sock.bind(str(path))
        with pytest.raises(FetchError, match=f"{path} is not a regular file"):
            store.fetch(d, [path.as_uri()])


def test_put_file_refuses_a_fifo(store: BlobStore, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    error, _ = _fetch_bounded(lambda: store.put_file(fifo),
                              unblock=lambda: os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)))
    assert isinstance(error, BlobError) and "is not a regular file (it is a FIFO)" in str(error), error


def test_file_source_with_wrong_size_is_refused(store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "cap.wasm"
    src.write_bytes(b"x" * 100)
    d = digest_bytes(b"x" * 100)
    with pytest.raises(FetchError, match="the file has 100 bytes, not the expected 99"):
        store.fetch(d, [src.as_uri()], size=99)
    seen: list[tuple[int, int | None]] = []
    assert store.fetch(d, [src.as_uri()], size=100, progress=lambda *a: seen.append(a)).read_bytes() == b"x" * 100
    assert seen[0] == (0, 100) and seen[-1] == (100, 100)


# -- an overall deadline -------------------------------------------------------

def test_drip_server_fails_by_the_deadline(tmp_path: Path, server: Server) -> None:
    body = b"d" * 200
    server.drip("/drip", body)  # a byte every 0.2 s: never idle long enough for timeout_s
    store = BlobStore(tmp_path / "blobs", timeout_s=10, fetch_deadline_s=1.0)
    d = digest_bytes(body)
    error, took = _fetch_bounded(lambda: store.fetch(d, [server.url("/drip")]), unblock=server.stop.set)
    assert isinstance(error, FetchError), error
    assert str(error) == f"cannot fetch {d} from {server.url('/drip')}: timed out after 1 s (the fetch deadline)"
    assert 0.9 < took < 2.5
    assert _leftovers(store) == []


def test_headers_dripped_fail_by_the_deadline(tmp_path: Path, server: Server) -> None:
    # http.client reads headers in a loop of recv calls it owns; the deadline must still hold.
    server.drip("/slow-headers", b"x", headers_too=True)
    store = BlobStore(tmp_path / "blobs", timeout_s=10, fetch_deadline_s=1.0)
    error, took = _fetch_bounded(lambda: store.fetch(digest_bytes(b"x"), [server.url("/slow-headers")]),
                                 unblock=server.stop.set)
    assert isinstance(error, FetchError), error
    assert "timed out after 1 s" in str(error)
    assert 0.9 < took < 2.5


def test_tls_handshake_dripped_fails_by_the_deadline(tmp_path: Path) -> None:
    # Announce a 16 KiB handshake record, then drip it: every recv gets a byte
    # long before timeout_s. The handshake must still end at the deadline.
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)  # the ClientHello
                conn.sendall(b"\x16\x03\x03\x40\x00")
                end = time.monotonic() + 15
                while not stop.is_set() and time.monotonic() < end:
                    try:
                        conn.sendall(b"\x00")
                    except OSError:
                        return
                    time.sleep(0.2)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/x"
        store = BlobStore(tmp_path / "blobs", timeout_s=10, fetch_deadline_s=1.0)
        try:
            error, took = _fetch_bounded(lambda: store.fetch(digest_bytes(b"x"), [url]), unblock=stop.set)
        finally:
            stop.set()
            thread.join(5)
    assert isinstance(error, FetchError), error
    assert error.reason == "timed out after 1 s (the fetch deadline)"  # type: ignore[attr-defined]
    assert 0.9 < took < 2.5


def test_silent_server_fails_by_the_read_timeout(tmp_path: Path) -> None:
    # A server that accepts and says nothing: the per-read timeout ends it, and says so.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        store = BlobStore(tmp_path / "blobs", timeout_s=0.5, fetch_deadline_s=30)
        error, took = _fetch_bounded(lambda: store.fetch(digest_bytes(b"x"), [url]))
    assert isinstance(error, FetchError), error
    assert error.reason == "timed out: nothing arrived for 0.5 s"  # type: ignore[attr-defined]
    assert took < 3


# -- the expected size ----------------------------------------------------------

def test_more_bytes_than_size_stops_and_leaves_no_temp_file(store: BlobStore, server: Server) -> None:
    server.endless("/endless")
    d = digest_bytes(b"\0" * 1000)
    error, took = _fetch_bounded(lambda: store.fetch(d, [server.url("/endless")], size=1000),
                                 unblock=server.stop.set)
    assert isinstance(error, FetchError), error
    assert str(error) == f"cannot fetch {d} from {server.url('/endless')}: more than the expected 1000 bytes arrived"
    assert took < 2
    assert _leftovers(store) == []


def test_endless_stream_without_size_stops_at_the_store_limit(tmp_path: Path, server: Server) -> None:
    server.endless("/endless")
    store = BlobStore(tmp_path / "blobs", max_blob_bytes=1 << 20)
    error, took = _fetch_bounded(lambda: store.fetch(digest_bytes(b"x"), [server.url("/endless")]),
                                 unblock=server.stop.set)
    assert isinstance(error, FetchError) and "larger than the store's limit of 1048576 bytes" in str(error), error
    assert _leftovers(store) == []


def test_content_length_other_than_size_is_refused_before_reading(store: BlobStore, server: Server) -> None:
    body = b"b" * 5000
    d = digest_bytes(body)
    server.serve("/big", body)
    with pytest.raises(FetchError) as info:
        store.fetch(d, [server.url("/big")], size=1000)
    assert info.value.reason == "the server announces 5000 bytes (Content-Length), not the expected 1000"  # type: ignore[attr-defined]
    with pytest.raises(FetchError, match="announces 5000 bytes .*, not the expected 9000"):
        store.fetch(d, [server.url("/big")], size=9000)
    assert _leftovers(store) == []


def test_fewer_bytes_than_size_fail(store: BlobStore, server: Server) -> None:
    body = b"s" * 500
    server.serve("/short", body, length=None)  # no Content-Length: ends when the server closes
    with pytest.raises(FetchError, match="interrupted: got 500 of the expected 1000 bytes"):
        store.fetch(digest_bytes(b"s" * 1000), [server.url("/short")], size=1000)
    assert _leftovers(store) == []


def test_size_is_the_progress_total_and_a_right_size_fetches(store: BlobStore, server: Server) -> None:
    body = os.urandom(300_000)
    server.serve("/nolength", body, length=None)
    seen: list[tuple[int, int | None]] = []
    path = store.fetch(digest_bytes(body), [server.url("/nolength")], size=len(body),
                       progress=lambda *a: seen.append(a))
    assert path.read_bytes() == body
    assert seen[0] == (0, len(body)) and seen[-1] == (len(body), len(body))


def _chunked(h: BaseHTTPRequestHandler, chunks: Iterator[bytes]) -> None:
    h.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    for chunk in chunks:
        h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    h.wfile.write(b"0\r\n\r\n")


def test_chunked_body_is_fetched_and_bounded_by_size(store: BlobStore, server: Server) -> None:
    body = os.urandom(200_000)
    server.routes["/chunked"] = lambda h: _chunked(h, (body[i:i + 7000] for i in range(0, len(body), 7000)))

    def endless() -> Iterator[bytes]:
        end = time.monotonic() + 30
        while not server.stop.is_set() and time.monotonic() < end:
            yield b"\0" * 4096

    server.routes["/chunked-endless"] = lambda h: _chunked(h, endless())
    assert store.fetch(digest_bytes(body), [server.url("/chunked")], size=len(body)).read_bytes() == body
    error, took = _fetch_bounded(lambda: store.fetch(digest_bytes(b"\0" * 10_000), [server.url("/chunked-endless")],
                                                     size=10_000), unblock=server.stop.set)
    assert isinstance(error, FetchError) and error.reason == "more than the expected 10000 bytes arrived", error  # type: ignore[attr-defined]
    assert took < 2
    assert _leftovers(store) == [digest_bytes(body).split(":")[1]]


def test_size_over_the_store_limit_is_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", max_blob_bytes=10)
    with pytest.raises(FetchError, match="its size, 11 bytes, is more than the store's limit of 10 bytes"):
        store.fetch(digest_bytes(b"x"), ["http://127.0.0.1:9/x"], size=11)
    with pytest.raises(BlobError, match="size must be a whole number of bytes"):
        store.fetch(digest_bytes(b"x"), ["http://127.0.0.1:9/x"], size=-1)


# -- redirects ----------------------------------------------------------------

def test_http_to_http_redirect_on_loopback_is_followed(store: BlobStore, server: Server) -> None:
    body = b"redirected bytes"
    other = Server()
    try:
        other.serve("/blob", body)
        server.redirect("/abs", other.url("/blob", host="localhost"))
        server.redirect("/rel", "blob")  # relative: resolved against the current URL
        server.serve("/blob", body)
        d = digest_bytes(body)
        assert store.fetch(d, [server.url("/abs")]).read_bytes() == body
        store.gc(keep=set())
        assert store.fetch(d, [server.url("/rel")]).read_bytes() == body
        assert server.requests == ["/abs", "/rel", "/blob"] and other.requests == ["/blob"]
    finally:
        other.close()


def test_redirect_to_file_is_refused(store: BlobStore, server: Server, tmp_path: Path) -> None:
    local = tmp_path / "secret"
    local.write_bytes(b"local bytes")
    d = digest_bytes(b"local bytes")
    server.redirect("/steal", local.as_uri())
    with pytest.raises(FetchError) as info:
        store.fetch(d, [server.url("/steal")])
    assert info.value.reason == (  # type: ignore[attr-defined]
        "refused a redirect from http to file (redirects may go to https only, not to file): "
        f"{server.url('/steal')} -> {local.as_uri()}")
    assert not store.has(d)


def test_redirect_to_ftp_is_refused(store: BlobStore, server: Server) -> None:
    server.redirect("/ftp", "ftp://127.0.0.1:9/cap.wasm")
    with pytest.raises(FetchError, match="refused a redirect from http to ftp"):
        store.fetch(digest_bytes(b"x"), [server.url("/ftp")])


def test_more_than_five_redirects_are_refused(store: BlobStore, server: Server) -> None:
    body = b"at the end of the chain"
    server.serve("/blob", body)
    for i in range(6):
        server.redirect(f"/r{i}", f"/r{i + 1}" if i < 5 else "/blob")
    d = digest_bytes(body)
    # /r1 .. /r5 -> /blob is five redirects: followed.
    assert store.fetch(d, [server.url("/r1")]).read_bytes() == body
    store.gc(keep=set())
    server.requests.clear()
    with pytest.raises(FetchError) as info:
        store.fetch(d, [server.url("/r0")])
    assert info.value.reason == f"too many redirects: more than 5 (the next one to {server.url('/blob')})"  # type: ignore[attr-defined]
    assert server.requests == ["/r0", "/r1", "/r2", "/r3", "/r4", "/r5"]
    assert not store.has(d)


def test_https_fetch_with_a_test_ca(tmp_path: Path, tls: Any, tls_server: Server, server: Server) -> None:
    body = b"over tls"
    d = digest_bytes(body)
    tls_server.serve("/blob", body)
    tls_server.redirect("/hop", "/blob")
    server.redirect("/upgrade", tls_server.url("/blob"))  # http -> https is always fine
    store = BlobStore(tmp_path / "blobs", ssl_context=tls[1])
    assert store.fetch(d, [tls_server.url("/hop")]).read_bytes() == body
    store.gc(keep=set())
    assert store.fetch(d, [server.url("/upgrade")]).read_bytes() == body
    # The system's CAs do not know the test CA: refused, and said so.
    stranger = BlobStore(tmp_path / "other")
    with pytest.raises(FetchError, match="TLS certificate refused: .*(unable to get local issuer|self.signed)"):
        stranger.fetch(d, [tls_server.url("/blob")])


def test_https_to_http_redirect_is_refused(tmp_path: Path, tls: Any, tls_server: Server, server: Server) -> None:
    body = b"served in the clear"
    d = digest_bytes(body)
    server.serve("/blob", body)  # the right bytes wait at the http end: the refusal is the scheme's
    tls_server.redirect("/down", server.url("/blob"))
    store = BlobStore(tmp_path / "blobs", ssl_context=tls[1])
    with pytest.raises(FetchError) as info:
        store.fetch(d, [tls_server.url("/down")])
    assert info.value.reason == (  # type: ignore[attr-defined]
        "refused a redirect from https to http (https may not redirect to http): "
        f"{tls_server.url('/down')} -> {server.url('/blob')}")
    assert server.requests == []
    assert not store.has(d)


@pytest.mark.parametrize(("current", "target", "allowed"), [
    ("http://127.0.0.1:8000/a", "http://127.0.0.1:9000/b", True),
    ("http://127.5.6.7/a", "http://localhost/b", True),
    ("http://[::1]:8000/a", "http://127.0.0.1/b", True),
    ("http://mirror.example/a", "https://cdn.example/b", True),
    ("https://mirror.example/a", "https://127.0.0.1/b", True),
    ("http://mirror.example/a", "http://127.0.0.1/b", False),  # off loopback to loopback
    ("http://127.0.0.1/a", "http://192.0.2.7/b", False),  # loopback to off loopback
    ("http://mirror.example/a", "http://cdn.example/b", False),
    ("https://127.0.0.1/a", "http://127.0.0.1/b", False),  # a downgrade, even on loopback
    ("https://mirror.example/a", "file:///etc/passwd", False),
    ("http://127.0.0.1/a", "ftp://127.0.0.1/b", False),
    ("http://127.0.0.1/a", "data:,hello", False),
    ("http://127.0.0.1/a", "https:///nohost", False),
])
def test_redirect_policy(current: str, target: str, allowed: bool) -> None:
    if allowed:
        check_redirect(current, target)
    else:
        with pytest.raises(BlobError, match="refused a redirect from") as info:
            check_redirect(current, target)
        assert current in str(info.value) and target in str(info.value)


# -- the store's own folders ------------------------------------------------------

def test_store_folders_are_created_private(tmp_path: Path, server: Server) -> None:
    store = BlobStore(tmp_path / "new" / "blobs")
    d = store.put_bytes(b"good")
    blob = store.blob_path(d)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"evil")
    with pytest.raises(BlobError):
        store.path(d)  # quarantined
    for folder in (store.root, store.blob_dir, store.quarantine_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


@pytest.mark.parametrize("which", ["root", "blob_dir"])
def test_group_writable_blob_folder_is_refused(tmp_path: Path, server: Server, which: str) -> None:
    store = BlobStore(tmp_path / "blobs")
    d = store.put_bytes(b"stored")
    folder = store.root if which == "root" else store.blob_dir
    os.chmod(folder, 0o770)
    with pytest.raises(StateError, match=f"refusing to use {folder}: it is writable by other users"):
        store.put_bytes(b"more")
    for use in (store.path, store.read_bytes):
        with pytest.raises(StateError, match="writable by other users"):
            use(d)
    with pytest.raises(StateError, match="writable by other users"):
        store.verify()
    with pytest.raises(StateError, match="writable by other users"):
        store.gc(keep={d})
    assert store.has(d)
    body = b"fetched"
    server.serve("/blob", body)
    with pytest.raises(StateError, match="writable by other users"):
        store.fetch(digest_bytes(body), [server.url("/blob")])
    assert server.requests == []


def test_store_does_not_import_network_modules() -> None:
    code = ("import sys, pylon.blobstore; "
            "print(sorted(m for m in ('http.client', 'ssl', 'urllib.request', 'threading') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(PYTHON_DIR)},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_many_dead_addresses_share_one_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that resolves to many addresses that never answer must not multiply the
    deadline (socket.create_connection gives each address the full timeout)."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue: further SYNs are dropped, connect() hangs
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    time.sleep(0.2)
    real = socket.getaddrinfo

    def many(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "evil.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))] * 8
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", many)
    store = BlobStore(tmp_path / "blobs", timeout_s=1.0, fetch_deadline_s=2.0)
    started = time.monotonic()
    try:
        with pytest.raises(FetchError):
            store.fetch("sha256:" + "0" * 64, [f"http://evil.test:{port}/x"])
    finally:
        for s in fillers:
            s.close()
        srv.close()
    assert time.monotonic() - started < 4.0
