"""``composectl blob ...``: the content-addressed blob store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pylon.blobstore import BlobStore
from pylon.cli.console import out, say
from pylon.plan import Plan

__all__ = ["app", "human_size"]

app = typer.Typer(help="Store, list, verify and clean up blobs (guests and caps by digest).",
                  no_args_is_help=True)


def human_size(size: int) -> str:
    """``12.3 MB``-style size (decimal units, as rich's download column uses)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


@app.command("put")
def put(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The file to store.", dir_okay=False)],
) -> None:
    """Copy FILE into the blob store and print its digest (alone, on stdout)."""
    digest = BlobStore().put_file(file)
    typer.echo(digest)


@app.command("ls")
def ls() -> None:
    """List stored blobs with their sizes (by name; use `blob verify` to hash them)."""
    store = BlobStore()
    blobs = store.ls()
    if not blobs:
        say(f"the blob store is empty ({store.blob_dir})")
        return
    table = Table("digest", "size", box=None, pad_edge=False)
    for blob in blobs:
        table.add_row(blob.digest, human_size(blob.size))
    out.print(table)


@app.command("verify")
def verify() -> None:
    """Hash every stored blob; quarantine bad ones. Exits 1 if any was bad."""
    store = BlobStore()
    count = len(store.ls())
    bad = store.verify()
    for blob in bad:
        say(f"bad blob {blob.digest}: its bytes hash to {blob.found}; moved to {blob.moved_to}",
            style="red")
    if bad:
        raise typer.Exit(1)
    say(f"{count} blob(s) verified in {store.blob_dir}")


@app.command("gc")
def gc(
    keep: Annotated[list[Path] | None, typer.Option(
        "--keep", metavar="PLAN", help="A plan whose guest and caps to keep; repeat for several plans.")] = None,
    everything: Annotated[bool, typer.Option(
        "--all", help="Keep nothing: empty the store (needed when no --keep is given).")] = False,
) -> None:
    """Remove blobs no given plan refers to, stale temp files and quarantined blobs."""
    if not keep and not everything:
        raise typer.BadParameter("pass --keep PLAN for each plan to keep, or --all to empty the store",
                                 param_hint="--keep")
    digests: set[str] = set()
    for plan_path in keep or []:
        digests |= Plan.load(plan_path).digests()
    report = BlobStore().gc(digests)
    for digest in report.removed:
        out.print(f"removed {digest}")
    say(f"removed {len(report.removed)} blob(s) ({human_size(report.freed_bytes)}) "
        f"and {report.temps_removed} stale temp file(s); kept {len(digests)}")
