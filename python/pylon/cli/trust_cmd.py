"""``composectl trust ...``: which cap digests, and which guests, may run."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pylon.cli.console import out, say
from pylon.trust import TrustPolicy

__all__ = ["app"]

app = typer.Typer(help="Allow, revoke and list trusted cap digests and guests.", no_args_is_help=True)

_NAME = typer.Argument(metavar="NAME", help="The cap's name, as the plan spells it (omit with --guest).",
                       show_default=False)
_GUEST = typer.Option("--guest", metavar="DIGEST", show_default=False,
                      help="A guest component's digest (sha256:<hex>) instead of a cap: the guest a plan "
                           "pins with guest.digest.")


def _cap_or_guest(name: str | None, digest: str | None, guest: str | None, *, digest_required: bool) -> None:
    """Exactly one of ``NAME [DIGEST]`` and ``--guest DIGEST``."""
    if guest is not None:
        if name is not None or digest is not None:
            raise typer.BadParameter("give either NAME DIGEST or --guest DIGEST, not both",
                                     param_hint="NAME")
        return
    if name is None:
        raise typer.BadParameter("missing: a cap NAME, or --guest DIGEST", param_hint="NAME")
    if digest_required and digest is None:
        raise typer.BadParameter(f"missing the digest to trust for {name}", param_hint="DIGEST")


@app.command("allow")
def allow(
    name: Annotated[str | None, _NAME] = None,
    digest: Annotated[str | None, typer.Argument(
        metavar="DIGEST", help="The digest to trust for NAME (sha256:<hex>).", show_default=False)] = None,
    guest: Annotated[str | None, _GUEST] = None,
) -> None:
    """Trust exactly DIGEST for cap NAME, or the guest --guest DIGEST (nothing else: other names or digests
    stay untrusted)."""
    _cap_or_guest(name, digest, guest, digest_required=True)
    policy = TrustPolicy.load()
    if guest is not None:
        changed, what = policy.allow_guest(guest), f"guest {guest}"
    else:
        assert name is not None and digest is not None
        changed, what = policy.allow(name, digest), f"{name} {digest}"
    if changed:
        policy.save()
        say(f"allowed {what}")
    else:
        say(f"{what} was already allowed")


@app.command("revoke")
def revoke(
    name: Annotated[str | None, _NAME] = None,
    digest: Annotated[str | None, typer.Argument(
        metavar="DIGEST", help="The digest to stop trusting; omit to revoke every digest of NAME.",
        show_default=False)] = None,
    guest: Annotated[str | None, _GUEST] = None,
) -> None:
    """Stop trusting DIGEST (or every digest) for cap NAME, or the guest --guest DIGEST. Exits 1 if nothing
    was allowed."""
    _cap_or_guest(name, digest, guest, digest_required=False)
    policy = TrustPolicy.load()
    if guest is not None:
        if not policy.revoke_guest(guest):
            say(f"nothing to revoke: guest {guest} was not allowed", style="yellow")
            raise typer.Exit(1)
        policy.save()
        say(f"revoked guest {guest}")
        return
    assert name is not None
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
    """List every allowed (cap name, digest) pair, then every allowed guest as "(guest)"."""
    policy = TrustPolicy.load()
    entries, guests = policy.entries(), policy.guests()
    if not entries and not guests:
        say(f"nothing is trusted ({policy.path})")
        return
    # "(guest)" cannot be a cap name, so the two kinds never read alike.
    table = Table("cap", "digest", box=None, pad_edge=False)
    for entry in entries:
        table.add_row(entry.name, entry.digest)
    for digest in guests:
        table.add_row("(guest)", digest)
    out.print(table)
