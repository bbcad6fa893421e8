"""Third-party C a cap's faces share: a ``[vendor.<name>]`` table, fetched and unpacked once.

The archive comes through the pinned download helper (:mod:`pylon.build.download`:
a registry sdist or a URL, checked against the manifest's sha256) and is unpacked
into ``<build root>/vendor-<name>-<sha>[-<edits>]``; ``@<name>/...`` in a
manifest is a path under its ``root`` folder there. The manifest's edits to the
pristine tree (``cut_after``, then ``patches``, unified diffs applied with GNU
patch the way distributions carry theirs) are part of the folder's name, so an
edited patch never reuses a tree made with the old one. A ``.complete`` marker,
written last, makes later builds (of any face) reuse the folder. Vendored code
is never committed; the patches are, beside the manifest that names them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pylon import paths
from pylon.build import download
from pylon.errors import BuildError

__all__ = ["Vendor", "fetch_vendor"]


@dataclass(frozen=True)
class Vendor:
    """A ``[vendor.<name>]`` table: pinned third-party sources.

    Exactly one of ``pypi`` (a requirement pinned with ``==``: its source
    distribution) and ``url`` is set. ``version`` is the library's own
    version (zstd 1.5.7), for people; ``cut_after`` maps a file under
    ``root`` to a marker: the file is cut after the first line holding it;
    ``patches`` are unified diffs (``-p1`` against ``root``), absolute paths
    the manifest checked are inside the cap's folder, applied in order.
    """

    name: str
    pypi: str | None
    sha256: str
    root: str = ""
    url: str | None = None
    version: str = ""
    cut_after: tuple[tuple[str, str], ...] = field(default=())
    patches: tuple[Path, ...] = field(default=())

    @property
    def pin(self) -> download.Pin:
        return download.Pin(sha256=self.sha256, url=self.url, pypi=self.pypi, what=f"vendor {self.name}",
                            pinned_by="the manifest")

    @property
    def edits(self) -> str:
        """A hash of what the build does to the pristine tree (cut_after, the
        patches' bytes), or "" when it does nothing. Build caches key vendored
        objects on :attr:`tree_key`, so a changed patch rebuilds them."""
        if not self.cut_after and not self.patches:
            return ""
        h = hashlib.sha256(json.dumps(self.cut_after).encode())
        for patch in self.patches:
            h.update(b"\0patch\0" + patch.read_bytes())
        return h.hexdigest()[:16]

    @property
    def tree_key(self) -> str:
        """What the unpacked tree is: the archive's sha256, plus its edits."""
        edits = self.edits
        return f"{self.sha256}+{edits}" if edits else self.sha256

    @property
    def source(self) -> str:
        """Where it comes from, for messages and ``composectl info``."""
        return self.pypi or self.url or ""


def fetch_vendor(vendor: Vendor) -> Path:
    """The folder ``@<name>/`` stands for, downloaded and unpacked on first use."""
    edits = vendor.edits
    folder = paths.build_root() / f"vendor-{vendor.name}-{vendor.sha256[:16]}{'-' + edits if edits else ''}"
    if (folder / ".complete").exists():
        return (folder / vendor.root).resolve()
    paths.build_root().mkdir(parents=True, exist_ok=True)
    archive = download.fetch(vendor.pin)
    staging = Path(tempfile.mkdtemp(prefix=f"vendor-{vendor.name}-", suffix=".partial", dir=paths.build_root()))
    try:
        tree = staging / "tree"
        _unpack(archive, tree)
        top = tree / vendor.root
        if not top.is_dir():
            raise BuildError(f"vendor {vendor.name}: {archive.name} has no folder {vendor.root!r}")
        for rel, marker in vendor.cut_after:
            _cut_after(vendor, top, rel, marker)
        for patch in vendor.patches:
            _apply_patch(vendor, top, patch)
        (tree / ".complete").write_text(f"{vendor.source} sha256:{vendor.sha256}"
                                        + "".join(f" +{p.name}" for p in vendor.patches) + "\n")
        try:
            tree.rename(folder)
        except OSError:
            if not (folder / ".complete").exists():  # not a concurrent build that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return (folder / vendor.root).resolve()


def _cut_after(vendor: Vendor, top: Path, rel: str, marker: str) -> None:
    """Truncates ``top/rel`` after the first line holding ``marker``.

    Why: SQLite's amalgamation in sqlean-py's sdist carries an appendix
    (sqlean's extensions) that needs headers the sdist lacks."""
    file = (top / rel).resolve()
    if not file.is_relative_to(top.resolve()) or not file.is_file():
        raise BuildError(f"vendor {vendor.name}: cut_after names {rel!r}, which is not a file of the archive")
    data = file.read_bytes()
    at = data.find(marker.encode())
    if at < 0:
        raise BuildError(f"vendor {vendor.name}: {rel} has no line {marker!r} to cut at")
    end = data.find(b"\n", at)
    file.write_bytes(data if end < 0 else data[: end + 1])


def _apply_patch(vendor: Vendor, top: Path, patch: Path) -> None:
    """Applies one unified diff to the tree, every hunk exactly or not at all.

    Why GNU patch and not our own: it is what distributions (and
    scripts/patch-crates.sh) apply diffs with, and it refuses file names that
    climb out of ``top``. ``--fuzz=0``: a hunk that only nearly matches means
    the pin moved under the patch, which must be looked at, not guessed."""
    try:
        result = subprocess.run(["patch", "--batch", "--forward", "--fuzz=0", "--no-backup-if-mismatch",
                                 "--reject-file=-", "-p1", "-d", str(top), "-i", str(patch)],
                                capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise BuildError(f"vendor {vendor.name}: applying {patch.name} needs GNU patch, which is not installed "
                         "(scripts/install-system-deps.sh installs it)") from None
    if result.returncode != 0:
        said = " ".join((result.stdout + result.stderr).split())[-400:]
        raise BuildError(f"vendor {vendor.name}: {patch.name} does not apply to {vendor.source} ({said})")


def _unpack(archive: Path, dest: Path) -> None:
    if archive.name.endswith((".tar.gz", ".tgz", ".tar", ".tar.xz", ".tar.bz2")):
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")  # "data": no links out, no absolute paths
    elif archive.suffix in (".zip", ".whl"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)  # zipfile drops absolute paths and ".."
    else:
        raise BuildError(f"cannot unpack {archive.name}: not a .tar.gz, .tar.xz, .zip or .whl")
