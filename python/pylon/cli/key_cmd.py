"""``composectl key ...``: Ed25519 key pairs that sign caps (docs/signing.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pylon.cli.console import say

__all__ = ["app"]

app = typer.Typer(help="Make key pairs that sign caps.", no_args_is_help=True)


@app.command("new")
def new(
    name: Annotated[str, typer.Argument(
        metavar="NAME", help="The key's name: its files are NAME.key and NAME.pub in Pylon's keys folder.",
        show_default=False)],
    out: Annotated[Path | None, typer.Option(
        "-o", "--out", metavar="PATH", dir_okay=False, show_default=False,
        help="Write the private key to PATH instead (the public key beside it: PATH with .key swapped for "
             ".pub, else PATH.pub).")] = None,
) -> None:
    """Make an Ed25519 key pair and print its key id (alone, on stdout).

    The private key (PEM PKCS#8, mode 0600) signs caps with `composectl sign`; give the public key
    (PEM SubjectPublicKeyInfo) to whoever runs them: `composectl trust key add CAP FILE.pub`.
    An existing key is never overwritten."""
    from pylon.signing import new_key

    made = new_key(name, out=out)
    say(f"private key: {made.private} (keep it secret)")
    say(f"public key:  {made.public}")
    typer.echo(made.keyid)
