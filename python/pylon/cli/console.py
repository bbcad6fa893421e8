"""The CLI's two consoles: data on stdout, messages and progress on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

__all__ = ["err", "out", "print_error", "say"]

# Rich resolves sys.stdout / sys.stderr at each write, so these follow any
# redirection (pytest, CliRunner) made after import.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def say(message: str, *, style: str | None = None) -> None:
    """A status line on stderr (keeps stdout for data a script may capture)."""
    err.print(Text(message, style=style or ""))


def print_error(message: str) -> None:
    """One error, rendered once: ``error: <message>`` on stderr, never wrapped or marked up."""
    text = Text("error: ", style="bold red")
    text.append(message)
    err.print(text)
