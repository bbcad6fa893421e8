"""A real OCI registry on loopback for tests and benchmarks (CNCF distribution, ``docker-registry``).

Fixtures (a pytest plugin: tests/conftest.py lists it in ``pytest_plugins``):

``oci_registry`` (session)
    A registry without auth. ``.host`` is ``"127.0.0.1:PORT"``; ``.ref("caps/x:v1")``
    gives ``"oci://127.0.0.1:PORT/caps/x:v1"``. Push with ``composectl push FILE
    registry.ref(...)``; use a repository name of your own per test, so tests
    do not see each other's tags.
``oci_registry_auth`` (session)
    The same with htpasswd (Basic) auth: ``.username``/``.password`` are valid,
    and ``.docker_config(folder)`` writes a Docker ``config.json`` with them
    there (point ``DOCKER_CONFIG`` at the folder).

Helpers on both (:class:`Registry`): ``put_blob(repo, data)`` and
``put_manifest(repo, tag, manifest)`` upload raw content (to craft bad
artifacts), ``blob_file(digest)`` is where the registry stores a blob's bytes
(overwrite it to make the registry serve wrong bytes).

Outside pytest (benchmarks): ``with Registry.start(tmp_dir) as registry: ...``.
:class:`CuttingProxy` sits in front of a registry and cuts the first blob
download short, recording each request's ``Range`` header.

The process is ``/usr/bin/docker-registry serve CONFIG`` with a private config
in a temporary folder; it listens on 127.0.0.1 only and is stopped at the end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CuttingProxy", "Registry", "REGISTRY_BIN", "oci_registry", "oci_registry_auth"]

REGISTRY_BIN = "/usr/bin/docker-registry"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """A running ``docker-registry`` on 127.0.0.1 (see the module docstring)."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, root: Path,
                 username: str | None, password: str | None, log: Path):
        self.process = process
        self.host = host
        self.root = root
        self.username = username
        self.password = password
        self.log = log

    @classmethod
    @contextmanager
    def start(cls, folder: Path, *, auth: bool = False) -> Iterator[Registry]:
        """Starts a registry keeping its files under ``folder``; stops it on leaving."""
        if not Path(REGISTRY_BIN).exists():
            raise RuntimeError(f"{REGISTRY_BIN} is missing: run scripts/install-system-deps.sh "
                               "(Debian package docker-registry)")
        folder.mkdir(parents=True, exist_ok=True)
        root = folder / "storage"
        username = password = None
        auth_yaml = ""
        if auth:
            import bcrypt

            username, password = "pylon", "s3cret-" + secrets.token_hex(6)
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
            (folder / "htpasswd").write_text(f"{username}:{hashed}\n")
            auth_yaml = (f"auth:\n  htpasswd:\n    realm: pylon-test\n"
                         f"    path: {folder / 'htpasswd'}\n")
        log = folder / "registry.log"
        for _attempt in range(3):  # the free port can be taken between the check and the bind
            port = _free_port()
            config = folder / "config.yml"
            config.write_text(
                "version: 0.1\n"
                "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
                f"http:\n  addr: 127.0.0.1:{port}\n  secret: {secrets.token_hex(16)}\n"
                + auth_yaml)
            with open(log, "ab") as log_file:
                process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log_file,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            registry = cls(process, f"127.0.0.1:{port}", root, username, password, log)
            if registry._wait_ready():
                break
            registry.stop()
        else:
            raise RuntimeError(f"docker-registry did not start; its log:\n{log.read_text()[-2000:]}")
        try:
            yield registry
        finally:
            registry.stop()

    def _wait_ready(self, timeout_s: float = 15.0) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.process.poll() is not None:
                return False
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).close()
                return True
            except urllib.error.HTTPError as exc:  # 401 with auth on: it answers
                exc.close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # -- names ---------------------------------------------------------------

    def ref(self, name: str) -> str:
        """``oci://HOST/<name>`` (name is ``repo:tag`` or ``repo@sha256:...``)."""
        return f"oci://{self.host}/{name}"

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps the bytes of blob ``digest`` (distribution's filesystem layout)."""
        hex_ = digest.split(":", 1)[1]
        return self.root / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2] / hex_ / "data"

    def docker_config(self, folder: Path) -> Path:
        """Writes ``folder/config.json`` with this registry's credentials (Docker's format)."""
        assert self.username and self.password
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "config.json"
        path.write_text(json.dumps({"auths": {self.host: {"auth": token}}}))
        return path

    # -- raw uploads (to craft what composectl push would never make) ----------

    def _request(self, method: str, url: str, data: bytes | None = None,
                 headers: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        if self.username and self.password:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return urllib.request.urlopen(request, timeout=10)

    def put_blob(self, repo: str, data: bytes) -> dict[str, Any]:
        """Uploads ``data`` to ``repo``; returns its descriptor fields (digest, size)."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self._request("POST", f"http://{self.host}/v2/{repo}/blobs/uploads/") as r:
            location = r.headers["Location"]
        if location.startswith("/"):
            location = f"http://{self.host}{location}"
        sep = "&" if "?" in location else "?"
        with self._request("PUT", f"{location}{sep}digest={digest}", data,
                           {"Content-Type": "application/octet-stream"}):
            pass
        return {"digest": digest, "size": len(data)}

    def put_manifest(self, repo: str, tag: str, manifest: dict[str, Any]) -> str:
        """Uploads an OCI image manifest under ``tag``; returns its digest."""
        body = json.dumps(manifest).encode()
        media_type = manifest.get("mediaType", "application/vnd.oci.image.manifest.v1+json")
        with self._request("PUT", f"http://{self.host}/v2/{repo}/manifests/{tag}", body,
                           {"Content-Type": media_type}):
            pass
        return "sha256:" + hashlib.sha256(body).hexdigest()


class CuttingProxy:
    """An HTTP proxy to a registry that cuts the first blob GET after ``cut_after`` bytes.

    Every request is forwarded (method, path, headers, body); ``ranges`` lists
    the ``Range`` header (or None) of each blob GET, in order. With
    ``honour_range=False`` the Range header is not passed on (a server that
    ignores it and answers 200 with the whole blob).
    """

    def __init__(self, upstream: str, cut_after: int, *, honour_range: bool = True):
        self.upstream = upstream
        self.cut_after = cut_after
        self.honour_range = honour_range
        self.ranges: list[str | None] = []
        self.cuts = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                dropped = {"host", "connection", "content-length"} | (set() if owner.honour_range else {"range"})
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                is_blob = self.command == "GET" and "/blobs/sha256:" in self.path
                if is_blob:
                    owner.ranges.append(self.headers.get("Range"))
                request = urllib.request.Request(f"http://{owner.upstream}{self.path}", data=body,
                                                 method=self.command, headers=headers)
                try:
                    response = urllib.request.urlopen(request, timeout=10)
                except urllib.error.HTTPError as exc:
                    response = exc
                with response:
                    data = response.read()
                    cut = is_blob and owner.cuts == 0 and len(data) > owner.cut_after
                    self.send_response(response.status)
                    for key, value in response.headers.items():
                        if key.lower() not in ("connection", "transfer-encoding"):
                            self.send_header(key, value)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    if cut:
                        owner.cuts += 1
                        self.wfile.write(data[:owner.cut_after])
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                    elif self.command != "HEAD":
                        self.wfile.write(data)
                self.close_connection = True

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _forward  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def ref(self, name: str) -> str:
        return f"oci://{self.host}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A loopback registry without auth, for the whole session."""
    with Registry.start(tmp_path_factory.mktemp("oci-registry")) as registry:
        yield registry


@pytest.fixture(scope="session")
def oci_registry_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A loopback registry with htpasswd (Basic) auth, for the whole session."""
    with Registry.start(tmp_path_factory.mktemp("oci-registry-auth"), auth=True) as registry:
        yield registry
