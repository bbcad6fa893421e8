"""Builds the guest, pylon.wasm: CPython + our guest package, by componentize-py.

Inputs (all hashed into the output folder's name): ``guest/`` (the app and
the guest-side ``pylon`` package), ``wit/``, the WASI WIT of the engine's
wasmtime-wasi, cbor2's pure-Python wheel, and the componentize-py version.
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


def build_guest(*, force: bool = False) -> BuiltGuest:
    """Builds (or returns the cached) stock guest."""
    root = paths.SOURCE_ROOT
    key = toolchain.source_hash(
        [root / "guest", root / "wit", wit.wasi_wit_dir()],
        extra=f"{_componentize_version()}|{CBOR2_WHEEL}|{CBOR2_PINNED_SHA256}",
    )
    out_dir = toolchain.output_dir("guest", key)
    out = out_dir / "pylon.wasm"
    if out.exists() and not force:
        return BuiltGuest(out, "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest())
    # A private work folder: two builds may run at once (two terminals, a test
    # run beside a setup); each finishes with an atomic rename of the same bytes.
    paths.build_root().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{out_dir.name}.work-", dir=paths.build_root()))
    try:
        wit_dir = wit.guest_wit(work / "wit")
        deps = _fetch_cbor2(work / "deps")
        print("pylon: building the guest with componentize-py (about 20 s)...", file=sys.stderr)
        tmp_out = work / "pylon.wasm"
        toolchain.run(
            [toolchain.componentize_py(), "-d", str(wit_dir), "-w", WORLD, "componentize",
             "-p", str(root / "guest"), "-p", str(root / "guest" / "python"), "-p", str(deps),
             "app", "-o", str(tmp_out)],
            what="componentize-py (guest)",
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_out, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuiltGuest(out, "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest())
