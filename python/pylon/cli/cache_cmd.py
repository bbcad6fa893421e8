"""``composectl cache ...``: the engine's compile cache."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from pylon.cli.console import say

__all__ = ["app"]

app = typer.Typer(help="Inspect or clear the compile cache (compiled guest and caps).", no_args_is_help=True)


@app.command("status")
def status(
    plan: Annotated[Path | None, typer.Option(
        "--plan", metavar="PLAN", help="The plan to check. Default: the default plan.", dir_okay=False)] = None,
) -> None:
    """Say, for the guest and each cap of PLAN, whether it is compiled already."""
    from pylon import runtime, stock
    from pylon.engine import get_engine

    the_plan, _label = runtime.load_plan(plan)
    engine = get_engine()
    guest = the_plan.guest.digest if the_plan.guest and the_plan.guest.digest else stock.stock_guest_digest()

    def line(name: str, digest: str) -> None:
        state = "compiled (cached)" if engine.is_cached(digest) else "not compiled"
        typer.echo(f"{name}: {state}")

    line("guest", guest)
    for name, entry in the_plan.caps.items():
        line(name, entry.digest)


@app.command("clear")
def clear(
    packages: Annotated[bool, typer.Option(
        "--packages", help="Delete the unpacked pinned packages instead (unpacked again on next use).")] = False,
) -> None:
    """Delete every compiled artifact (they are rebuilt on next use)."""
    from pylon import paths
    from pylon.errors import StateError

    root = paths.packages_root() if packages else paths.compiled_root()
    if not root.exists():
        say(f"nothing to clear: {root} does not exist")
        return
    try:
        shutil.rmtree(root)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise StateError(f"could not clear {root}{where}: {exc.strerror or exc}") from exc
    say(f"cleared {root}")
