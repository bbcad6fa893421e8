"""Builds the portable guest: pylon.wasm that runs on any component host.

The stock guest imports ``compose:dynlink/linker``, which only Pylon's engine
implements. The portable guest is the same guest with that import filled at
build time by the *router* (``caps/router``): one small C component that
exports ``compose:dynlink/linker`` and serves, from inside the composition,
the dynlink faces of the routed caps, compiled into it, and
``not-found`` for any other name. What is left to import is WASI alone, and
the guest's ``wasi:cli/run`` export lets ``wasmtime run``, wasmtime-py or jco
start it (docs/portable.md).

The routed caps are every cap under ``caps/`` with a ``[dynlink]`` face
(:func:`routed_caps`); adding one takes no change here, as long as its
global symbols do not clash with the others' (the link says so if they do).

The steps, each a :class:`~pylon.errors.BuildError` with the tool's own
output when it fails:

1. the guest, by :func:`pylon.build.guest.build_guest` (stock by default);
2. the router (:func:`build_router`): ``wit-bindgen c`` for world ``router``
   (``caps/router/router.wit``), every routed cap's dynlink sources compiled
   by ``zig cc`` with its own flags and its entry point renamed
   (``caps/_sdk/pylon_router.h`` says how), the generated route table, one
   reactor core module that must import nothing, then ``wasm-tools
   component embed`` + ``new``;
3. ``wac plug`` the router into the guest, then check the result imports
   only ``wasi:*`` and still exports both entry points.

Outputs are cached under ``toolchain.output_dir`` (``router-<hash>``,
``portable-<hash>``), keyed by every input, never in the checkout.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pylon.build import caps, guest, toolchain, wit
from pylon.build.manifest import CAPS_DIR, Manifest, load_manifest, resolve
from pylon.errors import BuildError

__all__ = ["BuiltPortable", "BuiltRouter", "build_portable", "build_router", "check_portable", "routed_caps"]

ROUTER_DIR = CAPS_DIR / "router"
ROUTER_WORLD = "router"
LINKER = "compose:dynlink/linker@0.1.0"
#: The guest's two entry points; the composition must keep both.
REQUIRED_EXPORTS = ("pylon:guest/entry@0.1.0", "wasi:cli/run@0.2.12")

_SYMBOL = re.compile(r"[^a-z0-9]")


@dataclass(frozen=True)
class BuiltPortable:
    """A built portable guest and what went into it."""

    path: Path
    digest: str  # "sha256:<hex>" of the component file
    routed: tuple[str, ...]
    embedded: tuple[str, ...]


def build_portable(*, embed: tuple[str, ...] | None = None) -> BuiltPortable:
    """Builds (or returns the cached) portable guest.

    ``embed``: caps the guest embeds with ``wac plug`` as usual (default: the
    stock set, :func:`pylon.build.guest.stock_embedded`); the routed caps are
    :func:`routed_caps` either way.
    """
    chosen = guest.check_embed(guest.stock_embedded() if embed is None else embed)
    built_guest = guest.build_guest(embed=chosen)
    router = build_router()
    key = toolchain.source_hash(
        [], extra=f"{built_guest.digest}|{router.digest}|wac {toolchain.CARGO_TOOLS['wac'][1]}")
    out_dir = toolchain.output_dir("portable", key)
    out = out_dir / "pylon-portable.wasm"
    if not out.exists():
        staging = toolchain.staging_dir(out_dir)
        try:
            composed = staging / out.name
            toolchain.run([toolchain.cargo_tool("wac"), "plug", str(built_guest.path),
                           "--plug", str(router.path), "-o", str(composed)], what="wac plug (router)")
            check_portable(composed)
            toolchain.publish_dir(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return BuiltPortable(out, "sha256:" + toolchain.sha256_file(out), router.routed, chosen)


def check_portable(component: Path) -> None:
    """Refuses a composition that imports anything but WASI or lost an entry point."""
    imports, exports = caps.component_world(component)
    foreign = sorted(i for i in imports if not i.startswith("wasi:"))
    if foreign:
        raise BuildError(f"the portable guest still imports {', '.join(foreign)}; only wasi:* may be left")
    missing = [e for e in REQUIRED_EXPORTS if e not in exports]
    if missing:
        raise BuildError(f"the portable guest does not export {', '.join(missing)}")


# -- the router ---------------------------------------------------------------

@dataclass(frozen=True)
class BuiltRouter:
    """The router component."""

    path: Path
    digest: str
    routed: tuple[str, ...]


def routed_caps() -> tuple[str, ...]:
    """The caps the router serves: every cap in ``caps/`` with a hand-written
    dynlink face (by folder, which is the cap's name).

    A face generated from an ``[interface]`` (docs/cap-interface.md) is not
    routed: its dispatch, wit-bindgen's ``bindings.c`` and the SDK's handle
    table are one per component (global symbols), and the router has no
    ``$pylon/init`` to key its handles. Such a cap answers ``not-found`` under
    a portable host; its embedded face (if the guest has one) is what runs
    there, as SQLite's does."""
    return tuple(cap_dir.name for cap_dir in caps.find_caps(CAPS_DIR, face="dynlink")
                 if caps.load_manifest(cap_dir).interface is None)


def _router_key(routed: tuple[str, ...]) -> str:
    """The source hash of everything that goes into the router."""
    items: list[Path | str | bytes] = [ROUTER_DIR, caps.SDK_DIR, caps.WIT_DIR, Path(__file__)]
    items += [CAPS_DIR / name for name in routed]
    # The tools whose output lands in the component, the same as for a cap.
    extra = json.dumps({"caps": routed, "tools": caps._tool_versions()}, sort_keys=True)
    return toolchain.source_hash(items, extra=extra)


def build_router() -> BuiltRouter:
    """Builds (or returns the cached) router component."""
    routed = routed_caps()
    if not routed:
        raise BuildError(f"no cap in {CAPS_DIR} has a [dynlink] face: the router would serve nothing")
    out_dir = toolchain.output_dir("router", _router_key(routed))
    out = out_dir / "router.wasm"
    if out.exists():
        return BuiltRouter(out, "sha256:" + toolchain.sha256_file(out), routed)
    manifests = [load_manifest(CAPS_DIR / name) for name in routed]
    # The vendors each dynlink face names, fetched as `composectl cap build` does.
    vendors = {m.name: caps._used_vendors(m) for m in manifests}
    staging = toolchain.staging_dir(out_dir)
    try:
        work = staging / "work"
        wit_dir = wit.assemble(ROUTER_DIR, work / "wit", deps=[caps.WIT_DIR])
        gen = _bindings(wit_dir, work / "gen", manifests)
        objects = [obj for m in manifests for obj in _compile_cap(m, vendors[m.name], gen, work / "obj")]
        core = _link(gen, objects, work)
        _componentize(wit_dir, core, staging / out.name, work)
        shutil.rmtree(work)
        toolchain.publish_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BuiltRouter(out, "sha256:" + toolchain.sha256_file(out), routed)


def _symbol(cap: str) -> str:
    return "pylon_route_invoke_" + _SYMBOL.sub("_", cap)


def _bindings(wit_dir: Path, gen: Path, manifests: list[Manifest]) -> Path:
    """router.h/router.c from wit-bindgen, and the files the build generates beside them."""
    toolchain.run([toolchain.cargo_tool("wit-bindgen"), "c", "--world", ROUTER_WORLD, "--no-object-file",
                   "--out-dir", str(gen), str(wit_dir)], what="wit-bindgen c (router)")
    # A cap's dynlink.c includes "cap.h": inside the router that is the
    # mapping onto the router's bindings.
    (gen / "cap.h").write_text('/* Generated by pylon.build.portable. */\n#include "pylon_router.h"\n')
    # The component type is embedded by `wasm-tools component embed`, as for
    # caps (see pylon.build.caps._bindings), so the forced symbol is a no-op.
    (gen / "force_link.c").write_text(
        f"/* Generated by pylon.build.portable. */\n"
        f"void __component_type_object_force_link_{ROUTER_WORLD}(void) {{}}\n")
    (gen / "routes.c").write_text(_routes_c(manifests))
    return gen


def _c_bytes(data: bytes) -> str:
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + 16]) for i in range(0, len(data), 16)]
    return "{\n    " + ",\n    ".join(rows) + "\n}" if data else "{0}"


