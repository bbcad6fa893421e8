"""A cap's ``cap.toml``: read, checked against ``schemas/cap.schema.json``, and resolved.

One manifest describes every face of a cap, so adding a cap (or a face of
one) touches only the cap's folder:

* ``[cap]``: name (the one cap-name rule, :mod:`pylon.names`), version,
  description, optional shim;
* ``[vendor.<name>]``: pinned third-party sources every face shares
  (:mod:`pylon.build.vendor`), plus the SDK's own pins (caps/_sdk/sdk.toml:
  zcbor), which every cap sees as its own;
* ``[interface]``: the cap's API as one WIT interface; with it ``[dynlink]``
  is a generated face (:mod:`pylon.build.capgen`, docs/cap-interface.md);
* ``[dynlink]`` (:mod:`pylon.build.caps`), ``[embedded]``
  (:mod:`pylon.build.embedded`, :mod:`pylon.build.guest`, and
  ``scripts/compose-python-component.sh``) and ``[static]``
  (:mod:`pylon.build.micropython`): one table per face;
* ``[bench]``: what ``composectl bench`` calls in each face (:mod:`pylon.bench`).

Errors are :class:`~pylon.errors.BuildError`\\ s in the plan's style: the file,
where in it (as a TOML reader sees it: ``[vendor.zstd].sha256``) and what is
wrong. The format is documented in docs/caps.md and docs/embedded.md.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pylon import paths
from pylon.build.vendor import Vendor
from pylon.errors import BuildError
from pylon.schema_check import Problem, Schema, toml_path

__all__ = ["CAPS_DIR", "MANIFEST", "BenchCall", "BenchSpec", "DynlinkFace", "EmbeddedFace", "InterfaceDecl",
           "Manifest", "SDK_MANIFEST", "check_table", "embeddable", "inside", "load_manifest", "problem_text",
           "read_toml", "resolve", "sdk_vendors"]

MANIFEST = "cap.toml"
#: The caps the stock install builds and a guest can embed.
CAPS_DIR = paths.SOURCE_ROOT / "caps"
SCHEMA = Schema("cap", dialect="toml")
#: Pins the SDK makes for every cap (:func:`sdk_vendors`).
SDK_MANIFEST = CAPS_DIR / "_sdk" / "sdk.toml"


@dataclass(frozen=True)
class DynlinkFace:
    """``[dynlink]``: how to compile the provider face."""

    sources: tuple[str, ...]
    include_dirs: tuple[str, ...]
    cflags: tuple[str, ...]
    vendor_sources: tuple[str, ...] = ()
    vendor_cflags: tuple[str, ...] = ()


@dataclass(frozen=True)
class InterfaceDecl:
    """``[interface]``: the cap's API as one WIT interface (docs/cap-interface.md)."""

    wit: Path  # the WIT package (one file), resolved
    world: str  # pylon:sqlite/embedded@0.1.0: a world exporting `export`
    export: str  # pylon:sqlite/sqlite@0.1.0


@dataclass(frozen=True)
class GuestBinding:
    """``[embedded.binding]``: C compiled into a CPython extension module of
    the guest that calls the embedded cap's typed import directly
    (:mod:`pylon.build.guest_binding`)."""

    module: str  # the extension module's name (``_crc32c_binding``)
    sources: tuple[str, ...]  # C files in the cap's folder


@dataclass(frozen=True)
class EmbeddedFace:
    """``[embedded]``: the typed face a guest embeds with ``wac plug``."""

    wit: Path  # the WIT package (one file)
    world: str  # pylon:zstd/embedded@0.1.0: what the component targets
    interface: str  # pylon:zstd/zstd@0.1.0: what it exports and the guest imports
    guest_module: str  # the guest's module binding wit_world.imports.<interface>
    stock: bool  # whether the stock pylon.wasm embeds it
    sources: tuple[str, ...]
    include_dirs: tuple[str, ...]
    cflags: tuple[str, ...]
    vendor_sources: tuple[str, ...]
    vendor_cflags: tuple[str, ...]
    binding: GuestBinding | None = None

    @property
    def import_name(self) -> str:
        """The interface's short name: ``zstd`` of ``pylon:zstd/zstd@0.1.0``
        (``wit_world.imports.<import_name>`` in the guest)."""
        return self.interface.split("/", 1)[1].split("@", 1)[0].replace("-", "_")


@dataclass(frozen=True)
class BenchCall:
    """One face's entry in ``[bench]``: either a dynlink ``method`` with its
    payload kind (``raw``, ``cbor``, ``cbor-array`` plus ``extra``), or Python
    run in the guest (``imports`` once, ``setup`` once, ``call`` timed)."""

    method: str | None = None
    payload: str = "raw"
    extra: tuple[Any, ...] = ()
    imports: str = ""
    setup: str = ""
    call: str | None = None


