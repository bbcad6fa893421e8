"""``composectl sign``: a detached signature of a cap for one cap name (docs/signing.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pylon.cli.console import say

__all__ = ["register"]


def sign(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The cap (.wasm) to sign.", dir_okay=False,
                                         show_default=False)],
    key: Annotated[str, typer.Option(
        "--key", "-k", metavar="KEY", show_default=False,
        help="A key name from `composectl key new`, or a private key file (PEM PKCS#8).")],
    name: Annotated[str, typer.Option(
        "--name", "-n", metavar="CAPNAME", show_default=False,
        help="The cap name the signature vouches for (a plan's name for it; no other name counts).")],
    out: Annotated[Path | None, typer.Option(
        "-o", "--out", metavar="FILE.sig", dir_okay=False, show_default=False,
        help="Where to write the signature (default: FILE.sig).")] = None,
) -> None:
    """Sign FILE for cap CAPNAME: write a DSSE envelope over an in-toto Statement naming CAPNAME and
    FILE's sha256, and print the signature's digest (alone, on stdout) for the plan's
    `caps.CAPNAME.signature`."""
    from pylon.signing import sign_file

    path, digest, sig_digest, keyid = sign_file(file, name, key, out=out)
    say(f"signed {name} {digest} with key {keyid}")
    say(f"signature: {path}")
    typer.echo(sig_digest)


def register(app: typer.Typer) -> None:
    """Adds ``sign`` to the composectl app."""
    app.command("sign")(sign)
