"""Builds the typed, embeddable face of a cap: a component for ``wac plug``.

An embedded cap is the cap's shared C core plus a thin C "face" that
implements the cap's typed WIT world (``wit/caps/<name>.wit``, world
``pylon:<name>/embedded``). The pipeline, one step per tool:

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

Third-party C (SQLite, zstd) is never committed: it is taken from the
source distributions of registry packages, downloaded with
``pip download --no-binary :all:``, checked against a pinned sha256 and
unpacked under :func:`pylon.paths.build_root`. The adapter comes from the
crates.io crate that ships it, fetched with ``cargo metadata`` and pinned the
same way.

Outputs land in ``toolchain.output_dir("cap-<name>-embedded", <hash>)``; the
hash covers the face's sources and include folders, its WIT, the vendored sources' digests and the
compiler flags, so an unchanged cap is a cache hit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from pylon import paths
from pylon.build import toolchain
from pylon.errors import BuildError

__all__ = ["CAPS", "EmbeddedCap", "Vendored", "build_embedded_cap", "vendored_source", "wasi_adapter"]


@dataclass(frozen=True)
class Vendored:
    """Third-party C taken from a registry package's source distribution.

    ``members`` maps a path inside the sdist (after its top folder) to the
    file name it gets in the vendor folder. ``cut_after`` optionally truncates
    a member after the first line containing a marker (SQLite's amalgamation
    in sqlean-py carries an appendix that needs headers the sdist lacks).
    """

    package: str
    version: str
    sha256: str
    members: dict[str, str]
    cut_after: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.package}-{self.version}-{self.sha256[:12]}"


@dataclass(frozen=True)
class EmbeddedCap:
    """How to build one cap's typed face.

    ``sources`` are relative to ``caps/<name>/``; ``vendored_sources`` are
    names in the vendor folder, compiled once per (digest, flags) and cached,
    because SQLite's amalgamation alone takes ~40 s.
    """

    name: str
    sources: tuple[str, ...]
    include_dirs: tuple[str, ...] = ("src",)
    cflags: tuple[str, ...] = ()
    vendored: Vendored | None = None
    vendored_sources: tuple[str, ...] = ()
    vendored_cflags: tuple[str, ...] = ()

    @property
    def package(self) -> str:
        return f"pylon:{self.name}@0.1.0"

    @property
    def world(self) -> str:
        return f"pylon:{self.name}/embedded@0.1.0"

    @property
    def interface(self) -> str:
        """The interface the component exports, as it appears in its WIT."""
        return f"pylon:{self.name}/{self.name}@0.1.0"

    @property
    def folder(self) -> Path:
        return paths.SOURCE_ROOT / "caps" / self.name

    @property
    def wit(self) -> Path:
        return paths.SOURCE_ROOT / "wit" / "caps" / f"{self.name}.wit"


#: SQLite 3.50.4 (the amalgamation inside sqlean-py's sdist).
SQLITE_SOURCE = Vendored(
    package="sqlean-py",
    version="3.50.4.5",
    sha256="9764b565e7ab430ab6e9e43cb2816199c2b39926dffc93c212a52f0019278459",
    members={"sqlite/sqlite3.c": "sqlite3.c", "sqlite/sqlite3.h": "sqlite3.h"},
    cut_after={"sqlite3.c": "End of sqlite3.c"},
)

#: zstd 1.5.7 (the single-file library the zstandard sdist vendors).
ZSTD_SOURCE = Vendored(
    package="zstandard",
    version="0.25.0",
    sha256="7713e1179d162cf5c7906da876ec2ccb9c3a9dcbdffef0cc7f70c3667a205f0b",
    members={
        "zstd/zstd.c": "zstd.c",
        "zstd/zstd.h": "zstd.h",
        "zstd/zstd_errors.h": "zstd_errors.h",
        "zstd/zdict.h": "zdict.h",
        "zstd/LICENSE": "LICENSE",
    },
)

#: Flags every cap is compiled with. Bulk memory makes memcpy/memset single
#: instructions (large lists cross the boundary as copies); SIMD lets clang
#: vectorise checksum and match-finding loops. wasmtime enables both.
COMMON_CFLAGS = ("-O2", "-mbulk-memory", "-msimd128", "-fno-exceptions")

CAPS: dict[str, EmbeddedCap] = {
    "crc32c": EmbeddedCap(
        name="crc32c",
        sources=("src/crc32c.c", "embedded.c"),
    ),
    "zstd": EmbeddedCap(
        name="zstd",
        sources=("src/zstd_core.c", "embedded.c"),
        vendored=ZSTD_SOURCE,
        vendored_sources=("zstd.c",),
        # zstd.c turns on ZSTD_MULTITHREAD itself; with zero workers (the
        # default) no thread is ever started, and wasi-libc's pthread stubs
        # satisfy the link. The dictionary builder is dead code, dropped by
        # --gc-sections.
        vendored_cflags=("-O3", "-w"),
    ),
    "sqlite": EmbeddedCap(
        name="sqlite",
        sources=("src/sqlite_core.c", "embedded.c"),
        vendored=SQLITE_SOURCE,
        vendored_sources=("sqlite3.c",),
        vendored_cflags=(
            "-w",
            # One thread per instance: no mutexes.
            "-DSQLITE_THREADSAFE=0",
            # Temp tables and sort spills in memory: the cap has no temp dir.
            "-DSQLITE_TEMP_STORE=3",
            "-DSQLITE_OMIT_LOAD_EXTENSION",
            # WAL needs shared memory, which WASI does not have.
            "-DSQLITE_OMIT_WAL=1",
            "-DSQLITE_MAX_MMAP_SIZE=0",
            "-DSQLITE_OMIT_SHARED_CACHE",
            # WASI 0.2 has no advisory file locks. SQLite's WASI default is
            # dot-file locking, which leaves a stale `<db>.lock` folder behind
            # whenever an instance traps mid-transaction, locking the database
            # for every later run; "unix-none" does not lock at all. One
            # writer at a time is the user's to ensure (see docs/embedded.md).
            '-DSQLITE_DEFAULT_UNIX_VFS="unix-none"',
            "-DSQLITE_ENABLE_MATH_FUNCTIONS",
            "-DSQLITE_DEFAULT_FOREIGN_KEYS=0",
        ),
    ),
}

#: The crate that ships the wasi_snapshot_preview1 -> WASI 0.2 adapters
#: (the ones wasmtime publishes), and the digest of its reactor adapter.
#: 48.0.1 imports WASI @0.2.12, the version the guest world includes.
ADAPTER_CRATE = ("wasi-preview1-component-adapter-provider", "48.0.1")
ADAPTER_SHA256 = "0baeb0a94aa242dba0403ef5656d6fe7ac7daf78db99e887a76d3a056bcbe4df"
ADAPTER_FILE = "wasi_snapshot_preview1.reactor.wasm"




def _download_sdist(src: Vendored) -> Path:
    """The package's sdist in the download cache, its sha256 verified."""
    downloads = paths.cache_root() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    stem = src.package.replace("-", "_")
    for candidate in downloads.glob(f"{stem}-{src.version}.tar.gz"):
        if toolchain.sha256_file(candidate) == src.sha256:
            return candidate
        candidate.unlink()  # a stale or damaged download: fetch again
    staging = downloads / f".{src.key}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    toolchain.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         f"{src.package}=={src.version}", "--dest", str(staging)],
        what=f"pip download {src.package}=={src.version} (source distribution)",
    )
    found = sorted(staging.glob("*.tar.gz"))
    if len(found) != 1:
        raise BuildError(f"pip download {src.package}=={src.version} gave {[p.name for p in staging.iterdir()]}, "
                         "expected one .tar.gz sdist")
    got = toolchain.sha256_file(found[0])
    if got != src.sha256:
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildError(f"sha256 mismatch for {src.package}=={src.version} sdist: "
                         f"expected {src.sha256}, found {got}")
    final = downloads / found[0].name
    found[0].replace(final)
    shutil.rmtree(staging, ignore_errors=True)
    return final


