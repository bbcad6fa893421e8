"""Pinned downloads: every third-party file a build uses, fetched once and checked.

A :class:`Pin` names where the bytes come from and the sha256 they must have,
as pip's ``--require-hashes`` mode does: a URL (``https://``, ``http://``,
``file:///``), or a registry package fetched with pip (its source
distribution, or with ``wheel=True`` its pure-Python wheel). :func:`fetch`
returns the file in the download cache::

    <cache root>/downloads/<sha256>/<file name>

The cache is keyed by the pinned hash, so a file is downloaded once per pin,
later builds work offline, and a changed pin can never pick up stale bytes.
Bytes are written to a private temporary file beside their final place,
hashed, and renamed into place only when they match: an interrupted or
tampered download never looks finished, and a cached file is hashed again on
every use (a damaged one is fetched anew).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pylon import paths
from pylon.build import toolchain
from pylon.errors import BuildError

__all__ = ["MAX_BYTES", "Pin", "cached", "downloads_root", "fetch"]

#: No pinned file is anywhere near this; it stops a wrong URL from filling the disk.
MAX_BYTES = 1 << 30
#: Seconds a URL may stall before the download is abandoned.
TIMEOUT = 60
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REQUIREMENT = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==[A-Za-z0-9][A-Za-z0-9._+!-]*")
#: The Python the guest runs: a wheel fetched for the guest must install there.
GUEST_PYTHON = "3.14"


@dataclass(frozen=True)
class Pin:
    """Where a file comes from and the sha256 it must have.

    Exactly one of ``url`` (``https://``, ``http://`` or ``file:///``) and
    ``pypi`` (a requirement pinned with ``==``) is set. ``what`` names the file
    in messages; ``pinned_by`` says where the pin is written, so a mismatch
    says what to look at.
    """

    sha256: str
    url: str | None = None
    pypi: str | None = None
    wheel: bool = False  # with pypi: the pure-Python wheel instead of the sdist
    what: str = ""
    pinned_by: str = "the build"

    def __post_init__(self) -> None:
        if not _SHA256.fullmatch(self.sha256):
            raise BuildError(f"{self.label}: the pinned sha256 {self.sha256!r} is not 64 lowercase hex digits")
        if (self.url is None) == (self.pypi is None):
            raise BuildError(f"{self.label}: pin exactly one of a URL and a registry requirement")
        if self.pypi is not None and not _REQUIREMENT.fullmatch(self.pypi):
            raise BuildError(f"{self.label}: {self.pypi!r} is not a requirement pinned with == (like zcbor==0.9.1)")
        if self.url is not None and not self.url.startswith(("https://", "http://", "file:///")):
            raise BuildError(f"{self.label}: {self.url!r}: only https://, http:// and file:/// URLs are fetched")

    @property
    def label(self) -> str:
        return self.what or self.pypi or self.url or "download"


def downloads_root() -> Path:
    """``<cache root>/downloads``."""
    return paths.cache_root() / "downloads"


def cached(sha256: str) -> Path | None:
    """The cached file of this sha256, hashed again now, or ``None``.

    A file that no longer hashes to its name (damaged on disk) is removed,
    so the next :func:`fetch` downloads it anew."""
    if not _SHA256.fullmatch(sha256):
        return None
    paths.private_dir(paths.cache_root())  # what is cached here is compiled and trusted
    folder = downloads_root() / sha256
    for file in sorted(folder.iterdir()) if folder.is_dir() else []:
        if file.name.startswith(".") or not file.is_file():
            continue
        if toolchain.sha256_file(file) == sha256:
            return file
        file.unlink()
    return None


def fetch(pin: Pin) -> Path:
    """The pinned file, from the cache or downloaded now.

    Raises:
        BuildError: the source cannot be reached, or its bytes do not hash to
            the pin (nothing is kept then).
    """
    hit = cached(pin.sha256)
    if hit is not None:
        return hit
    folder = downloads_root() / pin.sha256
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=folder))
    try:
        got = _from_url(pin, staging) if pin.url is not None else _from_registry(pin, staging)
        found = toolchain.sha256_file(got)
        if found != pin.sha256:
            raise BuildError(f"{pin.label}: {got.name} has sha256 {found}, but {pin.pinned_by} pins {pin.sha256}")
        final = folder / got.name
        os.replace(got, final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a failed first download leaves no empty folder


def _from_url(pin: Pin, staging: Path) -> Path:
    assert pin.url is not None
    parsed = urllib.parse.urlsplit(pin.url)
    name = Path(urllib.parse.unquote(parsed.path)).name or "download"
    out = staging / name
    if parsed.scheme == "file":
        source = Path(urllib.parse.unquote(parsed.path))
        try:
            if source.stat().st_size > MAX_BYTES:
                raise BuildError(f"{pin.label}: {pin.url} is larger than {MAX_BYTES} bytes")
            shutil.copyfile(source, out)
        except OSError as exc:
            raise BuildError(f"{pin.label}: cannot read {pin.url}: {exc.strerror or exc}") from exc
        return out
    print(f"pylon: downloading {pin.label} (once; cached by its sha256)", file=sys.stderr)
    request = urllib.request.Request(pin.url, headers={"User-Agent": "pylon-build"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response, open(out, "wb") as f:
            total = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                total += len(block)
                if total > MAX_BYTES:
                    raise BuildError(f"{pin.label}: {pin.url} sent more than {MAX_BYTES} bytes")
                f.write(block)
    except BuildError:
        raise
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, HTTPError: OSErrors
        raise BuildError(f"{pin.label}: cannot download {pin.url}: {exc}") from exc
    return out


def _from_registry(pin: Pin, staging: Path) -> Path:
    """``pip download`` of exactly the pinned distribution, no dependencies."""
    assert pin.pypi is not None
    project = pin.pypi.split("==", 1)[0]
    if pin.wheel:
        kind = ["--only-binary", ":all:", "--platform", "any", "--python-version", GUEST_PYTHON]
    else:
        # The source distribution of this one project (where C sources live);
        # pip may fetch wheels of its build backend to read its metadata.
        kind = ["--no-binary", project]
    print(f"pylon: downloading {pin.pypi} ({'wheel' if pin.wheel else 'source distribution'}, once)",
          file=sys.stderr)
    toolchain.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
                   *kind, "--dest", str(staging), pin.pypi], what=f"pip download {pin.pypi} ({pin.label})")
    files = [p for p in staging.iterdir() if p.is_file()]
    if len(files) != 1:
        raise BuildError(f"pip download {pin.pypi} gave {sorted(p.name for p in files)}, expected one file")
    return files[0]
