"""``composectl info``: where Pylon keeps things, and which versions are in use.

For a newcomer's first question ("where is my plan? what did setup build?")
and for bug reports: every location Pylon reads or writes (each with its
override in :mod:`pylon.paths`), the versions of Pylon and of the wasmtime
the engine was built with, the stock guest's digest, and the caps a guest
can embed with the libraries they vendor. ``--json`` gives the same as one
JSON object, for scripts.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

__all__ = ["collect", "register"]


def _pylon_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pylon")
    except PackageNotFoundError:
        return "unknown (not installed as a package)"


def _wasmtime_version() -> str:
    try:
        from pylon import _engine
    except ImportError:
        return "unknown (the engine is not built)"
    return str(_engine.WASMTIME_VERSION)


def _stock_guest() -> dict[str, Any] | None:
    from pylon import stock
    from pylon.errors import PylonError

    try:
        digest, sources, size = stock.stock_guest_ref()
    except PylonError:
        return None
    return {"digest": digest, "sources": list(sources), "size": size}


def _patch_note(n: int) -> str:
    return f" (+{n} patch{'es' if n > 1 else ''})"


def _embeddable_caps() -> dict[str, Any]:
    """The caps a guest can embed, from their manifests; an error as text
    rather than a failed ``info`` (a broken manifest is worth reporting too)."""
    from pylon.build import manifest
    from pylon.errors import PylonError

    try:
        caps = manifest.embeddable()
        sdk = manifest.sdk_vendors()  # the SDK's pins (zcbor), in every manifest: not the cap's own
    except PylonError as exc:
        return {"error": str(exc)}
    return {name: {"stock": bool(m.embedded and m.embedded.stock),
                   "vendored": {v.name: v.version or v.source for key, v in m.vendors.items() if key not in sdk},
                   "vendor_patches": {v.name: [p.name for p in v.patches] for key, v in m.vendors.items()
                                      if key not in sdk and v.patches},
                   # [embedded.binding]: the extension module a guest embedding the cap links.
                   "guest_binding": m.embedded.binding.module if m.embedded and m.embedded.binding else None}
            for name, m in sorted(caps.items())}


def collect() -> dict[str, Any]:
    """Everything ``info`` shows, as plain data."""
    from pathlib import Path

    from pylon import paths, stock
    from pylon.build import download
    from pylon.cli import server_wire

    places = {
        "default plan": stock.default_plan_path(),
        "trust file": paths.trust_file(),
        "signing keys": paths.keys_dir(),
        "stock record": stock.stock_file(),
        "blob store": paths.blob_root(),
        "compile cache": paths.compiled_root(),
        "build cache": paths.build_root(),
        "unpacked packages": paths.packages_root(),
        "downloads": download.downloads_root(),
        "config root": paths.config_root(),
        "cache root": paths.cache_root(),
        "server folder": Path(server_wire.server_dir()),
        "source root": paths.SOURCE_ROOT,
    }
    return {
        "versions": {"pylon": _pylon_version(), "wasmtime": _wasmtime_version()},
        "stock_guest": _stock_guest(),
        "paths": {name: {"path": str(path), "exists": path.exists()} for name, path in places.items()},
        "embeddable_caps": _embeddable_caps(),
    }


def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Show where the default plan, trust file, blob store and caches live, and the versions in use."""
    data = collect()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    versions = data["versions"]
    guest = data["stock_guest"]
    lines = [f"pylon          {versions['pylon']}", f"wasmtime       {versions['wasmtime']}",
             "stock guest    " + (guest["digest"] if guest else "not built yet (run: composectl setup)")]
    lines.append("")
    width = max(len(name) for name in data["paths"])
    for name, place in data["paths"].items():
        lines.append(f"{name:<{width}}  {place['path']}" + ("" if place["exists"] else "  (not there yet)"))
    caps = data["embeddable_caps"]
    lines.append("")
    if "error" in caps:
        lines.append(f"embeddable caps: cannot read the manifests: {caps['error']}")
    else:
        lines.append("embeddable caps (caps/*/cap.toml with [embedded]):")
        for name, cap in caps.items():
            patched = cap.get("vendor_patches", {})
            vendored = ", ".join(f"{lib} {version}" + (_patch_note(len(patched[lib])) if lib in patched else "")
                                 for lib, version in cap["vendored"].items())
            stock_note = "" if cap["stock"] else " (not in the stock guest)"
            notes = ([f"vendors {vendored}"] if vendored else []) + (
                [f"guest binding {cap['guest_binding']}"] if cap.get("guest_binding") else [])
            lines.append(f"  {name}{stock_note}" + (": " + "; ".join(notes) if notes else ""))
    typer.echo("\n".join(lines))


def register(app: typer.Typer) -> None:
    """Adds ``info`` to the top-level app."""
    app.command("info")(info)
