"""Builds the typed, embeddable face of a cap: a component for ``wac plug``.

An embedded cap is the cap's shared C core plus a thin C "face" that
implements the cap's typed WIT world. Everything the face needs is in the
``[embedded]`` table of the cap's ``cap.toml`` (its WIT file, world and
interface, C sources and flags, vendored sources, the guest module that binds
the import; :mod:`pylon.build.manifest`, docs/embedded.md), so no list of caps
lives here. The pipeline, one step per tool:

1. ``wit-bindgen c`` generates the canonical-ABI glue for the world
   (``bindings.c`` / ``bindings.h``); the face implements its ``exports_*``
   functions and nothing is hand-written at the ABI level.
2. ``zig cc -target wasm32-wasi`` compiles the face, the core and any
   third-party source, and links a reactor core module.
3. ``wasm-tools component new`` makes the component (the world's type
   rides in the ``bindings_component_type.o`` object wit-bindgen emits,
   which does what ``wasm-tools component embed`` would). A cap whose core module
   imports WASI preview1 (SQLite's file I/O through wasi-libc) is adapted
   with the ``wasi_snapshot_preview1`` reactor adapter, so the component
   imports WASI 0.2 interfaces, which the guest's host satisfies once the cap
   is plugged into the guest.
4. ``wasm-tools validate`` checks the result and the component's WIT is
   checked to export the cap's interface.

Every cap is linked with wasi-libc's preopen table made lazy
(:func:`_lazy_preopens_object`): zig's copy reads the preopens in a
constructor, so a cap that opens files would call WASI while the guest is
being instantiated, and the engine can then make no instance ahead of a run
(docs/api.md). wasi-libc itself reads them on the first path lookup.

Third-party C (SQLite, zstd) is never committed: the manifest's
``[vendor.*]`` tables pin it (shared with the cap's other faces) and
:mod:`pylon.build.vendor` fetches it through the pinned download helper
(:mod:`pylon.build.download`). The adapter comes from the crates.io crate
that ships it, fetched with ``cargo metadata`` and kept in the same download
cache under its pinned sha256.

Outputs land in ``toolchain.output_dir("cap-<name>-embedded", <hash>)``; the
hash covers the face's own sources and include folders, its WIT, its
``[embedded]`` table, the pins of the vendored sources it uses, the
compiler flags and this module (the recipe), so an unchanged cap is a cache hit and an edit to another
face (dynlink.c, say) does not rebuild this one.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pylon import paths
from pylon.build import download, manifest, toolchain
from pylon.build.manifest import EmbeddedFace, Manifest
from pylon.build.vendor import fetch_vendor
from pylon.errors import BuildError

__all__ = ["build_embedded_cap", "embedded_caps", "wasi_adapter"]

#: Flags every cap is compiled with. Bulk memory makes memcpy/memset single
#: instructions (large lists cross the boundary as copies); SIMD lets clang
#: vectorise checksum and match-finding loops. wasmtime enables both.
COMMON_CFLAGS = ("-O2", "-mbulk-memory", "-msimd128", "-fno-exceptions")

#: The crate that ships the wasi_snapshot_preview1 -> WASI 0.2 adapters
#: (the ones wasmtime publishes), and the digest of its reactor adapter.
#: 48.0.1 imports WASI @0.2.12, the version the guest world includes.
ADAPTER_CRATE = ("wasi-preview1-component-adapter-provider", "48.0.1")
ADAPTER_SHA256 = "0baeb0a94aa242dba0403ef5656d6fe7ac7daf78db99e887a76d3a056bcbe4df"
ADAPTER_FILE = "wasi_snapshot_preview1.reactor.wasm"


def embedded_caps() -> dict[str, EmbeddedFace]:
    """Every cap under ``caps/`` with an ``[embedded]`` face, by name."""
    return {name: m.embedded for name, m in manifest.embeddable().items() if m.embedded is not None}


def __getattr__(name: str) -> Any:
    # ``CAPS``: the embedded faces by name (what this module once listed by
    # hand), read from the manifests when asked for.
    if name == "CAPS":
        return embedded_caps()
    # The zstd pin, for tests/test_zstd_dynlink.py (it predates the one
    # manifest, and checks that the embedded and dynlink faces build the
    # same zstd: now the same [vendor.zstd] table by construction).
    if name == "ZSTD_SOURCE":
        from types import SimpleNamespace

        vendor = manifest.load_manifest(manifest.CAPS_DIR / "zstd").vendors["zstd"]
        package, _, version = (vendor.pypi or "").partition("==")
        return SimpleNamespace(package=package, version=version, sha256=vendor.sha256)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def wasi_adapter() -> Path:
    """The wasi_snapshot_preview1 reactor adapter, fetched from crates.io once.

    ``cargo metadata`` on a one-dependency scratch manifest makes cargo fetch
    (and checksum) the crate into its registry cache; the adapter file is
    then taken into the download cache by the pinned download helper, which
    checks it against its pinned sha256. Later builds find it there and run
    no cargo at all.
    """
    crate, version = ADAPTER_CRATE
    cached = download.cached(ADAPTER_SHA256)
    if cached is not None:
        return cached
    cargo = shutil.which("cargo")
    if not cargo:
        raise BuildError(f"cargo is needed once to fetch {crate} {version} (the WASI preview1 adapter)")
    scratch = toolchain.staging_dir(paths.tools_root() / f"{crate}-fetch")
    try:
        (scratch / "src").mkdir()
        (scratch / "src" / "lib.rs").write_text("")
        (scratch / "Cargo.toml").write_text(
            '[package]\nname = "pylon-adapter-fetch"\nversion = "0.0.0"\nedition = "2021"\n\n'
            f'[dependencies]\n{crate} = "={version}"\n'
        )
        # Not toolchain.run: that merges stderr (cargo's progress lines) into
        # the stdout this needs to parse as JSON.
        result = subprocess.run([cargo, "metadata", "--format-version", "1", "--manifest-path",
                                 str(scratch / "Cargo.toml")], text=True, capture_output=True)
        if result.returncode != 0:
            raise BuildError(f"cargo metadata (fetching {crate} {version}) failed (exit {result.returncode}):\n"
                             f"{result.stderr.strip()}")
        meta = json.loads(result.stdout)
        manifests = [p["manifest_path"] for p in meta["packages"] if p["name"] == crate]
        if not manifests:
            raise BuildError(f"cargo metadata did not resolve {crate} {version}")
        source = Path(manifests[0]).parent / "artefacts" / ADAPTER_FILE
        if not source.exists():
            raise BuildError(f"{crate} {version} has no {ADAPTER_FILE} at {source}")
        return download.fetch(download.Pin(sha256=ADAPTER_SHA256, url=source.as_uri(),
                                           what=f"{ADAPTER_FILE} of {crate} {version}",
                                           pinned_by="pylon.build.embedded"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _zig_cc(args: list[str], *, what: str) -> None:
    toolchain.run([*toolchain.zig(), "cc", "-target", "wasm32-wasi", *args], what=what)


def _where(cap: Manifest) -> str:
    return f"{cap.file}: at [embedded]"


def _vendor_of(rel: str) -> str | None:
    return rel[1:].partition("/")[0] if rel.startswith("@") else None


def _used_vendors(cap: Manifest, face: EmbeddedFace) -> list[str]:
    """The vendors the face names (``@<vendor>/...``), checked before any download."""
    where = _where(cap)
    for key in ("sources", "include_dirs", "vendor_sources"):
        manifest.check_vendor_refs(cap, getattr(face, key), f"{where}.{key}")
    return sorted({v for rel in (*face.sources, *face.include_dirs, *face.vendor_sources)
                   if (v := _vendor_of(rel)) is not None})


def _vendored_objects(cap: Manifest, face: EmbeddedFace, roots: dict[str, Path]) -> list[Path]:
    """Compiled third-party objects, cached per (pinned sha256 with its patches, source, flags):
    SQLite's amalgamation alone takes ~40 s."""
    if not face.vendor_sources:
        return []
    flags = [*COMMON_CFLAGS, *face.vendor_cflags]
    pins = sorted({cap.vendors[_vendor_of(s) or ""].tree_key for s in face.vendor_sources})
    key = toolchain.source_hash([], extra=json.dumps([pins, face.vendor_sources, flags]))
    folder = toolchain.output_dir(f"vendor-obj-{cap.name}", key)
    objects = [folder / f"{i:02d}-{Path(s).stem}.o" for i, s in enumerate(face.vendor_sources)]
    if all(o.exists() for o in objects):
        return objects
    partial = toolchain.staging_dir(folder)
    for i, rel in enumerate(face.vendor_sources):
        source = manifest.resolve(cap, rel, roots, f"{_where(cap)}.vendor_sources[{i}]")
        top = roots[_vendor_of(rel) or ""]
        _zig_cc([*flags, "-ffunction-sections", "-fdata-sections", "-I", str(top), "-c", str(source),
                 "-o", str(partial / objects[i].name)], what=f"zig cc {rel} ({cap.name})")
    toolchain.publish_dir(partial, folder)
    return objects


