"""The pinned download helper (pylon.build.download): URL + sha256, atomic, cached by hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from loopback_http import Server
from pylon.build import download
from pylon.build.download import Pin
from pylon.errors import BuildError

BODY = b"int vendored(void) { return 42; }\n" * 100
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYLON_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _leftovers(cache: Path) -> list[str]:
    root = cache / "downloads"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_file_url_is_fetched_once_and_cached_by_hash(tmp_path: Path, cache: Path) -> None:
    source = tmp_path / "lib.c"
    source.write_bytes(BODY)
    got = download.fetch(Pin(sha256=SHA, url=source.as_uri()))
    assert got == cache / "downloads" / SHA / "lib.c" and got.read_bytes() == BODY
    source.unlink()  # offline from now on: the cache answers
    assert download.fetch(Pin(sha256=SHA, url=source.as_uri())) == got
    assert (cache.stat().st_mode & 0o777) == 0o700  # what is cached here gets compiled


def test_http_url(server: Server, cache: Path) -> None:
    server.serve("/lib.c", BODY)
    got = download.fetch(Pin(sha256=SHA, url=server.url("/lib.c")))
    assert got.read_bytes() == BODY
    assert server.requests == ["/lib.c"]
    download.fetch(Pin(sha256=SHA, url=server.url("/lib.c")))
    assert server.requests == ["/lib.c"]  # the second fetch never left the cache


def test_wrong_bytes_are_refused_and_nothing_is_kept(server: Server, cache: Path) -> None:
    server.serve("/lib.c", BODY + b"/* tampered */\n")
    with pytest.raises(BuildError, match=f"lib.c has sha256 [0-9a-f]{{64}}, but the manifest pins {SHA}"):
        download.fetch(Pin(sha256=SHA, url=server.url("/lib.c"), pinned_by="the manifest"))
    assert _leftovers(cache) == []


def test_a_damaged_cached_file_is_fetched_again(server: Server, cache: Path) -> None:
    server.serve("/lib.c", BODY)
    got = download.fetch(Pin(sha256=SHA, url=server.url("/lib.c")))
    got.write_bytes(b"bit rot")
    again = download.fetch(Pin(sha256=SHA, url=server.url("/lib.c")))
    assert again.read_bytes() == BODY and len(server.requests) == 2


@pytest.mark.parametrize("route", ["missing", "truncated", "endless"])
def test_broken_sources_are_build_errors(server: Server, cache: Path, route: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    if route == "truncated":
        server.serve("/x", BODY, send_then=10)
    elif route == "endless":
        monkeypatch.setattr(download, "MAX_BYTES", 1 << 20)
        server.endless("/x")
    with pytest.raises(BuildError, match=r"cannot download|sent more than 1048576 bytes|has sha256"):
        download.fetch(Pin(sha256=SHA, url=server.url("/x")))
    assert _leftovers(cache) == []


def test_a_missing_file_url() -> None:
    with pytest.raises(BuildError, match="cannot read file:///nowhere/lib.c"):
        download.fetch(Pin(sha256=SHA, url="file:///nowhere/lib.c"))


@pytest.mark.parametrize("pin, message", [
    (dict(sha256="00", url="file:///x"), "not 64 lowercase hex digits"),
    (dict(sha256=SHA.upper(), url="file:///x"), "not 64 lowercase hex digits"),
    (dict(sha256=SHA), "exactly one of a URL and a registry requirement"),
    (dict(sha256=SHA, url="file:///x", pypi="a==1"), "exactly one of a URL and a registry requirement"),
    (dict(sha256=SHA, url="ftp://host/x"), "only https://, http:// and file:/// URLs"),
    (dict(sha256=SHA, url="file://host/x"), "only https://, http:// and file:/// URLs"),
    (dict(sha256=SHA, pypi="zcbor"), "not a requirement pinned with =="),
    (dict(sha256=SHA, pypi="zcbor>=0.9"), "not a requirement pinned with =="),
    (dict(sha256=SHA, pypi="zcbor==0.9; rm -rf /"), "not a requirement pinned with =="),
])
def test_bad_pins_are_refused_before_anything_is_fetched(pin: dict, message: str) -> None:
    with pytest.raises(BuildError, match=message):
        Pin(**pin)


def test_registry_sdist_through_pip(cache: Path) -> None:
    # The real thing, as the builds use it: zcbor's sdist, pinned once for every cap in caps/_sdk/sdk.toml.
    pin = Pin(sha256="c04918392e2dbb14c6f038d776e2ea6b09c34ba1028b045aadd7c3a95616bc38", pypi="zcbor==0.9.1")
    got = download.fetch(pin)
    assert got.name == "zcbor-0.9.1.tar.gz" and got.parent.name == pin.sha256
