"""The ``composectl`` app: command groups, and the one place errors are rendered."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from pylon.cli import blob_cmd, cache_cmd, cap_cmd, plan_cmd, run_cmd, setup_cmd, trust_cmd
from pylon.cli.console import print_error
from pylon.errors import PylonError

__all__ = ["ERROR_EXIT", "app", "main"]

#: Exit status of composectl when a PylonError stops it (a guest's own exit
#: status passes through ``composectl run`` unchanged).
ERROR_EXIT = 2


class _RendersPylonErrors(TyperGroup):
    """The top-level group: turns any PylonError from any command into one message."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except PylonError as exc:
            print_error(str(exc))
            raise typer.Exit(ERROR_EXIT) from None


app = typer.Typer(
    cls=_RendersPylonErrors,
    name="composectl",
    help="Plan, fetch, trust and run Pylon guests and their caps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(plan_cmd.app, name="plan")
app.add_typer(blob_cmd.app, name="blob")
app.add_typer(trust_cmd.app, name="trust")
app.add_typer(cap_cmd.app, name="cap")
app.add_typer(cache_cmd.app, name="cache")
run_cmd.register(app)
setup_cmd.register(app)


def main() -> None:
    """Entry point of the ``composectl`` console script."""
    app(prog_name="composectl")