def _routes_c(manifests: list[Manifest]) -> str:
    """The route table: name, entry point and shim of each routed cap, by name."""
    ordered = sorted(manifests, key=lambda m: m.name)
    lines = ["/* Generated by pylon.build.portable: the caps this router serves. */",
             '#include "pylon_router.h"', ""]
    for m in ordered:
        lines.append(f"bool {_symbol(m.name)}(cap_string_t *method, cap_list_u8_t *payload, cap_list_u8_t *ret,")
        lines.append("        exports_compose_dynlink_provider_error_t *err);")
        if m.shim is not None:
            lines.append(f"static const char shim_{_SYMBOL.sub('_', m.name)}[] = {_c_bytes(m.shim.read_bytes())};")
    lines += ["", "const pylon_route_t pylon_routes[] = {"]
    for m in ordered:
        if m.shim is not None:
            shim = f"shim_{_SYMBOL.sub('_', m.name)}"
            lines.append(f'    {{"{m.name}", {_symbol(m.name)}, {shim}, sizeof {shim}}},')
        else:
            lines.append(f'    {{"{m.name}", {_symbol(m.name)}, NULL, 0}},')
    lines += ["};", f"const size_t pylon_routes_count = {len(ordered)};",
              f'const char pylon_routes_names[] = "{", ".join(m.name for m in ordered)}";', ""]
    return "\n".join(lines)