#: The line of zig's wasi-libc ``preopens.c`` that reads the preopens at start-up.
_PREOPENS_CONSTRUCTOR = "__attribute__((constructor(51)))"


def _lazy_preopens_object() -> Path:
    """wasi-libc's ``preopens.c`` from the installed zig, compiled without its constructor.

    zig patches wasi-libc to read the preopens (``fd_prestat_get``, so the
    WASI adapter's whole start-up: stdio streams and preopened folders) in a
    constructor, which a reactor runs when the component is instantiated.
    Linked ahead of libc, this object defines every symbol of that file, so
    libc's copy is never pulled in; wasi-libc's own path lookups
    (``__wasilibc_find_relpath``) read the preopens on first use, as upstream
    wasi-libc does. The constructor line must be found exactly once, or the
    build stops: a zig that changed the file needs this step looked at again.
    """
    found = importlib.util.find_spec("ziglang")
    if found is None or not found.submodule_search_locations:
        raise BuildError("zig not found: pip install ziglang")
    zig_lib = Path(list(found.submodule_search_locations)[0]) / "lib"
    source = zig_lib / "libc" / "wasi" / "libc-bottom-half" / "sources" / "preopens.c"
    internal = zig_lib / "libc" / "wasi" / "libc-top-half" / "musl" / "src" / "internal"
    text = source.read_text()
    if text.count(_PREOPENS_CONSTRUCTOR + "\n") != 1:
        raise BuildError(f"{source}: expected one {_PREOPENS_CONSTRUCTOR} line (zig's wasi-libc changed); "
                         "see pylon.build.embedded._lazy_preopens_object")
    out = toolchain.output_dir("wasi-libc-lazy-preopens", toolchain.source_hash([source], extra=str(COMMON_CFLAGS)))
    obj = out / "lazy_preopens.o"
    if obj.exists():
        return obj
    work = toolchain.staging_dir(out)
    lazy = work / "lazy_preopens.c"
    lazy.write_text(text.replace(_PREOPENS_CONSTRUCTOR + "\n", "/* read on first use: see pylon.build.embedded */\n"))
    _zig_cc([*COMMON_CFLAGS, "-I", str(internal), "-c", str(lazy), "-o", str(work / obj.name)],
            what="zig cc preopens.c (lazy)")
    lazy.unlink()
    toolchain.publish_dir(work, out)
    return obj


