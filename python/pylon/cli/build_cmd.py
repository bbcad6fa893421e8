"""``composectl build``: the build command, with ``--portable`` on top of the
profiles ``pylon.cli.setup_cmd.build_module`` builds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pylon.cli import setup_cmd
from pylon.cli.console import say

__all__ = ["register"]


def build(
    out: Annotated[Path | None, typer.Option(
        "-o", "--output", metavar="FILE", help="Copy the built module to FILE.")] = None,
    profile: Annotated[str, typer.Option(
        "--profile", metavar="PROFILE",
        help="cpython: pylon.wasm, a component (default). micropython-static: one flat wasi-preview1 "
             "module with caps' C folded in, for runtimes without the component model.")] = "cpython",
    with_caps: Annotated[list[str] | None, typer.Option(
        "--with", metavar="CAP", help="Embed exactly these caps (repeatable). cpython default: crc32c, "
        "sqlite, zstd; micropython-static: required.")] = None,
    without_caps: Annotated[list[str] | None, typer.Option(
        "--without", metavar="CAP", help="cpython: embed the stock caps but CAP (repeatable); "
        "a cap left out is still reachable by runtime dynlink.")] = None,
    eh: Annotated[str, typer.Option(
        "--eh", metavar="FLAVOUR", help="micropython-static: wasm exception handling, exnref (wasmtime, "
        "our engine) or legacy (runtimes on the legacy proposal: WAMR iwasm, node).")] = "exnref",
    portable: Annotated[bool, typer.Option(
        "--portable", help="cpython: compose into pylon.wasm a router serving every cap with a dynlink face "
        "(caps/*/dynlink.c), so it imports only WASI and runs on any component host (docs/portable.md).")] = False,
) -> None:
    """Build pylon.wasm (lean, fat, stock or portable) or the MicroPython static module; print digest and path."""
    if not portable:
        setup_cmd.build_module(out=out, profile=profile, with_caps=with_caps, without_caps=without_caps, eh=eh)
        return
    from pylon.build import toolchain
    from pylon.build.guest import choose_embedded
    from pylon.build.portable import build_portable
    from pylon.errors import BuildError

    if profile != "cpython":
        raise BuildError(f"--portable builds the cpython profile only, not {profile!r} (the "
                         "micropython-static module is already a plain wasi-preview1 module)")
    result = build_portable(embed=choose_embedded(with_caps, without_caps))
    path = result.path
    if out is not None:
        path = toolchain.copy_output(path, out)
    say(f"embedded caps: {', '.join(result.embedded) or 'none'}; routed caps: {', '.join(result.routed)}")
    say(f"built {path.name} ({path.stat().st_size / 2**20:.2f} MiB), imports only wasi:*")
    typer.echo(f"{result.digest} {path}")


def register(app: typer.Typer) -> None:
    """Adds ``build`` to the top-level app."""
    app.command("build")(build)
