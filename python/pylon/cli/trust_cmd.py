"""``composectl trust ...``: which cap digests, which signing keys, and which guests, may run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from pylon.cli.console import out, say
from pylon.trust import TrustPolicy

__all__ = ["app"]

app = typer.Typer(help="Allow, revoke and list trusted cap digests, signing keys and guests.",
                  no_args_is_help=True)
key_app = typer.Typer(help="Trust, revoke and list public keys whose signatures vouch for a cap name's digests "
                           "(docs/signing.md).", no_args_is_help=True)
app.add_typer(key_app, name="key")

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
    """List every allowed (cap name, digest) pair, then every allowed guest as "(guest)", then the signing
    keys (as `trust key ls`)."""
    policy = TrustPolicy.load()
    entries, guests = policy.entries(), policy.guests()
    if not entries and not guests and not policy.key_entries() and not policy.revoked_keys():
        say(f"nothing is trusted ({policy.path})")
        return
    # "(guest)" cannot be a cap name, so the two kinds never read alike.
    table = Table("cap", "digest", box=None, pad_edge=False)
    for entry in entries:
        table.add_row(entry.name, entry.digest)
    for digest in guests:
        table.add_row("(guest)", digest)
    if entries or guests:
        out.print(table)
    if policy.key_entries() or policy.revoked_keys():
        _print_keys(policy)


# -- signing keys --------------------------------------------------------------


def _print_keys(policy: TrustPolicy) -> None:
    # A key id is only useful whole (`trust key revoke` takes it): never cut it,
    # and keep it first so an 80-column terminal fits it. "(revoked)" cannot
    # be a cap name, so the kinds never read alike.
    table = Table(Column("signing key id", no_wrap=True, min_width=64), "may sign cap", box=None,
                  pad_edge=False)
    for name, key in policy.key_entries():
        table.add_row(key.keyid, f"{name} (revoked)" if policy.is_revoked_key(key.keyid) else name)
    listed = {key.keyid for _, key in policy.key_entries()}
    for keyid in policy.revoked_keys():
        if keyid not in listed:
            table.add_row(keyid, "(revoked)")
    out.print(table)


@key_app.command("add")
def key_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The cap name the key may sign for (no other).",
                                        show_default=False)],
    public_key: Annotated[Path, typer.Argument(
        metavar="PUBLIC_KEY_FILE", dir_okay=False, show_default=False,
        help="The public key (PEM, Ed25519), e.g. the NAME.pub `composectl key new` wrote.")],
    unrevoke: Annotated[bool, typer.Option(
        "--unrevoke", help="Trust a key that was revoked (revocation usually means it leaked: be sure).")] = False,
) -> None:
    """Trust signatures by the key in PUBLIC_KEY_FILE for cap NAME: a plan's cap NAME may then run any digest
    this key signed for NAME. The key itself is copied into the trust policy, so a later change to the file
    changes nothing. Prints the key id (alone, on stdout)."""
    from pylon.signing import read_public_key

    key = read_public_key(public_key)
    policy = TrustPolicy.load()
    if policy.add_key(name, key, unrevoke=unrevoke):
        policy.save()
        say(f"trusted key {key.keyid} to sign {name}")
    else:
        say(f"key {key.keyid} was already trusted to sign {name}")
    typer.echo(key.keyid)


@key_app.command("revoke")
def key_revoke(
    name: Annotated[str | None, typer.Argument(
        metavar="NAME", help="The cap name to stop trusting the key for (omit with --all).",
        show_default=False)] = None,
    keyid: Annotated[str | None, typer.Argument(metavar="KEYID", help="The key id.", show_default=False)] = None,
    everywhere: Annotated[str | None, typer.Option(
        "--all", metavar="KEYID", show_default=False,
        help="Revoke KEYID for every cap name, for good: it is refused even where it is still listed, and "
             "`trust key add` refuses it unless given --unrevoke.")] = None,
) -> None:
    """Stop trusting key KEYID for cap NAME, or revoke --all KEYID everywhere. Exits 1 if there was nothing
    to revoke for NAME."""
    policy = TrustPolicy.load()
    if everywhere is not None:
        if name is not None or keyid is not None:
            raise typer.BadParameter("give either NAME KEYID or --all KEYID, not both", param_hint="NAME")
        was_revoked = policy.is_revoked_key(everywhere)
        names = policy.revoke_key(everywhere)
        policy.save()
        listed = f" (it was trusted for {', '.join(names)})" if names else ""
        say(f"key {everywhere} was already revoked" if was_revoked and not names
            else f"revoked key {everywhere} for every cap{listed}")
        return
    if name is None or keyid is None:
        raise typer.BadParameter("missing: NAME KEYID, or --all KEYID", param_hint="NAME")
    if not policy.remove_key(name, keyid):
        say(f"nothing to revoke: key {keyid} was not trusted for {name}", style="yellow")
        raise typer.Exit(1)
    policy.save()
    say(f"stopped trusting key {keyid} for {name}")


@key_app.command("ls")
def key_ls() -> None:
    """List every (cap name, key id) pair that is trusted, and every revoked key id."""
    policy = TrustPolicy.load()
    if not policy.key_entries() and not policy.revoked_keys():
        say(f"no signing key is trusted ({policy.path})")
        return
    _print_keys(policy)