def _core_imports_wasi(core: Path) -> bool:
    text = toolchain.run([toolchain.wasm_tools(), "print", str(core)], what="wasm-tools print").stdout
    return '(import "wasi_snapshot_preview1"' in text


def cache_key(cap: Manifest) -> str:
    """The source hash of everything that goes into the cap's embedded component.

    Only this face's inputs: the cap's folder also holds other faces
    (dynlink.c...) whose edits must not rebuild this one; a vendored source
    counts by its pinned sha256 (so no download is needed to find a cache hit).
    """
    face = cap.embedded
    assert face is not None
    where = _where(cap)
    # This file is the build's recipe (flags, link order, the lazy preopen
    # table): a change to it rebuilds every embedded cap, as it rebuilds the
    # guests that embed them.
    own = [face.wit, Path(__file__)]
    for key in ("sources", "include_dirs"):
        for i, rel in enumerate(getattr(face, key)):
            if _vendor_of(rel) is None:
                path = manifest.inside(cap.dir, rel, f"{where}.{key}[{i}]")
                if not path.exists():
                    raise BuildError(f"{where}.{key}[{i}]: {rel!r} does not exist ({path})")
                own.append(path)
    # Not the guest binding: it is built into the guest, not into this component.
    table = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(face).items() if k != "binding"}
    pins = {name: cap.vendors[name].tree_key for name in _used_vendors(cap, face)}
    return toolchain.source_hash(own, extra=json.dumps(
        [table, pins, COMMON_CFLAGS, ADAPTER_SHA256, toolchain.CARGO_TOOLS["wit-bindgen"]], sort_keys=True))


