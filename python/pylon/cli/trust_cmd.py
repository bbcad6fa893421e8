"""``composectl trust ...``: which cap digests may run."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pylon.cli.console import out, say
from pylon.trust import TrustPolicy

__all__ = ["app"]

app = typer.Typer(help="Allow, revoke and list trusted cap digests.", no_args_is_help=True)

_NAME = typer.Argument(metavar="NAME", help="The cap's name, as the plan spells it.")


@app.command("allow")
def allow(
    name: Annotated[str, _NAME],
    digest: Annotated[str, typer.Argument(metavar="DIGEST", help="The digest to trust for NAME (sha256:<hex>).")],
) -> None:
    """Trust exactly DIGEST for cap NAME (nothing else: other names or digests stay untrusted)."""
    policy = TrustPolicy.load()
    if policy.allow(name, digest):
        policy.save()
        say(f"allowed {name} {digest}")
    else:
        say(f"{name} {digest} was already allowed")


@app.command("revoke")
def revoke(
    name: Annotated[str, _NAME],
    digest: Annotated[str | None, typer.Argument(
        metavar="DIGEST", help="The digest to stop trusting; omit to revoke every digest of NAME.")] = None,
) -> None:
    """Stop trusting DIGEST (or every digest) for cap NAME. Exits 1 if nothing was allowed."""
    policy = TrustPolicy.load()
    removed = policy.revoke(name, digest)
    if not removed:
        what = f"{name} {digest}" if digest else f"any digest of {name}"
        say(f"nothing to revoke: {what} was not allowed", style="yellow")
        raise typer.Exit(1)
    policy.save()
    for d in removed:
        say(f"revoked {name} {d}")


@app.command("ls")
def ls() -> None:
    """List every allowed (cap name, digest) pair."""
    policy = TrustPolicy.load()
    entries = policy.entries()
    if not entries:
        say(f"nothing is trusted ({policy.path})")
        return
    table = Table("cap", "digest", box=None, pad_edge=False)
    for entry in entries:
        table.add_row(entry.name, entry.digest)
    out.print(table)
