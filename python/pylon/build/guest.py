"""Builds the guest, pylon.wasm: CPython + our guest package, by componentize-py.

A guest may embed caps (the second linkage mode): its world then also imports
each cap's typed interface (``wit/caps/<cap>.wit``), and after componentize-py
the real ``wac plug`` composes the caps' embedded components into it. The
result is checked to import exactly what is left for the host: WASI and
``compose:dynlink`` (``pylon:*`` imports all plugged).

Inputs (all hashed into the output folder's name): ``guest/`` (the app and
the guest-side ``pylon`` package), ``wit/``, the WASI WIT of the engine's
wasmtime-wasi, cbor2's pure-Python wheel, the componentize-py version, the
set of embedded caps and their built components.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pylon import paths
from pylon.build import toolchain, wit
from pylon.errors import BuildError

#: cbor2 for the guest. 5.6.x is the last line with a pure-Python
#: implementation (6.x is compiled only and cannot load in wasm).
CBOR2_WHEEL = "cbor2-5.6.5-py3-none-any.whl"
CBOR2_PINNED_SHA256 = "3038523b8fc7de312bb9cdcbbbd599987e64307c4db357cd2030c472a6c7d468"

WORLD = "pylon:guest/pylon@0.1.0"

#: Caps a guest can embed, each with a typed WIT package in ``wit/caps/``.
EMBEDDABLE = ("crc32c", "sqlite", "zstd")
#: The stock pylon.wasm embeds all of them, so a demo needs no staged blobs.
STOCK_EMBEDDED = EMBEDDABLE


@dataclass(frozen=True)
class BuiltGuest:
    """A built guest component."""

    path: Path
    digest: str


def _componentize_version() -> str:
    out = subprocess.run([toolchain.componentize_py(), "--version"], capture_output=True, text=True)
    return out.stdout.strip()


def _fetch_cbor2(dest: Path) -> Path:
    """Downloads the pinned pure-Python cbor2 wheel and unpacks it into ``dest``."""
    wheels = paths.build_root() / "downloads"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = wheels / CBOR2_WHEEL
    if not wheel.exists():
        toolchain.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
             "--platform", "any", "--python-version", "3.14", "-d", str(wheels), "cbor2==5.6.5"],
            what="download cbor2 for the guest",
        )
    found = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if found != CBOR2_PINNED_SHA256:
        wheel.unlink()
        raise BuildError(f"{CBOR2_WHEEL}: sha256 {found} does not match the pinned {CBOR2_PINNED_SHA256}")
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
    imports = "".join(f"  import pylon:{cap}/{cap}@0.1.0;\n" for cap in embed)
    return f"package pylon:guest@0.1.0;\n\nworld pylon-custom {{\n  include pylon;\n{imports}}}\n"


def check_embed(embed) -> tuple[str, ...]:
    """Validates and orders a set of cap names to embed."""
    chosen = tuple(sorted(set(embed)))
    unknown = [c for c in chosen if c not in EMBEDDABLE]
    if unknown:
        raise BuildError(f"cannot embed {', '.join(unknown)}: embeddable caps are {', '.join(EMBEDDABLE)}")
    return chosen


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


def build_guest(*, embed=None, force: bool = False, variant: GuestVariant | None = None) -> BuiltGuest:
    """Builds (or returns the cached) guest, or a :class:`GuestVariant` of it.

    ``embed``: caps to compose into it with ``wac plug`` (default: all of
    :data:`STOCK_EMBEDDED` for the stock guest, none for a variant).

    Raises:
        BuildError: a tool failed, or ``embed`` names a cap that cannot be embedded.
    """
    embed = check_embed((STOCK_EMBEDDED if variant is None else ()) if embed is None else embed)
    if embed and variant is not None:
        raise BuildError("a guest variant cannot embed caps")
    root = paths.SOURCE_ROOT
    items: list[Path] = [root / "guest", root / "wit", wit.wasi_wit_dir()]
    extra = f"{_componentize_version()}|{CBOR2_WHEEL}|{CBOR2_PINNED_SHA256}|embed={','.join(embed)}"
    if embed:
        items += [root / "caps" / cap for cap in embed] + [root / "caps" / "_sdk",
                                                            root / "python" / "pylon" / "build" / "embedded.py"]
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
                shutil.copy2(root / "wit" / "caps" / f"{cap}.wit", wit_dir / "deps" / f"{cap}.wit")
            (wit_dir / "custom.wit").write_text(_custom_world(embed))
            world = "pylon:guest/pylon-custom@0.1.0"
        deps = _fetch_cbor2(work / "deps")
        what = f"embedding {', '.join(embed)}" if embed else "no embedded caps"
        print(f"pylon: building the guest ({what}) with componentize-py (about 20 s)...", file=sys.stderr)
        bare = work / "bare.wasm"
        toolchain.run(
            [toolchain.componentize_py(), "-d", str(wit_dir), "-w", world, "componentize", *first_paths,
             "-p", str(root / "guest"), "-p", str(root / "guest" / "python"), "-p", str(deps),
             app, "-o", str(bare)],
            what="componentize-py (guest)",
        )
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