def build_embedded_cap(name: str) -> Path:
    """Builds (or finds cached) the embedded component of cap ``name``.

    Returns the path of ``<name>.wasm``, a component exporting the
    ``interface`` its manifest names, ready for ``wac plug``.

    Raises:
        BuildError: the cap is unknown or has no ``[embedded]`` face, its
            manifest is broken, a tool is missing, a download does not match
            its pinned digest, or a tool failed (its output is in the message).
    """
    caps = manifest.embeddable()
    cap = caps.get(name)
    if cap is None or cap.embedded is None:
        raise BuildError(f"no embedded cap named {name!r}; known: {', '.join(sorted(caps))} "
                         "(a cap is embeddable when its cap.toml has an [embedded] table)")
    face = cap.embedded
    out = toolchain.output_dir(f"cap-{name}-embedded", cache_key(cap))
    component = out / f"{name}.wasm"
    if component.exists():
        return component

    where = _where(cap)
    roots = {v: fetch_vendor(cap.vendors[v]) for v in _used_vendors(cap, face)}
    objects = _vendored_objects(cap, face, roots)
    wit_bindgen = toolchain.cargo_tool("wit-bindgen")
    wasm_tools = toolchain.wasm_tools()
    work = toolchain.staging_dir(out)
    gen = work / "gen"
    # Besides bindings.c/.h this writes bindings_component_type.o, a wasm
    # object whose custom section carries the world's type; linking it in
    # is what `wasm-tools component embed` would otherwise do.
    toolchain.run([wit_bindgen, "c", "--world", face.world, "--rename-world", "bindings",
                   "--out-dir", str(gen), str(face.wit)], what=f"wit-bindgen c ({face.world})")

    includes = ["-I", str(gen)]
    for i, rel in enumerate(face.include_dirs):
        includes += ["-I", str(manifest.resolve(cap, rel, roots, f"{where}.include_dirs[{i}]"))]
    flags = [*COMMON_CFLAGS, *face.cflags, "-Wall", "-Wextra", "-Wno-unused-parameter"]
    objects.append(gen / "bindings_component_type.o")
    units = [gen / "bindings.c",
             *(manifest.resolve(cap, rel, roots, f"{where}.sources[{i}]") for i, rel in enumerate(face.sources))]
    for i, unit in enumerate(units):
        obj = work / f"{i:02d}-{unit.stem}.o"
        _zig_cc([*flags, *includes, "-c", str(unit), "-o", str(obj)], what=f"zig cc {unit.name} ({name})")
        objects.append(obj)

    core = work / f"{name}.core.wasm"
    # A reactor: no main, exports are called at will. --gc-sections drops
    # what the exports do not reach (zstd's dictionary builder, say, and the
    # preopen table of a cap that opens no file).
    # The lazy preopen table goes first: the linker then has its symbols
    # before any object asks libc for them (libc's copy would be pulled in
    # and clash).
    _zig_cc(["-mexec-model=reactor", "-Wl,--gc-sections", "-Wl,--strip-debug", "-o", str(core),
             str(_lazy_preopens_object()), *map(str, objects)], what=f"link {name} core module")

    new = [wasm_tools, "component", "new", str(core), "-o", str(work / component.name)]
    if _core_imports_wasi(core):
        new += ["--adapt", f"wasi_snapshot_preview1={wasi_adapter()}"]
    toolchain.run(new, what=f"wasm-tools component new ({name})")
    toolchain.run([wasm_tools, "validate", str(work / component.name)], what=f"wasm-tools validate ({name})")
    wit = toolchain.run([wasm_tools, "component", "wit", str(work / component.name)],
                        what=f"wasm-tools component wit ({name})").stdout
    if f"export {face.interface};" not in wit:
        raise BuildError(f"{name}.wasm does not export {face.interface} (the interface {cap.file} names); "
                         f"its WIT is:\n{wit}")
    for scratch in (gen, *work.glob("*.o")):
        if scratch.is_dir():
            shutil.rmtree(scratch)
        else:
            scratch.unlink()
    toolchain.publish_dir(work, out)
    return component
