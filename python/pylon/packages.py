"""Pinned pure-Python packages: resolved with pip, stored as wheels, checked where used.

A plan's ``packages`` list (:class:`pylon.plan.PackagePin`) names wheels by
sha256. Two halves live here:

**Adding** (``composectl plan add-packages``, :func:`resolve` and :func:`pin`):
pip resolves the requirements *for the guest* (CPython 3.14, pure-Python
wheels only: ``--only-binary=:all: --platform any --abi none``) in a dry run
that writes a report of each distribution's URL and sha256; each wheel is then
fetched through the blob store (which checks that sha256), checked
(:func:`check_wheel`: a pure tag, safe member names, RECORD matching every
file) and pinned with its name, version, digest, size and URL.

**Using** (every run, :func:`prepare`): each wheel blob is verified by digest
(fetched from the plan's sources on first use), unpacked once per digest into
``<cache>/packages/<hex>`` (a temporary folder renamed into place, so no
half-unpacked tree is ever used), and the tree is checked against the wheel's
RECORD **before every run**: exactly the files the RECORD lists, each regular,
of the listed size and sha256, no other file, folder or link. The cache is
treated as hostile: a tree that fails the check is moved aside and unpacked
again from the verified wheel (the host hears why). Within one process a tree
that passed is remembered by the identity of each entry (device, inode, size,
mtime, ctime, mode: nothing short of root can change a file's bytes and set its
ctime back), so a long-lived host re-hashes only what changed.

The guest sees each tree read-only at ``/pylon/packages/<name>-<version>``,
never a host path, on ``sys.path`` after the standard library in plan order.
docs/packages.md is the user's guide; docs/security.md guarantee 13 the contract.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import secrets
import shutil
import stat
import sys
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pylon import paths
from pylon.errors import BlobError, DigestMismatch, PylonError

if TYPE_CHECKING:
    from pylon.blobstore import BlobStore, Progress
    from pylon.plan import PackagePin, Plan

__all__ = [
    "GUEST_ROOT", "PACKAGES_VAR", "GUEST_PYTHON", "PackageError", "Resolved", "WheelManifest",
    "Prepared", "resolve", "is_pure_tag", "check_wheel", "pin", "merge", "prepare",
]

#: Where the guest sees the packages: ``/pylon/packages/<name>-<version>``.
GUEST_ROOT = "/pylon/packages"
#: The environment variable the guest's runner reads its package folders from
#: (``guest/python/pylon_guest/_runner.py``; removed before the script runs).
PACKAGES_VAR = "PYLON_PACKAGES"
#: The guest's Python: wheels must suit CPython 3.14 on wasm32-wasi, i.e. be pure.
GUEST_PYTHON = (3, 14)

#: Bounds on one wheel. A wheel is a zip: its members' sizes come from its
#: central directory and are enforced while reading, so a zip bomb stops here.
MAX_WHEEL_BYTES = 64 << 20
MAX_UNPACKED_BYTES = 256 << 20
MAX_FILES = 20_000
_CHUNK = 1 << 20

#: Makes a fetch progress callback for a description (see :mod:`pylon.runtime`).
ProgressFactory = Callable[[str], AbstractContextManager["Progress | None"]]
Report = Callable[[str], None]


class PackageError(PylonError):
    """A package cannot be resolved, pinned, fetched or used; the message names it."""


def _no_progress(_description: str) -> AbstractContextManager[None]:
    return nullcontext(None)


# -- resolving (composectl plan add-packages) -----------------------------


@dataclass(frozen=True)
class Resolved:
    """One distribution pip chose: normalized name, version, wheel URL and sha256 (hex)."""

    name: str
    version: str
    url: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _pip_target_args() -> list[str]:
    """pip options that make it choose wheels for the guest, not for this host."""
    major, minor = GUEST_PYTHON
    # cp + none + any: pip accepts cp314-none-any, py314-none-any, py3-none-any,
    # py2.py3-none-any ... and nothing with compiled code; --only-binary so it
    # never builds an sdist (a build would run setup.py on this host).
    return ["--only-binary=:all:", "--python-version", f"{major}.{minor}", "--implementation", "cp",
            "--abi", "none", "--platform", "any"]


def _requested_names(specs: Iterable[str], requirement_files: Iterable[Path]) -> set[str]:
    """Project names the user asked for (best effort for requirement files)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    lines = list(specs)
    for file in requirement_files:
        try:
            lines += file.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue  # pip reports it
    names: set[str] = set()
    for line in lines:
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("-", "#")):
            continue
        try:
            names.add(canonicalize_name(Requirement(line).name))
        except InvalidRequirement:
            continue
    return names