def vendored_source(src: Vendored) -> Path:
    """The folder holding ``src``'s members, downloading and unpacking on first use."""
    folder = paths.build_root() / f"vendor-{src.key}"
    if (folder / ".complete").exists():
        return folder
    sdist = _download_sdist(src)
    partial = toolchain.staging_dir(folder)
    with tarfile.open(sdist) as tar:
        by_inner = {}
        for member in tar.getmembers():
            _, _, inner = member.name.partition("/")
            by_inner[inner] = member
        for inner, name in src.members.items():
            member = by_inner.get(inner)
            if member is None or not member.isfile():
                raise BuildError(f"{sdist.name} has no file {inner!r}; has the package's layout changed?")
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            marker = src.cut_after.get(name)
            if marker:
                at = data.find(marker.encode())
                if at < 0:
                    raise BuildError(f"{inner} in {sdist.name} has no line {marker!r} to cut at")
                data = data[: data.index(b"\n", at) + 1]
            (partial / name).write_bytes(data)
    (partial / ".complete").write_text(f"{src.package}=={src.version} sha256:{src.sha256}\n")
    return toolchain.publish_dir(partial, folder)


def wasi_adapter() -> Path:
    """The wasi_snapshot_preview1 reactor adapter, fetched from crates.io once.

    ``cargo metadata`` on a one-dependency scratch manifest makes cargo fetch
    (and checksum) the crate into its registry cache; the adapter file is
    then copied out and checked against its pinned digest.
    """
    crate, version = ADAPTER_CRATE
    dest = paths.tools_root() / f"{crate}-{version}" / ADAPTER_FILE
    if dest.exists() and toolchain.sha256_file(dest) == ADAPTER_SHA256:
        return dest
    cargo = shutil.which("cargo")
    if not cargo:
        raise BuildError(f"cargo is needed once to fetch {crate} {version} (the WASI preview1 adapter)")
    scratch = toolchain.staging_dir(paths.tools_root() / f"{crate}-fetch")
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
    got = toolchain.sha256_file(source)
    if got != ADAPTER_SHA256:
        raise BuildError(f"sha256 mismatch for {source}: expected {ADAPTER_SHA256}, found {got}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".partial")
    shutil.copyfile(source, tmp)
    tmp.replace(dest)
    shutil.rmtree(scratch, ignore_errors=True)
    return dest


def _zig_cc(args: list[str], *, what: str) -> None:
    toolchain.run([*toolchain.zig(), "cc", "-target", "wasm32-wasi", *args], what=what)


def _vendored_objects(cap: EmbeddedCap) -> list[Path]:
    """Compiled third-party objects, cached per (sdist digest, flags)."""
    if not cap.vendored:
        return []
    vendor = vendored_source(cap.vendored)
    flags = [*COMMON_CFLAGS, *cap.vendored_cflags]
    key = toolchain.source_hash([], extra=json.dumps([cap.vendored.key, cap.vendored_sources, flags]))
    folder = toolchain.output_dir(f"vendor-obj-{cap.name}", key)
    objects = [folder / (Path(s).stem + ".o") for s in cap.vendored_sources]
    if all(o.exists() for o in objects):
        return objects
    partial = toolchain.staging_dir(folder)
    for source in cap.vendored_sources:
        _zig_cc([*flags, "-ffunction-sections", "-fdata-sections", "-I", str(vendor), "-c",
                 str(vendor / source), "-o", str(partial / (Path(source).stem + ".o"))],
                what=f"zig cc {cap.vendored.package} {source}")
    toolchain.publish_dir(partial, folder)
    return objects


def _core_imports_wasi(core: Path) -> bool:
    text = toolchain.run([toolchain.wasm_tools(), "print", str(core)], what="wasm-tools print").stdout
    return '(import "wasi_snapshot_preview1"' in text


def build_embedded_cap(name: str) -> Path:
    """Builds (or finds cached) the embedded component of cap ``name``.

    Returns the path of ``<name>.wasm``, a component exporting
    ``pylon:<name>/<name>@0.1.0``, ready for ``wac plug``.

    Raises:
        BuildError: the cap is unknown, a tool is missing, a download does not
            match its pinned digest, or a tool failed (its output is in the
            message).
    """
    cap = CAPS.get(name)
    if cap is None:
        raise BuildError(f"no embedded cap named {name!r}; known: {', '.join(sorted(CAPS))}")
    if not cap.wit.exists():
        raise BuildError(f"{cap.wit} is missing")
    vendored_key = cap.vendored.key if cap.vendored else ""
    # Only this face's inputs: the cap's folder also holds other faces
    # (dynlink.c, cap.toml...) whose edits must not rebuild this one.
    inputs = [cap.wit, *(cap.folder / s for s in cap.sources), *(cap.folder / d for d in cap.include_dirs)]
    key = toolchain.source_hash(
        inputs,
        extra=json.dumps([vendored_key, COMMON_CFLAGS, cap.cflags, cap.vendored_cflags, ADAPTER_SHA256,
                          toolchain.CARGO_TOOLS["wit-bindgen"]]),
    )
    out = toolchain.output_dir(f"cap-{name}-embedded", key)
    component = out / f"{name}.wasm"
    if component.exists():
        return component

    objects = _vendored_objects(cap)
    vendor = vendored_source(cap.vendored) if cap.vendored else None
    wit_bindgen = toolchain.cargo_tool("wit-bindgen")
    wasm_tools = toolchain.wasm_tools()
    work = toolchain.staging_dir(out)
    gen = work / "gen"
    # Besides bindings.c/.h this writes bindings_component_type.o, a wasm
    # object whose custom section carries the world's type; linking it in
    # is what `wasm-tools component embed` would otherwise do.
    toolchain.run([wit_bindgen, "c", "--world", cap.world, "--rename-world", "bindings",
                   "--out-dir", str(gen), str(cap.wit)], what=f"wit-bindgen c ({cap.world})")

    includes = ["-I", str(gen)]
    for inc in cap.include_dirs:
        includes += ["-I", str(cap.folder / inc)]
    if vendor:
        includes += ["-I", str(vendor)]
    flags = [*COMMON_CFLAGS, *cap.cflags, "-Wall", "-Wextra", "-Wno-unused-parameter"]
    objects.append(gen / "bindings_component_type.o")
    units = [gen / "bindings.c", *(cap.folder / s for s in cap.sources)]
    for i, unit in enumerate(units):
        obj = work / f"{i:02d}-{unit.stem}.o"
        _zig_cc([*flags, *includes, "-c", str(unit), "-o", str(obj)], what=f"zig cc {unit.name} ({name})")
        objects.append(obj)

    core = work / f"{name}.core.wasm"
    # A reactor: no main, exports are called at will. --gc-sections drops
    # what the exports do not reach (zstd's dictionary builder, say).
    _zig_cc(["-mexec-model=reactor", "-Wl,--gc-sections", "-Wl,--strip-debug", "-o", str(core),
             *map(str, objects)], what=f"link {name} core module")

    new = [wasm_tools, "component", "new", str(core), "-o", str(work / component.name)]
    if _core_imports_wasi(core):
        new += ["--adapt", f"wasi_snapshot_preview1={wasi_adapter()}"]
    toolchain.run(new, what=f"wasm-tools component new ({name})")
    toolchain.run([wasm_tools, "validate", str(work / component.name)], what=f"wasm-tools validate ({name})")
    wit = toolchain.run([wasm_tools, "component", "wit", str(work / component.name)],
                        what=f"wasm-tools component wit ({name})").stdout
    if f"export {cap.interface};" not in wit:
        raise BuildError(f"{name}.wasm does not export {cap.interface}; its WIT is:\n{wit}")
    for scratch in (gen, *work.glob("*.o")):
        if scratch.is_dir():
            shutil.rmtree(scratch)
        else:
            scratch.unlink()
    toolchain.publish_dir(work, out)
    return component