@dataclass(frozen=True)
class BenchSpec:
    """``[bench]``: per face (``dynlink``, ``embedded``, ``static``) what to call."""

    faces: dict[str, BenchCall]
    bulk: bool = False
    tiny_bytes: int = 1
    note: str = ""


def _bench_spec(file: Path, table: dict[str, Any]) -> BenchSpec:
    faces = {}
    for face in ("dynlink", "embedded", "static"):
        t = table.get(face)
        if t is None:
            continue
        if face == "dynlink" and ("method" in t) == ("call" in t):
            raise BuildError(f"{file}: at [bench.dynlink]: give exactly one of method (a dynlink method "
                             "and its payload) and call (a Python expression)")
        if "method" not in t and ("payload" in t or "extra" in t):
            raise BuildError(f"{file}: at [bench.{face}]: payload and extra go with method")
        if t.get("extra") and t.get("payload") != "cbor-array":
            raise BuildError(f"{file}: at [bench.{face}].extra: extra items need payload = \"cbor-array\"")
        faces[face] = BenchCall(method=t.get("method"), payload=t.get("payload", "raw"),
                                extra=tuple(t.get("extra", ())), imports=t.get("import", ""),
                                setup=t.get("setup", ""), call=t.get("call"))
    return BenchSpec(faces, bulk=table.get("bulk", False), tiny_bytes=table.get("tiny_bytes", 1),
                     note=table.get("note", ""))


@dataclass(frozen=True)
class Manifest:
    """A checked ``cap.toml``. ``static`` is the raw ``[static]`` table
    (:mod:`pylon.build.micropython` reads it)."""

    dir: Path
    name: str
    version: str
    description: str
    shim: Path | None
    vendors: dict[str, Vendor]
    dynlink: DynlinkFace | None
    embedded: EmbeddedFace | None
    static: dict[str, Any] | None
    bench: BenchSpec | None = None
    interface: InterfaceDecl | None = None

    @property
    def file(self) -> Path:
        return self.dir / MANIFEST


def read_toml(file: Path) -> dict[str, Any]:
    """A TOML file's document; BuildError when it is not TOML."""
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"{file}: not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses into nested arrays and inline tables
        raise BuildError(f"{file}: not valid TOML: nested too deep") from exc
    except OSError as exc:
        raise BuildError(f"{file}: cannot read: {exc.strerror or exc}") from exc


def problem_text(file: Path, problem: Problem, prefix: tuple[str | int, ...] = ()) -> str:
    """``<file>: at [cap].name: <message>`` (the plan's style, TOML's paths)."""
    path = prefix + problem.path
    return f"{file}: at {toml_path(path)}: {problem.message}" if path else f"{file}: {problem.message}"


def check_table(file: Path, table: Any, face: str) -> None:
    """Checks one face's table alone (``[static]``: its builder reads only that).

    Raises:
        BuildError: the table breaks the schema's definition of the face.
    """
    problem = SCHEMA.first_problem(table, definition=face)
    if problem is not None:
        raise BuildError(problem_text(file, problem, (face,)))


