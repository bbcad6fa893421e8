"""Assembles WIT folders for the tools that read them.

Our own WIT lives in ``wit/`` (``wit/dynlink``, ``wit/guest``). The WASI 0.2
packages the guest world includes are not ours and are not committed: they
come from the ``wasmtime-wasi`` crate the engine is built with, so the guest
is always built against exactly the WASI the host implements.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pylon import paths
from pylon.errors import BuildError

#: Must match engine/Cargo.toml.
WASMTIME_WASI_VERSION = "48.0.8"


def wasi_wit_dir() -> Path:
    """The ``wit/deps`` folder of the wasmtime-wasi crate (fetched by cargo if needed)."""
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    crate = f"wasmtime-wasi-{WASMTIME_WASI_VERSION}"
    pattern = str(cargo_home / "registry" / "src" / "*" / crate / "src" / "p2" / "wit" / "deps")
    found = sorted(glob.glob(pattern))
    if not found:
        manifest = paths.SOURCE_ROOT / "engine" / "Cargo.toml"
        result = subprocess.run(["cargo", "fetch", "--manifest-path", str(manifest)], capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"cannot fetch wasmtime-wasi {WASMTIME_WASI_VERSION} for its WASI WIT:\n{result.stderr}")
        found = sorted(glob.glob(pattern))
    if not found:
        raise BuildError(f"WASI WIT not found after cargo fetch (looked for {pattern})")
    return Path(found[-1])


def assemble(main_package: Path, dest: Path, *, deps: Sequence[Path] = (), wasi: bool = False) -> Path:
    """Copies ``main_package``'s .wit files into ``dest`` with ``deps`` under ``dest/deps``."""
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "deps").mkdir(parents=True)
    for wit in main_package.glob("*.wit"):
        shutil.copy2(wit, dest / wit.name)
    for dep in deps:
        shutil.copytree(dep, dest / "deps" / dep.name)
    if wasi:
        for wit in wasi_wit_dir().glob("*.wit"):
            shutil.copy2(wit, dest / "deps" / wit.name)
    return dest


def guest_wit(dest: Path) -> Path:
    """The guest world's WIT folder: ``pylon:guest`` + ``compose:dynlink`` + WASI."""
    root = paths.SOURCE_ROOT / "wit"
    return assemble(root / "guest", dest, deps=[root / "dynlink"], wasi=True)