def resolve(specs: Sequence[str], requirement_files: Sequence[Path] = (), *,
            keep: Iterable[PackagePin] = (), index_url: str | None = None,
            find_links: Sequence[str] = (), python: str | None = None) -> list[Resolved]:
    """Resolves requirements (and their dependencies) to pure wheels for the guest.

    Runs ``python -m pip install --dry-run --ignore-installed --report`` in a
    subprocess, so nothing is installed and this interpreter's packages do
    not count. ``keep``: pins already in the plan; those the request does not
    name are passed as constraints, so a new package fits the ones you keep.

    Raises:
        PackageError: pip found no pure wheel for a requirement (the message
            names it), could not resolve them together, or reported a
            distribution without a sha256.
    """
    import json
    import subprocess
    import tempfile

    from packaging.utils import canonicalize_name

    files = [Path(f) for f in requirement_files]
    if not specs and not files:
        raise PackageError("name at least one package (NAME, NAME==VERSION) or pass -r requirements.txt")
    requested = _requested_names(specs, files)
    with tempfile.TemporaryDirectory(prefix="pylon-pip-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [python or sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
               "--quiet", "--no-input", "--disable-pip-version-check", "--report", str(report),
               *_pip_target_args()]
        constraints = [f"{p.name}=={p.version}" for p in keep if p.name not in requested]
        if constraints:
            (Path(tmp) / "constraints.txt").write_text("\n".join(constraints) + "\n", encoding="utf-8")
            cmd += ["-c", str(Path(tmp) / "constraints.txt")]
        if index_url:
            cmd += ["--index-url", index_url]
        for link in find_links:
            cmd += ["--find-links", link]
        for file in files:
            cmd += ["-r", str(file)]
        cmd += ["--", *specs] if specs else []
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PackageError(_pip_failure(done.stderr, constraints))
        data = json.loads(report.read_text(encoding="utf-8"))
    out = []
    for item in data.get("install", []):
        meta, info = item.get("metadata", {}), item.get("download_info", {})
        name, version = canonicalize_name(str(meta.get("name", ""))), str(meta.get("version", ""))
        url = str(info.get("url", "")).split("#", 1)[0]
        hashes = info.get("archive_info", {}).get("hashes", {})
        sha256 = hashes.get("sha256") or _hash_from(info.get("archive_info", {}).get("hash"))
        if not url.endswith(".whl"):
            raise PackageError(f"package {name} {version}: pip chose {url or 'no file'}, which is not a wheel")
        if not sha256:
            raise PackageError(f"package {name} {version}: the index gave no sha256 for {_shown(url)}; "
                               "use an index that publishes hashes")
        out.append(Resolved(name, version, url, sha256.lower()))
    return out


def _hash_from(value: object) -> str | None:
    if isinstance(value, str) and value.startswith("sha256="):
        return value.split("=", 1)[1]
    return None


def _shown(url: str) -> str:
    """A URL for messages (a file:// URL as its path)."""
    return url.removeprefix("file://")


def _pip_failure(stderr: str, constraints: list[str]) -> str:
    """pip's failure in one message that names the package it could not place."""
    missing = re.findall(r"No matching distribution found for (\S+)", stderr)
    if missing:
        names = ", ".join(dict.fromkeys(missing))
        return (f"no pure-Python wheel of {names} for the guest (CPython {GUEST_PYTHON[0]}.{GUEST_PYTHON[1]} "
                "on wasm32-wasi): the guest can only use wheels tagged py3-none-any (or cp314-none-any...). "
                "It may ship only platform wheels (compiled code) or a source archive, or not exist "
                "under that name.")
    errors = [line.removeprefix("ERROR: ") for line in stderr.splitlines() if line.startswith("ERROR:")]
    detail = "\n".join(errors[-8:]) or stderr.strip()[-2000:] or "(no message)"
    hint = ""
    if constraints and ("conflict" in stderr.lower() or "ResolutionImpossible" in stderr):
        hint = ("\nthe plan's other packages are kept as they are (" + ", ".join(constraints) +
                "); add them again with new versions, or remove them with: composectl plan rm-package")
    return f"pip could not resolve the packages for the guest:\n{detail}{hint}"