def load_manifest(cap_dir: Path) -> Manifest:
    """Reads and checks ``cap_dir/cap.toml``; BuildError says what is wrong and where."""
    cap_dir = Path(cap_dir).resolve()
    file = cap_dir / MANIFEST
    if not file.is_file():
        raise BuildError(f"{cap_dir} is not a cap: it has no {MANIFEST}")
    doc = read_toml(file)
    problem = SCHEMA.first_problem(doc)
    if problem is not None:
        raise BuildError(problem_text(file, problem))

    cap = doc["cap"]
    shim = None
    if "shim" in cap:
        shim = inside(cap_dir, cap["shim"], f"{file}: at [cap].shim")
        if not shim.is_file():
            raise BuildError(f"{file}: at [cap].shim: {cap['shim']!r} does not exist")

    vendors = {}
    sdk = sdk_vendors()
    for name, table in doc.get("vendor", {}).items():
        if name in sdk:
            raise BuildError(f"{file}: at {toml_path(('vendor', name))}: {name} is pinned once for every cap by "
                             f"the SDK ({SDK_MANIFEST.relative_to(paths.SOURCE_ROOT)}); remove this table, "
                             f"@{name}/... paths work without it")
        vendors[name] = _vendor(file, name, table, cap_dir)
    vendors = {**vendors, **sdk}

    source_root = paths.SOURCE_ROOT.resolve()
    interface = _interface(file, cap_dir, source_root, doc.get("interface"))

    dynlink = None
    if "dynlink" in doc:
        t = doc["dynlink"]
        for i, rel in enumerate(t.get("vendor_sources", ())):
            if not rel.startswith("@"):
                raise BuildError(f"{file}: at [dynlink].vendor_sources[{i}]: {rel!r} is not in a vendored "
                                 "source ('@<vendor>/...'); list the cap's own files in sources")
        dynlink = DynlinkFace(tuple(t["sources"]), tuple(t.get("include_dirs", ())), tuple(t.get("cflags", ())),
                              tuple(t.get("vendor_sources", ())), tuple(t.get("vendor_cflags", ())))

    embedded = None
    t = doc.get("embedded")
    if t is not None:
        # [embedded] may leave wit, world and interface to [interface].
        missing = [k for k in ("wit", "world", "interface") if k not in t]
        if missing and interface is None:
            raise BuildError(f"{file}: at [embedded].{missing[0]}: required, but missing")
        if interface is not None:
            t = {"wit": str(interface.wit), "world": interface.world, "interface": interface.export, **t}
    wit = (cap_dir / t["wit"]).resolve() if t is not None else None
    # A copy of a source-tree cap made elsewhere keeps an [embedded] table that
    # points back into wit/caps/; guests embed caps from the source tree only,
    # so such a copy simply has no embedded face (its dynlink face builds).
    if wit is not None and not wit.is_relative_to(cap_dir) and not cap_dir.is_relative_to(source_root):
        t = None
    if t is not None and wit is not None:
        # The WIT may live in the source tree's wit/caps/ (the caps that came
        # first keep theirs there), but nowhere outside the checkout.
        if not (wit.is_relative_to(cap_dir) or wit.is_relative_to(source_root)):
            raise BuildError(f"{file}: at [embedded].wit: {t['wit']!r} is outside the source tree")
        if not wit.is_file():
            raise BuildError(f"{file}: at [embedded].wit: {t['wit']!r} does not exist ({wit})")
        for i, rel in enumerate(t.get("vendor_sources", ())):
            if not rel.startswith("@"):
                raise BuildError(f"{file}: at [embedded].vendor_sources[{i}]: {rel!r} is not in a vendored "
                                 "source ('@<vendor>/...'); list the cap's own files in sources")
        embedded = EmbeddedFace(
            wit=wit, world=t["world"], interface=t["interface"], guest_module=t["guest_module"],
            stock=t.get("stock", True), sources=tuple(t["sources"]),
            include_dirs=tuple(t.get("include_dirs", ())), cflags=tuple(t.get("cflags", ())),
            vendor_sources=tuple(t.get("vendor_sources", ())), vendor_cflags=tuple(t.get("vendor_cflags", ())),
            binding=GuestBinding(t["binding"]["module"], tuple(t["binding"]["sources"])) if "binding" in t else None)
        if embedded.world.split("/")[0] != embedded.interface.split("/")[0]:
            raise BuildError(f"{file}: at [embedded].interface: {embedded.interface!r} is not in the package "
                             f"of world {embedded.world!r}")

    bench = _bench_spec(file, doc["bench"]) if "bench" in doc else None
    return Manifest(cap_dir, cap["name"], cap["version"], cap["description"], shim, vendors, dynlink, embedded,
                    doc.get("static"), bench=bench, interface=interface)


def _vendor(file: Path, name: str, table: dict[str, Any], base: Path) -> Vendor:
    """One ``[vendor.<name>]`` table, already checked against the schema;
    ``base`` is the folder its ``patches`` are relative to (the cap's)."""
    if ("pypi" in table) == ("url" in table):
        raise BuildError(f"{file}: at {toml_path(('vendor', name))}: give exactly one of pypi "
                         "(a registry source distribution) and url")
    patches = []
    for i, rel in enumerate(table.get("patches", ())):
        where = f"{file}: at {toml_path(('vendor', name, 'patches', i))}"
        patch = inside(base.resolve(), rel, where)
        if not patch.is_file():
            raise BuildError(f"{where}: {rel!r} does not exist")
        patches.append(patch)
    return Vendor(name=name, pypi=table.get("pypi"), sha256=table["sha256"], root=table.get("root", ""),
                  url=table.get("url"), version=table.get("version", ""),
                  cut_after=tuple(sorted(table.get("cut_after", {}).items())), patches=tuple(patches))


def sdk_vendors() -> dict[str, Vendor]:
    """The SDK's ``[vendor.*]`` pins (caps/_sdk/sdk.toml), merged into every
    cap's. Why one place: the generated dynlink face of every cap with
    ``[interface]`` compiles zcbor, and two pins of one library drift apart.
    Read on every call (a small file), so an edited pin is never stale."""
    doc = read_toml(SDK_MANIFEST)
    extra = sorted(set(doc) - {"vendor"})
    if extra:
        raise BuildError(f"{SDK_MANIFEST}: at [{extra[0]}]: the SDK's file holds only [vendor.*] tables")
    vendors = {}
    for name, table in doc.get("vendor", {}).items():
        for problem, prefix in ((SCHEMA.first_problem(name, definition="vendorName"), ("vendor",)),
                                (SCHEMA.first_problem(table, definition="vendor"), ("vendor", name))):
            if problem is not None:
                raise BuildError(problem_text(SDK_MANIFEST, problem, prefix))
        vendors[name] = _vendor(SDK_MANIFEST, name, table, SDK_MANIFEST.parent)
    return vendors


