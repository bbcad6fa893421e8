"""``composectl info``: the places and versions a newcomer (or a bug report) needs.

Run as a real subprocess with a private home, so every path it prints is one
this test chose, and against the real engine for the wasmtime version.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _composectl(home: Path, *args: str, stock: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYLON_", "XDG_"))}
    env.update(PYLON_CACHE_DIR=str(home / "cache"), PYLON_BLOB_DIR=str(home / "blobs"),
               PYLON_CONFIG_DIR=str(home / "config"), PYLON_SOURCE_ROOT=str(REPO))
    return subprocess.run([sys.executable, "-m", "pylon.cli", "info", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_json_names_every_place_and_version(home: Path) -> None:
    result = _composectl(home, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    places = {name: place["path"] for name, place in data["paths"].items()}
    assert places["default plan"] == str(home / "config" / "plan.json")
    assert places["trust file"] == str(home / "config" / "trust.json")
    assert places["blob store"] == str(home / "blobs")
    assert places["compile cache"] == str(home / "cache" / "compiled")
    assert places["downloads"] == str(home / "cache" / "downloads")
    assert places["source root"] == str(REPO)
    assert not any(place["exists"] for name, place in data["paths"].items() if name != "source root")
    # The wasmtime the engine was built with: the one engine/Cargo.toml pins.
    pinned = tomllib.loads((REPO / "engine" / "Cargo.toml").read_text())["dependencies"]["wasmtime"]["version"]
    assert data["versions"]["wasmtime"] == pinned.lstrip("=")
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", data["versions"]["pylon"])
    assert data["stock_guest"] is None  # nothing set up in this home
    assert {"crc32c", "sqlite", "zstd"} <= set(data["embeddable_caps"])
    assert data["embeddable_caps"]["zstd"]["vendored"] == {"zstd": "1.5.7"}
    assert data["embeddable_caps"]["zstd"]["vendor_patches"] == {"zstd": ["zstd-1.5.7-wasm32-bit-container.patch"]}
    assert data["embeddable_caps"]["crc32c"]["guest_binding"] == "_crc32c_binding"
    assert data["embeddable_caps"]["zstd"]["guest_binding"] == "_zstd_binding"


def test_text_says_what_is_missing_and_how_to_fix_it(home: Path) -> None:
    result = _composectl(home)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "stock guest    not built yet (run: composectl setup)" in out
    assert re.search(rf"^default plan\s+{re.escape(str(home / 'config' / 'plan.json'))}  \(not there yet\)$",
                     out, re.M)
    assert re.search(r"^wasmtime\s+\d+\.\d+\.\d+", out, re.M)
    assert "  zstd: vendors zstd 1.5.7" in out
    assert "  sqlite: vendors sqlite 3.50.4; guest binding _sqlite_binding" in out
    assert "  crc32c: guest binding _crc32c_binding" in out


def test_the_stock_guest_digest_after_setup(home: Path) -> None:
    (home / "config").mkdir(parents=True, mode=0o700)
    digest = "sha256:" + "a" * 64
    (home / "config" / "stock.json").write_text(json.dumps({"guest": digest, "guest_sources": [], "caps": {}}))
    data = json.loads(_composectl(home, "--json").stdout)
    assert data["stock_guest"]["digest"] == digest
    assert f"stock guest    {digest}" in _composectl(home).stdout


def test_a_broken_manifest_is_reported_not_fatal(home: Path, tmp_path: Path) -> None:
    import shutil

    tree = tmp_path / "tree"
    for part in ("wit", "caps"):
        shutil.copytree(REPO / part, tree / part, ignore=shutil.ignore_patterns("router"))
    (tree / "caps" / "zstd" / "cap.toml").write_text("[cap\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYLON_", "XDG_"))}
    env.update(PYLON_CACHE_DIR=str(home / "cache"), PYLON_CONFIG_DIR=str(home / "config"),
               PYLON_SOURCE_ROOT=str(tree))
    result = subprocess.run([sys.executable, "-m", "pylon.cli", "info"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "embeddable caps: cannot read the manifests:" in result.stdout and "not valid TOML" in result.stdout