def is_pure_tag(filename: str) -> bool:
    """Whether a wheel's file name carries a tag the guest can use (pure Python, any platform)."""
    from packaging.tags import compatible_tags
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        _name, _version, _build, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return False
    major, minor = GUEST_PYTHON
    usable = set(compatible_tags((major, minor), f"cp{major}{minor}", ["any"]))
    return any(tag in usable for tag in tags)


# -- checking a wheel --------------------------------------------------------


@dataclass(frozen=True)
class WheelFile:
    """One file the unpacked tree must hold: relative path, size, sha256 (hex)."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class WheelManifest:
    """What a verified wheel unpacks to: its files (RECORD's, plus RECORD itself)."""

    files: tuple[WheelFile, ...]

    def dirs(self) -> set[str]:
        """Every folder the files live in (relative; not the root)."""
        out: set[str] = set()
        for f in self.files:
            parent = f.path.rpartition("/")[0]
            while parent and parent not in out:
                out.add(parent)
                parent = parent.rpartition("/")[0]
        return out


def _bad(label: str, why: str) -> PackageError:
    return PackageError(f"package {label}: refusing its wheel: {why}")


_SAFE_PART = re.compile(r"[^\x00-\x1f\x7f\\:]+")


#: A safe relative name in one match (the common case, fast); anything else gets the
#: part-by-part check below, which says what is wrong.
_PART = r"(?!\.\.?(?:/|$))[^\x00-\x1f\x7f\\:/]{1,255}"  # not "." or "..", no control, "\\" or ":"
_SAFE_NAME = re.compile(rf"{_PART}(?:/{_PART})*/?")


def _check_member_name(label: str, name: str) -> str:
    """A member name as a safe relative path ``a/b/c``, or PackageError (absolute, ``..``, odd characters)."""
    if _SAFE_NAME.fullmatch(name):
        return name.rstrip("/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise _bad(label, f"{name!r} is an absolute path")
    parts = name.rstrip("/").split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise _bad(label, f"{name!r} has an empty, '.' or '..' part (it could land outside its folder)")
        if not _SAFE_PART.fullmatch(part) or len(part) > 255:
            raise _bad(label, f"{name!r} has a control character, a backslash, a colon or an over-long part")
    return "/".join(parts)


def _member_kind(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member is not a plain file or folder, or None."""
    # Unix mode bits, when the zip has them; many wheels store permissions only
    # (no file type), which reads as a plain file, as unzip and pip read it.
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        if stat.S_ISLNK(mode):
            return "a symbolic link"
        return "a device, FIFO or socket"
    return None


@dataclass(frozen=True)
class _Layout:
    """A wheel's members sorted out: what to unpack and its RECORD."""

    keep: dict[str, zipfile.ZipInfo]  # relative path -> member, for every file unpacked
    record_path: str
    record: dict[str, tuple[str, int]]  # path -> (sha256 hex, size), hashed entries only


def _layout(zf: zipfile.ZipFile, label: str, filename: str | None) -> _Layout:
    """Checks a wheel's member names, kinds, bounds and layout; reads its RECORD."""
    infos = zf.infolist()
    if len(infos) > MAX_FILES:
        raise _bad(label, f"it has {len(infos)} members; the limit is {MAX_FILES}")
    total = sum(i.file_size for i in infos)
    if total > MAX_UNPACKED_BYTES:
        raise _bad(label, f"it unpacks to {total} bytes; the limit is {MAX_UNPACKED_BYTES}")
    seen: set[str] = set()
    dist_infos: set[str] = set()
    data_dirs: set[str] = set()
    files: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        key = _check_member_name(label, info.filename)
        kind = _member_kind(info)
        if kind:
            raise _bad(label, f"{info.filename!r} is {kind}")
        if key in seen:
            raise _bad(label, f"{info.filename!r} is in it twice")
        seen.add(key)
        top = key.partition("/")[0]
        if top.endswith(".dist-info"):
            dist_infos.add(top)
        elif top.endswith(".data"):
            data_dirs.add(top)
        if not info.is_dir():
            files[key] = info
    if len(dist_infos) != 1:
        raise _bad(label, f"it has {len(dist_infos)} .dist-info folders; a wheel has exactly one")
    dist_info = dist_infos.pop()
    stem = dist_info.removesuffix(".dist-info")
    if filename is not None:
        # Imported here: only add-packages names the file; a run does without packaging.
        from packaging.utils import canonicalize_name, parse_wheel_filename
        from packaging.version import InvalidVersion, Version

        wname, wversion, _b, _t = parse_wheel_filename(filename)
        dname, _, dversion = stem.partition("-")
        try:
            same = canonicalize_name(dname) == wname and Version(dversion) == wversion
        except InvalidVersion:
            same = False
        if not same:
            raise _bad(label, f"its {dist_info} does not match the wheel's name and version ({filename})")
    for data in data_dirs:
        if data != f"{stem}.data":
            raise _bad(label, f"{data}/ is not the wheel's own .data folder ({stem}.data)")
    record_path = f"{dist_info}/RECORD"
    if record_path not in files:
        raise _bad(label, f"it has no {record_path}")
    record = _read_record(zf, files[record_path], label)
    keep: dict[str, zipfile.ZipInfo] = {}
    for key, info in files.items():
        if key.startswith(f"{stem}.data/"):
            # Scripts, headers and data go to bin/, include/ and the prefix: the
            # guest has none of those, so they are left out. Modules under
            # purelib/platlib belong on sys.path, where we do not merge them.
            part = key.split("/")[1] if key.count("/") >= 2 else ""
            if part in ("purelib", "platlib"):
                raise _bad(label, f"it installs modules from {stem}.data/{part}/, which Pylon does not support")
            continue
        if key in (f"{dist_info}/RECORD.jws", f"{dist_info}/RECORD.p7s"):
            continue  # RECORD's signatures: not needed, and RECORD cannot list their hashes
        if key != record_path and key not in record:
            raise _bad(label, f"{key!r} is in the wheel but not in its RECORD with a sha256")
        keep[key] = info
    for key in record:
        if key not in files:
            raise _bad(label, f"its RECORD lists {key!r}, which the wheel does not contain")
    return _Layout(keep, record_path, record)


def _read_record(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> dict[str, tuple[str, int]]:
    """RECORD's hashed entries: path -> (sha256 hex, size)."""
    import base64

    if info.file_size > 16 << 20:
        raise _bad(label, "its RECORD is over 16 MiB")
    try:
        text = zf.read(info).decode("utf-8")
    except (UnicodeDecodeError, zipfile.BadZipFile, OSError) as exc:
        raise _bad(label, f"its RECORD cannot be read: {exc}") from exc
    out: dict[str, tuple[str, int]] = {}
    for row in csv.reader(io.StringIO(text)):
        if not row or not row[0]:
            continue
        if len(row) != 3:
            raise _bad(label, f"its RECORD has a malformed row: {row!r}"[:300])
        path, digest, size = row
        if not digest:
            continue  # RECORD itself (and its signatures) are listed without a hash
        algo, _, b64 = digest.partition("=")
        if algo != "sha256":
            raise _bad(label, f"its RECORD hashes {path!r} with {algo!r}; Pylon checks sha256 only")
        try:
            raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
            n = int(size)
        except ValueError as exc:
            raise _bad(label, f"its RECORD has a malformed row for {path!r}") from exc
        if len(raw) != 32 or n < 0:
            raise _bad(label, f"its RECORD has a malformed row for {path!r}")
        out[_check_member_name(label, path)] = (raw.hex(), n)
    return out


def _open_zip(data: bytes, label: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _bad(label, f"it is not a readable zip file ({exc})") from exc


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> Iterator[bytes]:
    """A member's bytes in chunks, never more than its declared size."""
    left = info.file_size
    try:
        with zf.open(info) as f:
            while True:
                chunk = f.read(min(_CHUNK, left + 1))
                if not chunk:
                    break
                left -= len(chunk)
                if left < 0:
                    raise _bad(label, f"{info.filename!r} is longer than its declared size")
                yield chunk
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise _bad(label, f"{info.filename!r} cannot be read ({exc})") from exc


def check_wheel(data: bytes, label: str, filename: str | None = None) -> WheelManifest:
    """Checks a whole wheel (as ``add-packages`` does before pinning it).

    Its tag (from ``filename``) must be pure; every member name safe (no
    absolute path, ``..``, link or device), within the size and count bounds;
    exactly one ``.dist-info`` matching the name; every file listed in RECORD
    with the sha256 and size it really has.

    Raises:
        PackageError: what is wrong, naming ``label`` (the package) and the member.
    """
    if filename is not None and not is_pure_tag(filename):
        raise _bad(label, f"{filename} is not a pure-Python wheel (the guest needs a tag such as "
                          f"py3-none-any or cp{GUEST_PYTHON[0]}{GUEST_PYTHON[1]}-none-any)")
    with _open_zip(data, label) as zf:
        layout = _layout(zf, label, filename)
        files = []
        for key, info in layout.keep.items():
            h = hashlib.sha256()
            size = 0
            for chunk in _read_member(zf, info, label):
                h.update(chunk)
                size += len(chunk)
            files.append(_checked_file(layout, key, h.hexdigest(), size, label))
    return WheelManifest(tuple(sorted(files, key=lambda f: f.path)))


def _checked_file(layout: _Layout, key: str, sha256: str, size: int, label: str) -> WheelFile:
    if key != layout.record_path:
        want_hash, want_size = layout.record[key]
        if sha256 != want_hash or size != want_size:
            raise _bad(label, f"{key!r} does not match its RECORD entry (sha256 or size differ)")
    return WheelFile(key, size, sha256)


def _manifest_from_record(data: bytes, label: str) -> WheelManifest:
    """The tree a verified wheel unpacks to, from its RECORD alone (no member is inflated
    but RECORD: the wheel passed :func:`check_wheel` when its tree was unpacked)."""
    with _open_zip(data, label) as zf:
        layout = _layout(zf, label, None)
        files = []
        for key in layout.keep:
            if key == layout.record_path:
                raw = b"".join(_read_member(zf, layout.keep[key], label))
                files.append(WheelFile(key, len(raw), hashlib.sha256(raw).hexdigest()))
            else:
                sha, size = layout.record[key]
                files.append(WheelFile(key, size, sha))
    return WheelManifest(tuple(sorted(files, key=lambda f: f.path)))


# -- pinning -------------------------------------------------------------------


def pin(found: Resolved, store: BlobStore, *, extra_sources: Sequence[str] = (),
        progress: Progress | None = None) -> PackagePin:
    """Fetches ``found``'s wheel into the store (checking its sha256), checks it, pins it.

    Raises:
        PackageError: the wheel could not be fetched, had other bytes than
            the index's sha256, or failed :func:`check_wheel`.
    """
    from pylon.plan import PackagePin

    label = f"{found.name} {found.version}"
    digest = f"sha256:{found.sha256}"
    sources = list(dict.fromkeys([found.url, *extra_sources]))
    try:
        path = store.fetch(digest, sources, progress=progress)
        size = path.stat().st_size
        if size > MAX_WHEEL_BYTES:
            raise _bad(label, f"it is {size} bytes; the limit is {MAX_WHEEL_BYTES}")
        data = store.read_bytes(digest)
    except DigestMismatch as exc:
        raise PackageError(f"package {label}: the wheel's bytes do not match the sha256 the index gave "
                           f"({exc.expected}, found {exc.found})") from exc
    except BlobError as exc:
        raise PackageError(f"package {label}: could not fetch its wheel: {exc}") from exc
    check_wheel(data, label, found.filename)
    return PackagePin(name=found.name, version=found.version, digest=digest, sources=tuple(sources), size=size)


def merge(plan: Plan, pins: Iterable[PackagePin]) -> Plan:
    """``plan`` with ``pins``: one of the same name is replaced in place, others appended."""
    new = {p.name: p for p in pins}
    kept = [new.pop(p.name, p) for p in plan.packages]
    return plan.with_packages([*kept, *new.values()])


# -- using (every run) ---------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """What a run needs for its packages: read-only preopens and the guest's variable."""

    preopens: tuple[tuple[str, str, bool], ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def engine_preopens(self) -> list[tuple[str, str, bool]]:
        return list(self.preopens)


#: Per process: digest -> the manifest derived from verified wheel bytes (memory is ours).
_MANIFESTS: dict[str, WheelManifest] = {}
#: Per process: tree path -> identities of its entries when it last passed a full check.
_TREES: dict[str, tuple[tuple[str, int, int, int, int, int, int], ...]] = {}
_LOCK = threading.Lock()


def guest_path(p: PackagePin) -> str:
    """Where the guest sees a package's folder."""
    return f"{GUEST_ROOT}/{p.name}-{p.version}"


def prepare(pins: Sequence[PackagePin], store: BlobStore, *, progress: ProgressFactory | None = None,
            report: Report | None = None) -> Prepared:
    """Makes every pinned package ready for a run; returns its preopens and environment.

    For each pin: the wheel blob is verified (fetched on first use), its tree
    unpacked once per digest and checked against RECORD (repaired from the
    wheel if it was changed). Call it before every run: the check is the point.

    Raises:
        PackageError: a wheel cannot be fetched, has the wrong bytes (at its
            source or in the store), or is unsafe; the message names the package.
    """
    if not pins:
        return Prepared()
    progress = progress or _no_progress
    report = report or _report_to_stderr
    root = paths.private_dir(paths.packages_root())
    opened = []
    for p in pins:
        tree = _ready_tree(p, root, store, progress, report)
        opened.append((str(tree), guest_path(p), True))
    env = {PACKAGES_VAR: ":".join(guest for _host, guest, _ro in opened)}
    return Prepared(tuple(opened), env)


def _label(p: PackagePin) -> str:
    return f"{p.name} {p.version}"


def _wheel_bytes(p: PackagePin, store: BlobStore, progress: ProgressFactory, report: Report) -> bytes:
    """The pinned wheel's bytes, verified against the plan's digest (fetched if need be)."""
    label = _label(p)
    try:
        if store.has(p.digest):
            size = store.blob_path(p.digest).stat().st_size
            if size > MAX_WHEEL_BYTES:  # read into memory below: bound it first
                raise _bad(label, f"the stored wheel is {size} bytes; the limit is {MAX_WHEEL_BYTES}")
            try:
                return store.read_bytes(p.digest)
            except DigestMismatch as exc:
                # Quarantined by the store; fetched anew from the plan's sources below.
                report(f"package {label}: the stored wheel does not match its digest "
                       f"(found {exc.found}); fetching it again")
        with progress(f"fetching package {p.name}") as cb:
            store.fetch(p.digest, p.sources, size=p.size, progress=cb)
        return store.read_bytes(p.digest)
    except DigestMismatch as exc:
        raise PackageError(f"package {label}: its wheel does not match the plan's digest {p.digest} "
                           f"(found {exc.found}); it was not used") from exc
    except BlobError as exc:
        raise PackageError(f"package {label}: its wheel ({p.digest}) could not be fetched: {exc}") from exc


def _ready_tree(p: PackagePin, root: Path, store: BlobStore, progress: ProgressFactory, report: Report) -> Path:
    tree = root / p.digest.split(":", 1)[1]
    key = str(tree)
    with _LOCK:
        manifest = _MANIFESTS.get(p.digest)
        data = None
        if manifest is None:
            data = _wheel_bytes(p, store, progress, report)
            manifest = _manifest_from_record(data, _label(p))
            _MANIFESTS[p.digest] = manifest
        why = _tree_problem(tree, manifest)
        if why is None:
            return tree
        if why != "missing":
            report(f"package {_label(p)}: its unpacked files in the cache were changed ({why}); "
                   "unpacking it again from the verified wheel")
        _TREES.pop(key, None)
        if data is None:
            data = _wheel_bytes(p, store, progress, report)
        _unpack_into_place(data, _label(p), tree, root)
        why = _tree_problem(tree, manifest)
        if why is not None:  # another process changed it right away: do not use it
            raise PackageError(f"package {_label(p)}: its unpacked files keep changing ({why}); refusing to use them")
        return tree


def _identities(tree: Path) -> tuple[dict[str, os.stat_result], list[str]]:
    """Every entry under ``tree`` (lstat, relative path), and any that is not a file or folder."""
    found: dict[str, os.stat_result] = {}
    odd: list[str] = []
    todo: list[tuple[str, str | Path]] = [("", tree)]
    while todo:
        rel, folder = todo.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                sub = f"{rel}/{entry.name}" if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    todo.append((sub, entry.path))
                elif not stat.S_ISREG(st.st_mode):
                    odd.append(sub)
                found[sub] = st
    return found, odd


def _fingerprint(found: Mapping[str, os.stat_result]) -> tuple[tuple[str, int, int, int, int, int, int], ...]:
    return tuple(sorted((rel, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
                        for rel, st in found.items()))


def _tree_problem(tree: Path, manifest: WheelManifest) -> str | None:
    """Why ``tree`` is not exactly ``manifest``'s files, or None; ``"missing"`` if absent."""
    try:
        st = tree.lstat()
    except FileNotFoundError:
        return "missing"
    if not stat.S_ISDIR(st.st_mode):
        return "its folder is not a plain folder"
    try:
        found, odd = _identities(tree)
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    if odd:
        return f"{odd[0]!r} is not a regular file"
    root_id = (".", st.st_dev, st.st_ino, 0, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
    fp = (root_id, *_fingerprint(found))
    if _TREES.get(str(tree)) == fp:
        return None  # passed a full check in this process, and no entry changed since
    wanted = {f.path: f for f in manifest.files}
    dirs = manifest.dirs()
    for rel, entry in found.items():
        if stat.S_ISDIR(entry.st_mode):
            if rel not in dirs:
                return f"{rel!r} is a folder the wheel does not have"
        elif rel not in wanted:
            return f"{rel!r} is not in the wheel"
    for f in manifest.files:
        seen = found.get(f.path)
        if seen is None:
            return f"{f.path!r} is missing"
        if seen.st_size != f.size or _hash_file(os.path.join(tree, f.path)) != f.sha256:
            return f"{f.path!r} has other bytes than the wheel's"
    _TREES[str(tree)] = fp
    return None


def _hash_file(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _unpack_into_place(data: bytes, label: str, tree: Path, root: Path) -> None:
    """Checks the wheel while unpacking it into a temporary folder, then renames that into place.

    A tree that is there already (a bad one, or one another process just
    finished) is first moved aside and removed: readers see the old tree or
    the new, never half of one.
    """
    work = root / f".tmp-{tree.name[:16]}.{os.getpid()}.{secrets.token_hex(4)}"
    work.mkdir(mode=0o700)
    try:
        with _open_zip(data, label) as zf:
            layout = _layout(zf, label, None)
            for key, info in layout.keep.items():
                target = work / key
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                h = hashlib.sha256()
                size = 0
                # O_EXCL: a name the checks let through twice can never overwrite.
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as out:
                    for chunk in _read_member(zf, info, label):
                        h.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
                _checked_file(layout, key, h.hexdigest(), size, label)
        _move_aside(tree, root)
        try:
            os.rename(work, tree)
        except OSError:
            if not tree.exists():
                raise
            # Another process put its tree there first: ours is not needed (theirs is checked next).
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _move_aside(tree: Path, root: Path) -> None:
    """Removes whatever is at ``tree`` (a folder, a link, a file) without following links."""
    try:
        st = tree.lstat()
    except FileNotFoundError:
        return
    trash = root / f".trash-{tree.name[:16]}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        os.rename(tree, trash)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(trash, ignore_errors=True)
    else:
        trash.unlink(missing_ok=True)


def clear_memory() -> None:
    """Forgets this process's memory of verified wheels and trees (tests, benchmarks)."""
    with _LOCK:
        _MANIFESTS.clear()
        _TREES.clear()


def _report_to_stderr(message: str) -> None:
    sys.stderr.write(f"pylon: {message}\n")
    sys.stderr.flush()
