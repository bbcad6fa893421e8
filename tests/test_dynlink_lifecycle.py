"""Fetch on first use over real HTTP, the compile cache, and swapping a provider."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, Pylon


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str, list[str]]]:
    """A real HTTP server on loopback serving a folder; yields (folder, base URL, request log)."""
    folder = tmp_path / "www"
    folder.mkdir()
    requests: list[str] = []
    handler = functools.partial(type("H", (_CountingHandler,), {"requests": requests}), directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        thread.join()


def fresh_home(pylon: Pylon, tmp_path: Path) -> Pylon:
    """Same config (trust), but an empty blob store holding only the guest."""
    env = dict(pylon.env, PYLON_BLOB_DIR=str(tmp_path / "blobs"))
    fresh = Pylon(env, pylon.home)
    stock = json.loads((Path(pylon.env["PYLON_CONFIG_DIR"]) / "stock.json").read_text())
    guest = Path(pylon.env["PYLON_BLOB_DIR"]) / "sha256" / stock["guest"].split(":")[1]
    fresh.composectl("blob", "put", str(guest), check=True)
    return fresh


def test_cap_is_fetched_over_http_on_first_use_only(pylon: Pylon, tmp_path: Path, http_dir) -> None:
    folder, base, requests = http_dir
    doc = json.loads(pylon.default_plan.read_text())
    entry = doc["caps"]["crc32c"]
    blob = Path(pylon.env["PYLON_BLOB_DIR"]) / "sha256" / entry["digest"].split(":")[1]
    shutil.copyfile(blob, folder / "crc32c.wasm")
    entry["sources"] = [f"{base}/crc32c.wasm"]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(doc))
    fresh = fresh_home(pylon, tmp_path)

    assert fresh.run_code("print('no cap')", plan=plan).returncode == 0
    assert requests == []  # never imported, never fetched

    result = fresh.run_code("import _crc32c_dynlink_cap as c; print(hex(c.crc32c(b'123456789')))", plan=plan)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0xe3069283"
    assert requests == ["/crc32c.wasm"]

    assert fresh.run_code("import _crc32c_dynlink_cap", plan=plan).returncode == 0
    assert requests == ["/crc32c.wasm"]  # stored now: not fetched again


def test_unreachable_source_is_a_clear_guest_error(pylon: Pylon, tmp_path: Path, http_dir) -> None:
    _folder, base, _requests = http_dir
    doc = json.loads(pylon.default_plan.read_text())
    doc["caps"]["crc32c"]["sources"] = [f"{base}/missing.wasm", "http://127.0.0.1:9/refused.wasm"]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(doc))
    fresh = fresh_home(pylon, tmp_path)
    result = fresh.run_code("import _crc32c_dynlink_cap", plan=plan)
    assert result.returncode == 1
    assert "CapNotFound" in result.stderr and "missing.wasm" in result.stderr and "refused.wasm" in result.stderr


def test_second_run_compiles_nothing(pylon: Pylon) -> None:
    assert pylon.run_code("import _crc32c_dynlink_cap").returncode == 0
    # A second process sees both the guest and the cap in the on-disk cache.
    check = pylon.composectl("cache", "status")
    assert check.returncode == 0, check.stderr
    status = dict(line.split(": ", 1) for line in check.stdout.splitlines())
    assert status["guest"] == "compiled (cached)"
    assert status["crc32c"] == "compiled (cached)"


def test_swapping_a_provider_needs_no_guest_rebuild(pylon: Pylon, tmp_path: Path) -> None:
    # A second build of crc32c: same C, a shim that says which build it is.
    variant = tmp_path / "crc32c-b"
    shutil.copytree(REPO / "caps" / "crc32c", variant)
    with open(variant / "shim.py", "a") as f:
        f.write("\nBUILD = 'b'\n")
    built = pylon.composectl("cap", "build", str(variant), check=True)
    digest_b, path_b = built.stdout.split()
    plan = tmp_path / "plan.json"
    plan.write_text(pylon.default_plan.read_text())
    code = "import pylon_guest.caps.crc32c as c; print(getattr(c, 'BUILD', 'a'), hex(c.crc32c(b'123456789')))"
    assert pylon.run_code(code, plan=plan).stdout.split() == ["a", "0xe3069283"]

    # Edit the plan, land the blob, trust it, restart: the same guest uses build b.
    pylon.composectl("plan", "add", str(plan), "crc32c", path_b, check=True)
    pylon.composectl("trust", "allow", "crc32c", digest_b, check=True)
    result = pylon.run_code(code, plan=plan)
    assert result.stdout.split() == ["b", "0xe3069283"], result.stderr