def _interface(file: Path, cap_dir: Path, source_root: Path, t: dict[str, Any] | None) -> InterfaceDecl | None:
    """``[interface]``, its WIT checked like ``[embedded].wit``: in the cap
    folder or elsewhere in the checkout (wit/caps/), never outside it, since
    the build's cache key must see it."""
    if t is None:
        return None
    wit = (cap_dir / t["wit"]).resolve()
    in_tree = cap_dir.is_relative_to(source_root) and wit.is_relative_to(source_root)
    if not (wit.is_relative_to(cap_dir) or in_tree):
        where = "source tree" if cap_dir.is_relative_to(source_root) else "cap folder"
        raise BuildError(f"{file}: at [interface].wit: {t['wit']!r} is outside the {where}")
    if not wit.is_file():
        raise BuildError(f"{file}: at [interface].wit: {t['wit']!r} does not exist ({wit})")
    if t["world"].split("/")[0] != t["export"].split("/")[0]:
        raise BuildError(f"{file}: at [interface].export: {t['export']!r} is not in the package "
                         f"of world {t['world']!r}")
    return InterfaceDecl(wit, t["world"], t["export"])


def inside(cap_dir: Path, rel: str, where: str) -> Path:
    """``rel`` under the cap folder. Why refuse anything outside: the cache key
    hashes the cap folder, so a file elsewhere could change unnoticed."""
    path = (cap_dir / rel).resolve()
    if not path.is_relative_to(cap_dir):
        raise BuildError(f"{where}: {rel!r} is outside the cap folder {cap_dir}")
    return path


def resolve(manifest: Manifest, rel: str, vendors: dict[str, Path], where: str) -> Path:
    """A manifest path: ``@<vendor>/...`` inside a fetched vendor, else in the cap folder."""
    if rel.startswith("@"):
        vname, _, inner = rel[1:].partition("/")
        if vname not in manifest.vendors:
            raise BuildError(f"{where}: {rel!r} names vendor {vname!r}, but there is no [vendor.{vname}]")
        top = vendors[vname]
        path = (top / inner).resolve()
        if not path.is_relative_to(top):
            raise BuildError(f"{where}: {rel!r} leaves the vendored folder")
    else:
        path = inside(manifest.dir, rel, where)
    if not path.exists():
        raise BuildError(f"{where}: {rel!r} does not exist ({path})")
    return path


def check_vendor_refs(manifest: Manifest, rels: tuple[str, ...], where: str) -> None:
    """Every ``@<vendor>/`` among ``rels`` names a ``[vendor.*]`` table (checked
    before anything is downloaded)."""
    for i, rel in enumerate(rels):
        vname = rel[1:].partition("/")[0] if rel.startswith("@") else None
        if vname is not None and vname not in manifest.vendors:
            raise BuildError(f"{where}[{i}]: {rel!r} names vendor {vname!r}, but there is no [vendor.{vname}]")


def embeddable(caps_dir: Path | None = None) -> dict[str, Manifest]:
    """The caps under ``caps_dir`` (default ``caps/``) with an ``[embedded]`` face, by name.

    A guest embeds a cap by name and the compose script finds it by folder,
    so the two must agree.

    Raises:
        BuildError: a manifest there is broken, or names itself unlike its folder.
    """
    return dict(_embeddable(Path(caps_dir or CAPS_DIR).resolve(), _tree_stamp(Path(caps_dir or CAPS_DIR))))


def _tree_stamp(caps_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """Changes whenever a manifest does, so the cache below never serves stale ones."""
    out = []
    for file in sorted(caps_dir.glob(f"*/{MANIFEST}")):
        st = file.stat()
        out.append((str(file), st.st_mtime_ns, st.st_size))
    return tuple(out)


@cache
def _embeddable(caps_dir: Path, _stamp: tuple[tuple[str, int, int], ...]) -> dict[str, Manifest]:
    found = {}
    for file in sorted(caps_dir.glob(f"*/{MANIFEST}")):
        if file.parent.name.startswith(("_", ".")) or "embedded" not in read_toml(file):
            continue
        manifest = load_manifest(file.parent)
        if manifest.name != file.parent.name:
            raise BuildError(f"{file}: at [cap].name: {manifest.name!r} must be its folder's name "
                             f"{file.parent.name!r} (a guest embeds a cap by its folder)")
        found[manifest.name] = manifest
    return found
