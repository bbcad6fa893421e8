"""Builds the guest, pylon.wasm: CPython + our guest package, by componentize-py.

A guest may embed caps (the second linkage mode): its world then also imports
each cap's typed interface (``wit/caps/<cap>.wit``), and after componentize-py
the real ``wac plug`` composes the caps' embedded components into it. The
result is checked to import exactly what is left for the host: WASI and
``compose:dynlink`` (``pylon:*`` imports all plugged).

Which caps can be embedded, and how, is read from each cap's ``cap.toml``
(its ``[embedded]`` table: :mod:`pylon.build.manifest`); nothing here lists
caps. ``stock = false`` there keeps a cap out of the stock guest.

Inputs (all hashed into the output folder's name): ``guest/`` (the app and
the guest package, ``pylon_guest``), ``wit/``, the WASI WIT of the engine's
wasmtime-wasi, cbor2's pure-Python wheel, the componentize-py version, the
set of embedded caps and their sources and manifests.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pylon import paths
from pylon.build import download, manifest, toolchain, wasm_listfree, wit
from pylon.build.guest_binding import build_dynlink_binding, build_guest_binding
from pylon.errors import BuildError

#: cbor2 for the guest. 5.6.x is the last line with a pure-Python
#: implementation (6.x is compiled only and cannot load in wasm).
CBOR2 = download.Pin(pypi="cbor2==5.6.5", wheel=True, what="cbor2 for the guest", pinned_by="pylon.build.guest",
                     sha256="3038523b8fc7de312bb9cdcbbbd599987e64307c4db357cd2030c472a6c7d468")

WORLD = "pylon:guest/pylon@0.1.0"
GUEST_PYTHON_DIRS = (paths.SOURCE_ROOT / "guest" / "python", paths.SOURCE_ROOT / "guest")


def embeddable() -> tuple[str, ...]:
    """Caps a guest can embed: those whose ``cap.toml`` has an ``[embedded]`` table."""
    return tuple(sorted(manifest.embeddable()))


def choose_embedded(with_caps: Iterable[str] | None, without_caps: Iterable[str] | None) -> tuple[str, ...]:
    """The caps a build embeds: exactly ``with_caps``, or the stock ones but
    ``without_caps`` (``composectl build --with / --without``).

    Raises:
        BuildError: both were given, or a name is not an embeddable cap.
    """
    if with_caps is not None and without_caps:
        raise BuildError("give --with (exactly these caps) or --without (stock minus these), not both")
    if with_caps is not None:
        return check_embed(with_caps)
    dropped = set(check_embed(without_caps or []))
    return tuple(c for c in stock_embedded() if c not in dropped)


def stock_embedded() -> tuple[str, ...]:
    """Caps the stock pylon.wasm embeds (every embeddable one unless its
    manifest says ``stock = false``), so a demo needs no staged blobs."""
    return tuple(name for name, m in sorted(manifest.embeddable().items()) if m.embedded and m.embedded.stock)


def __getattr__(name: str) -> Any:
    # The names callers used when the lists were written here by hand.
    if name == "EMBEDDABLE":
        return embeddable()
    if name == "STOCK_EMBEDDED":
        return stock_embedded()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class BuiltGuest:
    """A built guest component."""

    path: Path
    digest: str


def _componentize_version() -> str:
    out = subprocess.run([toolchain.componentize_py(), "--version"], capture_output=True, text=True)
    return out.stdout.strip()


def _fetch_cbor2(dest: Path) -> Path:
    """The pinned pure-Python cbor2 wheel (the download helper checks its
    sha256), unpacked into ``dest``."""
    wheel = download.fetch(CBOR2)
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            if member.startswith("cbor2/"):
                zf.extract(member, dest)
    return dest


@dataclass(frozen=True)
class GuestVariant:
    """A non-stock guest (the benchmarks' composed guest): another world and
    app module on top of the stock guest.

    ``wit_package`` is a folder holding one WIT package whose ``world`` may
    ``include pylon:guest/pylon@0.1.0`` and add imports; it is assembled with
    ``wit/guest``, ``wit/dynlink`` and WASI as deps. ``app`` is the
    componentize-py app module, looked up on ``python_paths`` first (they come
    before the stock guest's paths, so it may ``from app import Entry``).
    """

    name: str
    world: str
    wit_package: Path
    app: str
    python_paths: tuple[Path, ...] = ()


def _custom_world(embed: tuple[str, ...]) -> str:
    """A world adding each embedded cap's typed import to the base guest world."""
    faces = manifest.embeddable()
    imports = "".join(f"  import {faces[cap].embedded.interface};\n" for cap in embed)  # type: ignore[union-attr]
    return f"package pylon:guest@0.1.0;\n\nworld pylon-custom {{\n  include pylon;\n{imports}}}\n"


def check_embed(embed: Iterable[str]) -> tuple[str, ...]:
    """Validates and orders a set of cap names to embed."""
    chosen = tuple(sorted(set(embed)))
    known = embeddable()
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise BuildError(f"cannot embed {', '.join(unknown)}: embeddable caps are {', '.join(known)}")
    for cap in chosen:
        check_guest_module(manifest.embeddable()[cap])
    return chosen


def check_guest_module(cap: manifest.Manifest) -> Path:
    """The guest module an embedded cap names, which must exist and bind the import.

    Why check: a guest built with the cap but without a module importing
    ``wit_world.imports.<name>`` carries the cap and never calls it.

    Raises:
        BuildError: no such module in ``guest/python`` (or ``guest/``), or it
            does not import the cap's binding.
    """
    face = cap.embedded
    assert face is not None
    rel = Path(*face.guest_module.split("."))
    where = f"{cap.file}: at [embedded].guest_module"
    for base in GUEST_PYTHON_DIRS:
        for candidate in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
            if candidate.is_file():
                if f"wit_world.imports import {face.import_name}" not in candidate.read_text(encoding="utf-8"):
                    raise BuildError(f"{where}: {candidate} does not import wit_world.imports.{face.import_name}, "
                                     "the binding of the embedded cap")
                return candidate
    raise BuildError(f"{where}: no module {face.guest_module!r} in "
                     f"{' or '.join(str(d) for d in GUEST_PYTHON_DIRS)}")


def component_imports(path: Path) -> list[str]:
    """The interfaces a component imports (``ns:pkg/iface@ver``), per wasm-tools."""
    result = toolchain.run([toolchain.wasm_tools(), "component", "wit", str(path)],
                           what="wasm-tools component wit")
    names = []
    for line in result.stdout.splitlines():
        line = line.strip()
        if line.startswith("import ") and line.endswith(";"):
            names.append(line[len("import "):-1].strip())
    return names


def _plug(guest: Path, embed: tuple[str, ...], out: Path) -> None:
    """``wac plug`` the embedded caps into ``guest``; check what stays imported."""
    from pylon.build.embedded import build_embedded_cap

    plugs = [build_embedded_cap(cap) for cap in embed]
    cmd = [toolchain.cargo_tool("wac"), "plug", str(guest)]
    for plug in plugs:
        cmd += ["--plug", str(plug)]
    toolchain.run(cmd + ["-o", str(out)], what="wac plug")
    imports = component_imports(out)
    left = [i for i in imports if i.startswith("pylon:")]
    if left:
        raise BuildError(f"wac plug left caps unplugged: {', '.join(left)}")
    if not any(i.startswith("compose:dynlink/linker") for i in imports):
        raise BuildError("the composed guest lost its compose:dynlink/linker import")


def build_guest(*, embed: Iterable[str] | None = None, force: bool = False,
                variant: GuestVariant | None = None) -> BuiltGuest:
    """Builds (or returns the cached) guest, or a :class:`GuestVariant` of it.

    ``embed``: caps to compose into it with ``wac plug`` (default: all of
    :func:`stock_embedded` for the stock guest, none for a variant).

    Raises:
        BuildError: a tool failed, or ``embed`` names a cap that cannot be embedded.
    """
    embed = check_embed((stock_embedded() if variant is None else ()) if embed is None else embed)
    if embed and variant is not None:
        raise BuildError("a guest variant cannot embed caps")
    # C bindings (pylon/build/guest_binding.py): compose:dynlink's invoke in
    # every guest, and below each embedded cap's, which imports its cap's
    # interface and so goes on componentize-py's path only when embedded.
    bindings: list[Path] = [build_dynlink_binding()]
    root = paths.SOURCE_ROOT
    items: list[Path] = [root / "guest", root / "wit", wit.wasi_wit_dir(),
                         root / "python" / "pylon" / "build" / "wasm_listfree.py"]
    extra = f"{_componentize_version()}|{CBOR2.pypi}|{CBOR2.sha256}|embed={','.join(embed)}"
    if embed:
        faces = manifest.embeddable()
        build = root / "python" / "pylon" / "build"
        items += [root / "caps" / cap for cap in embed] + [faces[cap].embedded.wit for cap in embed]  # type: ignore[union-attr]
        items += [root / "caps" / "_sdk", build / "embedded.py", build / "manifest.py", build / "vendor.py"]
        # And the components themselves, as built (found in their cache, or
        # built now): a guest is never reused with other bytes nested in it
        # than this checkout's caps.
        from pylon.build.embedded import build_embedded_cap

        items += [build_embedded_cap(cap) for cap in embed]
        bindings += [build_guest_binding(faces[cap]) for cap in embed
                     if faces[cap].embedded.binding is not None]  # type: ignore[union-attr]
    items += bindings
    if variant is not None:
        items += [variant.wit_package, *variant.python_paths]
        extra += f"|{variant.world}|{variant.app}"
    key = toolchain.source_hash(items, extra=extra)
    name = variant.name if variant else "guest-" + ("+".join(embed) if embed else "lean")
    out_dir = toolchain.output_dir(name, key)
    out = out_dir / "pylon.wasm"
    if out.exists() and not force:
        return BuiltGuest(out, "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest())
    # A private work folder: two builds may run at once (two terminals, a test
    # run beside a setup); each finishes with an atomic rename of the same bytes.
    paths.build_root().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{out_dir.name}.work-", dir=paths.build_root()))
    try:
        if variant is None:
            wit_dir, world, app, first_paths = wit.guest_wit(work / "wit"), WORLD, "app", []
        else:
            wit_dir = wit.assemble(variant.wit_package, work / "wit",
                                   deps=[root / "wit" / "guest", root / "wit" / "dynlink"], wasi=True)
            world, app = variant.world, variant.app
            first_paths = [arg for p in variant.python_paths for arg in ("-p", str(p))]
        if embed:
            for cap in embed:
                shutil.copy2(faces[cap].embedded.wit, wit_dir / "deps" / f"{cap}.wit")  # type: ignore[union-attr]
            (wit_dir / "custom.wit").write_text(_custom_world(embed))
            world = "pylon:guest/pylon-custom@0.1.0"
        deps = _fetch_cbor2(work / "deps")
        what = f"embedding {', '.join(embed)}" if embed else "no embedded caps"
        print(f"pylon: building the guest ({what}) with componentize-py (about 20 s)...", file=sys.stderr)
        bare = work / "bare.wasm"
        toolchain.run(
            [toolchain.componentize_py(), "-d", str(wit_dir), "-w", world, "componentize", *first_paths,
             "-p", str(root / "guest"), "-p", str(root / "guest" / "python"), "-p", str(deps),
             *(arg for folder in bindings for arg in ("-p", str(folder))),
             app, "-o", str(bare)],
            what="componentize-py (guest)",
        )
        # componentize-py 0.25.1 never frees its copy of a `bytes` lowered to
        # list<u8>: pylon/build/wasm_listfree.py. Checked against the version,
        # since a componentize-py that frees the copy itself would then free it twice.
        if _componentize_version() != wasm_listfree.FOR_COMPONENTIZE_PY:
            raise BuildError(f"{_componentize_version()}: pylon/build/wasm_listfree.py is written for "
                             f"{wasm_listfree.FOR_COMPONENTIZE_PY}; check whether its maybe_pop_list "
                             "still leaks, then update or drop the pass")
        bare.write_bytes(wasm_listfree.free_lowered_bytes(bare.read_bytes()))
        tmp_out = work / "pylon.wasm"
        if embed:
            _plug(bare, embed, tmp_out)
        else:
            bare.rename(tmp_out)
        out_dir.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_out, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuiltGuest(out, "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest())