def _zig_cc(args: list[str], *, what: str, cwd: Path | None = None) -> None:
    toolchain.run([*toolchain.zig(), "cc", *caps.BASE_CFLAGS, *caps.ALLOC_FLAGS, *args], what=what, cwd=cwd)


def _compile_cap(manifest: Manifest, vendors: dict[str, Path], gen: Path, obj_root: Path) -> list[Path]:
    """One object per source of the cap's dynlink face, with the cap's own
    include folders and flags, and its entry point renamed."""
    face = manifest.dynlink
    assert face is not None
    where = f"{manifest.file}: at [dynlink]"
    includes = [gen, caps.SDK_DIR,
                *(resolve(manifest, d, vendors, f"{where}.include_dirs[{i}]") for i, d in enumerate(face.include_dirs))]
    out = obj_root / manifest.name
    out.mkdir(parents=True)
    objects = []
    for i, rel in enumerate(face.sources):
        source = resolve(manifest, rel, vendors, f"{where}.sources[{i}]")
        obj = out / f"{i}-{source.stem}.o"
        _zig_cc(["-c", f"-DPYLON_ROUTE_INVOKE={_symbol(manifest.name)}", *(f"-I{d}" for d in includes),
                 *face.cflags, str(source), "-o", str(obj)],
                what=f"zig cc ({manifest.name}: {rel}, for the router)", cwd=manifest.dir)
        objects.append(obj)
    return objects


def _link(gen: Path, objects: list[Path], work: Path) -> Path:
    """The router's own C, the bindings and the route table, linked with
    every cap's objects into one reactor module that must import nothing."""
    core = work / "core.wasm"
    _zig_cc([f"-I{gen}", f"-I{caps.SDK_DIR}", "-Wall", "-Wextra",
             str(ROUTER_DIR / "router.c"), str(gen / "router.c"), str(gen / "routes.c"),
             str(gen / "force_link.c"), str(caps.BIGALLOC), *map(str, objects), "-o", str(core)],
            what="zig cc (router)")
    # The router's own resource intrinsics (`[export]...` `[resource-new]...`)
    # are the component model's, not imports from the host.
    imports = [(m, n) for m, n in caps.core_imports(core) if not m.startswith("[export]")]
    if imports:
        listed = ", ".join(f"{m}.{n}" for m, n in imports[:8])
        raise BuildError(f"the router's core module imports {listed}; it must import nothing "
                         "(a routed cap may not use WASI: see docs/caps.md)")
    return core


def _componentize(wit_dir: Path, core: Path, out: Path, work: Path) -> None:
    wasm_tools = toolchain.wasm_tools()
    embedded = work / "embedded.wasm"
    toolchain.run([wasm_tools, "component", "embed", str(wit_dir), "--world", ROUTER_WORLD, str(core),
                   "-o", str(embedded)], what="wasm-tools component embed (router)")
    toolchain.run([wasm_tools, "component", "new", str(embedded), "-o", str(out)],
                  what="wasm-tools component new (router)")
    imports, exports = caps.component_world(out)
    if imports:
        raise BuildError(f"the router imports {sorted(imports)}; it must import nothing")
    if LINKER not in exports:
        raise BuildError(f"the router does not export {LINKER} (exports: {sorted(exports)})")
    toolchain.run([wasm_tools, "validate", str(out)], what="wasm-tools validate (router)")
