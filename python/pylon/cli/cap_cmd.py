"""``composectl cap ...``: building caps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pylon.cli.console import say

__all__ = ["app"]

app = typer.Typer(help="Build caps from source.", no_args_is_help=True)


@app.command("build")
def build(
    directory: Annotated[Path, typer.Argument(
        metavar="DIR", help="The cap's source folder.", file_okay=False, exists=True)],
) -> None:
    """Build the cap in DIR; print its digest and the built component's path."""
    # Imported here: the build module pulls in the toolchain, which only this
    # command needs.
    from pylon.build.caps import build_cap

    result = build_cap(Path(directory))
    say(f"built {result.name} {result.version}")
    typer.echo(f"{result.digest} {result.path}")
