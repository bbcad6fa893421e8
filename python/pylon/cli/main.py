"""The ``composectl`` app: command groups, and the one place errors are rendered."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from pylon.cli.console import print_error
from pylon.errors import PylonError

__all__ = ["ERROR_EXIT", "app", "build_app", "main"]

#: The app with every command. Declared, never assigned: each lookup goes to
#: the module's ``__getattr__``, which builds it.
app: typer.Typer

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


#: Top-level command -> (module, how it joins the app). A module is imported
#: only when its command runs (or for --help): `composectl run` is the hot
#: path, and importing every command's dependencies (rich tables, the HTTP
#: client...) would add ~100 ms to each run.
_COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pylon.cli.run_cmd", "register"),
    "setup": ("pylon.cli.setup_cmd", "register"),
    "build": ("pylon.cli.build_cmd", "register"),
    "plan": ("pylon.cli.plan_cmd", "group"),
    "blob": ("pylon.cli.blob_cmd", "group"),
    "trust": ("pylon.cli.trust_cmd", "group"),
    "cap": ("pylon.cli.cap_cmd", "group"),
    "cache": ("pylon.cli.cache_cmd", "group"),
    "info": ("pylon.cli.info_cmd", "register"),
    "push": ("pylon.cli.push_cmd", "register"),
    "key": ("pylon.cli.key_cmd", "group"),
    "sign": ("pylon.cli.sign_cmd", "register"),
    "bench": ("pylon.cli.bench_cmd", "register"),
    "server": ("pylon.cli.server_cmd", "group"),
}


def build_app(command: str | None = None) -> typer.Typer:
    """The composectl app with ``command`` only, or with every command."""
    app = typer.Typer(
        cls=_RendersPylonErrors,
        name="composectl",
        help="Plan, fetch, trust and run Pylon guests and their caps; benchmark caps.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root() -> None:
        # A callback keeps the app a group even when one command is loaded.
        pass

    names = [command] if command in _COMMANDS else list(_COMMANDS)
    registered: set[str] = set()
    for name in names:
        module_name, how = _COMMANDS[name]
        module = importlib.import_module(module_name)
        if how == "group":
            app.add_typer(module.app, name=name)
        elif module_name not in registered:
            module.register(app)
        registered.add(module_name)
    return app


def __getattr__(name: str) -> Any:
    # `app` (every command) for tests and embedding, built on first use.
    if name == "app":
        return build_app()
    raise AttributeError(name)


def main() -> None:
    """Entry point of the ``composectl`` console script."""
    command = sys.argv[1] if len(sys.argv) > 1 else None
    build_app(command)(prog_name="composectl")
