"""``composectl server ...``: the server that keeps the guest loaded for ``composectl run``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from pylon.cli import server_wire as wire
from pylon.cli.console import say
from pylon.cli.server_client import ask_server
from pylon.errors import PylonError

__all__ = ["app"]

app = typer.Typer(help="Keep the guest loaded in a background server, so `composectl run` starts in "
                       "milliseconds (docs/server.md).", no_args_is_help=True)

#: How long `start` waits for the server to load the guest and listen (a
#: first compile of the guest takes minutes on a small machine).
START_TIMEOUT_S = 600.0


def _log_path() -> str:
    return os.path.join(wire.server_dir(), wire.LOG_NAME)


@app.command("start")
def start(
    idle_timeout: Annotated[float, typer.Option(
        "--idle-timeout", metavar="SECONDS", min=0,
        help="Exit after this long without a client (0: never).")] = 1800.0,
) -> None:
    """Start the server in the background; `composectl run` then uses it until it stops."""
    from pylon import paths

    running = ask_server(b"status")
    if running is not None:
        say(f"the server already runs: {running}")
        return
    paths.private_dir(paths.cache_root())
    paths.private_dir(Path(wire.server_dir()))
    log = open(_log_path(), "ab")  # noqa: SIM115 - handed to the child, closed below
    with log:
        child = subprocess.Popen(
            [sys.executable, "-P", "-m", "pylon.server", "--idle-timeout", str(idle_timeout)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/", start_new_session=True)
    say("starting the server (loading the guest)...")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        answer = ask_server(b"status")
        if answer is not None:
            say(f"the server runs: {answer}; `composectl run` uses it (PYLON_SERVER=0 to bypass)")
            return
        if child.poll() is not None:
            raise PylonError(f"the server exited with status {child.returncode} before serving; "
                             f"its log: {_log_path()}\n{_tail(_log_path())}")
        time.sleep(0.1)
    raise PylonError(f"the server did not start listening within {START_TIMEOUT_S:g} s; its log: {_log_path()}")


@app.command("status")
def status() -> None:
    """Say whether a server runs (exit status 1 if not)."""
    answer = ask_server(b"status")
    if answer is None:
        say("no server runs")
        raise typer.Exit(1)
    # Data on stdout: "serving pid=N since=UNIX_TIME runs=N active=N", then where it lives.
    typer.echo(answer)
    typer.echo(f"socket {os.path.join(wire.server_dir(), wire.SOCKET_NAME)}")
    typer.echo(f"log {_log_path()}")


@app.command("stop")
def stop() -> None:
    """Stop the server (runs under way finish first)."""
    if ask_server(b"stop") is None:
        say("no server runs")
        return
    deadline = time.monotonic() + 30.0
    while ask_server(b"status") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    say("the server stopped")


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""
