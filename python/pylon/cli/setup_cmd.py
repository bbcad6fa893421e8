"""``composectl setup`` and ``composectl build``: build the stock install."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pylon.cli.console import say

__all__ = ["register"]


def setup() -> None:
    """Build pylon.wasm and the stock caps, store and trust them, write the default plan.

    Afterwards `composectl run script.py` works with no --plan. Builds are
    cached by source hash, so a second setup takes seconds.
    """
    from pylon import stock

    result = stock.setup(log=lambda message: say(f"setup: {message}"))
    say(f"default plan: {result.plan_path}")
    typer.echo(result.guest_digest)


def build(
    out: Annotated[Path | None, typer.Option(
        "-o", "--output", metavar="FILE", help="Copy the built guest to FILE.")] = None,
) -> None:
    """Build the guest (pylon.wasm) and print its digest and path."""
    import shutil

    from pylon.build.guest import build_guest

    guest = build_guest()
    path = guest.path
    if out is not None:
        shutil.copyfile(path, out)
        path = out
    say(f"built pylon.wasm ({path.stat().st_size / 2**20:.1f} MiB)")
    typer.echo(f"{guest.digest} {path}")


def register(app: typer.Typer) -> None:
    """Adds ``setup`` and ``build`` to the top-level app."""
    app.command("setup")(setup)
    app.command("build")(build)
