"""Builds a cap's guest binding: a CPython extension module inside pylon.wasm.

An embedded cap is called from the guest through componentize-py's generic
import path: the binding it generates packs the arguments into a list, its
runtime walks them with an iterator, converts each and allocates per call.
That is ~1 µs a call whatever the cap does (docs/benchmarks.md, "Where a
tiny typed call goes"). A cap whose ``[embedded.binding]`` table names C
sources gets a second way in: a small extension module, compiled here,
that componentize-py links into the guest beside libpython (one memory,
shared-everything), and that calls the cap's typed import itself.

The pipeline, one step per tool:

1. ``zig cc -target wasm32-wasi -fPIC`` compiles the sources against
   ``caps/_sdk/pylon_pyabi.h`` (the stable-ABI subset of the guest's CPython,
   which ships no headers) and ``caps/_sdk/pylon_binding.h`` (the module's
   ``cabi_realloc``, bytes-like arguments, resource handles).
2. ``zig wasm-ld -shared --experimental-pic`` links a dynamic library named
   ``<module>.cpython-314-wasm32-wasi.so``, the name the guest's importer
   looks for, exporting only ``PyInit_<module>``; CPython's symbols stay
   imports that componentize-py's linker resolves against libpython.
3. ``wasm-tools component embed`` adds the type of a world that imports the
   cap's interface: componentize-py's linker refuses a library import of a
   component function it has no type for.

The guest build (:mod:`pylon.build.guest`) puts the folder on
componentize-py's path only when it embeds the cap, since the library's
import exists only then. The cap's guest module imports the binding inside
``try``/``except ImportError`` and keeps the generic route as its fallback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pylon import paths
from pylon.build import manifest, toolchain
from pylon.build.manifest import Manifest
from pylon.errors import BuildError

__all__ = ["build_guest_binding", "build_dynlink_binding", "SDK_HEADERS"]

#: The ABI tag of the guest's CPython (componentize-py 0.25.1 bundles 3.14).
#: An extension module is found only under this suffix.
EXTENSION_SUFFIX = ".cpython-314-wasm32-wasi.so"

#: The headers every binding compiles against: CPython's stable-ABI subset,
#: and the helpers (cabi_realloc, bytes-like arguments, handles).
SDK_HEADERS = (manifest.CAPS_DIR / "_sdk" / "pylon_pyabi.h", manifest.CAPS_DIR / "_sdk" / "pylon_binding.h")

#: Position-independent code for a wasm dynamic library; -O2 like the caps.
CFLAGS = ("-O2", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror")


def _import_world(module: str, interface: str) -> str:
    """A WIT package whose world imports ``interface``. One package per
    module: componentize-py merges every library's package, and two worlds
    of one name that import different things do not merge."""
    kebab = "-".join(part for part in module.lower().split("_") if part)
    return (f"package pylon-binding:{kebab}@0.1.0;\n\n"
            f"/// What the guest binding {module} may call.\n"
            f"world binding {{\n  import {interface};\n}}\n")


def _cap_sources(cap: Manifest) -> list[Path]:
    face = cap.embedded
    assert face is not None and face.binding is not None
    where = f"{cap.file}: at [embedded.binding].sources"
    found = []
    for i, rel in enumerate(face.binding.sources):
        path = manifest.inside(cap.dir, rel, f"{where}[{i}]")
        if not path.is_file():
            raise BuildError(f"{where}[{i}]: {rel!r} does not exist ({path})")
        found.append(path)
    return found


def build_guest_binding(cap: Manifest) -> Path:
    """Builds (or finds cached) the guest binding of ``cap``; returns its folder.

    The folder holds one file, ``<module>.cpython-314-wasm32-wasi.so``, and is
    what the guest build passes to componentize-py with ``-p``.

    Raises:
        BuildError: the cap has no ``[embedded.binding]``, a source is
            missing, or a tool failed (its output is in the message).
    """
    face = cap.embedded
    if face is None or face.binding is None:
        raise BuildError(f"{cap.file}: has no [embedded.binding] table")
    return _build(f"guest-binding-{cap.name}", face.binding.module, _cap_sources(cap), face.wit, face.interface)


def build_dynlink_binding() -> Path:
    """Builds (or finds cached) ``_dynlink_binding``, which every guest links:
    ``compose:dynlink``'s ``instance.invoke`` called from C
    (``guest/native/_dynlink_binding.c``); returns its folder."""
    root = paths.SOURCE_ROOT
    return _build("guest-binding-dynlink", "_dynlink_binding", [root / "guest" / "native" / "_dynlink_binding.c"],
                  root / "wit" / "dynlink" / "dynlink.wit", "compose:dynlink/linker@0.1.0")


def _build(what: str, module: str, sources: list[Path], wit_file: Path, interface: str) -> Path:
    """Compiles ``sources`` into extension module ``module`` that may import
    ``interface`` (of the WIT package ``wit_file``); returns the folder."""
    key = toolchain.source_hash([*sources, *SDK_HEADERS, wit_file, Path(__file__)], extra=json.dumps(
        [module, interface, CFLAGS, EXTENSION_SUFFIX], sort_keys=True))
    out = toolchain.output_dir(what, key)
    library = out / f"{module}{EXTENSION_SUFFIX}"
    if library.exists():
        return out

    work = toolchain.staging_dir(out)
    try:
        objects = []
        for i, source in enumerate(sources):
            obj = work / f"{i:02d}-{source.stem}.o"
            toolchain.run([*toolchain.zig(), "cc", "-target", "wasm32-wasi", *CFLAGS, "-I", str(SDK_HEADERS[0].parent),
                           "-c", str(source), "-o", str(obj)], what=f"zig cc {source.name} ({what})")
            objects.append(obj)
        # Linked under its final name, which wasm backtraces show.
        bare = work / "link" / library.name
        bare.parent.mkdir()
        # --unresolved-symbols=import-dynamic: CPython's and libc's functions
        # and data become imports ("env", "GOT.mem") that componentize-py's
        # linker resolves against libpython and libc, as a dynamic library's
        # should (zig cc -shared refuses --allow-undefined).
        toolchain.run([*toolchain.zig(), "wasm-ld", "-shared", "--experimental-pic",
                       "--unresolved-symbols=import-dynamic", f"--export=PyInit_{module}",
                       "--strip-debug", "-o", str(bare), *map(str, objects)], what=f"wasm-ld ({what})")
        wit = work / "wit"
        (wit / "deps").mkdir(parents=True)
        shutil.copy2(wit_file, wit / "deps" / wit_file.name)
        (wit / "binding.wit").write_text(_import_world(module, interface))
        toolchain.run([toolchain.wasm_tools(), "component", "embed", str(wit), "--world", "binding",
                       str(bare), "-o", str(work / library.name)], what=f"wasm-tools component embed ({what})")
        for scratch in objects:
            scratch.unlink()
        shutil.rmtree(bare.parent)
        shutil.rmtree(wit)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return toolchain.publish_dir(work, out)
