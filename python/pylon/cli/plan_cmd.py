"""``composectl plan ...``: create, edit, show and verify plan files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table
from rich.text import Text

from pylon.blobstore import BlobStore, is_digest
from pylon.cli.console import out, say
from pylon.cli.progress import fetch_progress
from pylon.errors import BlobError, PlanError
from pylon.plan import DEFAULT_LIMITS, CapLimits, GuestLimits, GuestRef, Plan, RunLimits
from pylon.trust import TrustPolicy, allow_command, allow_guest_command

__all__ = ["app"]

app = typer.Typer(help="Create, edit, show and verify plans (the lock file of a Pylon app).",
                  no_args_is_help=True)

_PLAN = typer.Argument(metavar="PLAN", help="The plan file (JSON).", dir_okay=False)


@contextmanager
def _editing(plan: Path) -> Iterator[None]:
    """Names ``plan`` in a PlanError raised while editing it (e.g. a bad cap name)."""
    try:
        yield
    except PlanError as exc:
        if exc.file:
            raise
        message = str(exc).removeprefix(f"at {exc.path}: ") if exc.path else str(exc)
        raise PlanError(message, path=exc.path, file=str(plan)) from exc


def _store_file(store: BlobStore, file: Path) -> tuple[str, str, int]:
    """Puts a file in the store; returns its digest, a file:// source for it and its size."""
    digest = store.put_file(file)
    return digest, file.resolve().as_uri(), store.blob_path(digest).stat().st_size


@app.command("new")
def new(
    plan: Annotated[Path, _PLAN],
    guest: Annotated[Path | None, typer.Option(
        help="A custom guest component (pylon.wasm); it is stored and pinned by digest. "
             "Default: the stock guest.", dir_okay=False, exists=True)] = None,
    force: Annotated[bool, typer.Option(help="Replace PLAN if it exists.")] = False,
) -> None:
    """Write a new plan with no caps."""
    if plan.exists() and not force:
        raise PlanError("already exists; pass --force to replace it", file=str(plan))
    guest_ref = None
    if guest is not None:
        digest, source, size = _store_file(BlobStore(), guest)
        guest_ref = GuestRef(digest=digest, sources=(source,), size=size)
    Plan(guest=guest_ref).save(plan)
    say(f"wrote {plan}" + (f" (guest {guest_ref.digest})" if guest_ref else ""))
    if guest_ref is not None and guest_ref.digest is not None \
            and not TrustPolicy.load().is_trusted_guest(guest_ref.digest):
        say(f"note: this guest is not trusted yet; to allow it run: {allow_guest_command(guest_ref.digest)}",
            style="yellow")


@app.command("add")
def add(
    plan: Annotated[Path, _PLAN],
    name: Annotated[str, typer.Argument(metavar="NAME", help="The cap's name, as guests resolve it.")],
    file_or_digest: Annotated[str, typer.Argument(
        metavar="FILE_OR_DIGEST",
        help="A cap component file (stored, and its file:// URL recorded as a source) "
             "or a digest sha256:<hex> already stored or fetchable from --source.")],
    source: Annotated[list[str] | None, typer.Option(
        "--source", help="A URL to fetch the cap from (file://, http://, https://); repeatable, "
                         "tried in order.")] = None,
    memory_mb: Annotated[int | None, typer.Option(
        help=f"Memory limit in MiB (default {DEFAULT_LIMITS.memory_mb}).", show_default=False)] = None,
    timeout_ms: Annotated[int | None, typer.Option(
        help=f"Time limit per call in ms (default {DEFAULT_LIMITS.timeout_ms}).",
        show_default=False)] = None,
    max_payload_mb: Annotated[int | None, typer.Option(
        help=f"Largest payload per call in MiB (default {DEFAULT_LIMITS.max_payload_mb}).",
        show_default=False)] = None,
    wasi: Annotated[bool, typer.Option(
        "--wasi", help="Let the cap import WASI (deny-by-default context). Default: it imports nothing.")
    ] = False,
) -> None:
    """Add cap NAME to PLAN (or replace it), pinned by digest."""
    current = Plan.load(plan)
    store = BlobStore()
    sources = list(source or [])
    if is_digest(file_or_digest):
        digest = file_or_digest
        # A lock file names only what can be had: fetch (or verify) it now,
        # and record its size so later fetches stop there.
        with fetch_progress(name) as progress:
            size = store.fetch(digest, sources, progress=progress).stat().st_size
    else:
        file = Path(file_or_digest)
        if not file.is_file():
            raise typer.BadParameter(f"{file_or_digest!r} is neither a file nor a digest (sha256:<hex>)",
                                     param_hint="FILE_OR_DIGEST")
        digest, file_source, size = _store_file(store, file)
        sources = [file_source, *[s for s in sources if s != file_source]]
    limits = CapLimits(memory_mb=memory_mb, timeout_ms=timeout_ms, max_payload_mb=max_payload_mb)
    with _editing(plan):
        updated = current.with_cap(name, digest=digest, sources=sources, limits=limits, wasi=wasi, size=size)
    updated.save(plan)
    say(f"added cap {name} {digest} to {plan}")
    if not TrustPolicy.load().is_trusted(name, digest):
        say(f"note: not trusted yet; to allow it run: {allow_command(name, digest)}", style="yellow")


@app.command("remove")
def remove(
    plan: Annotated[Path, _PLAN],
    name: Annotated[str, typer.Argument(metavar="NAME", help="The cap to remove.")],
) -> None:
    """Remove cap NAME from PLAN."""
    loaded = Plan.load(plan)
    with _editing(plan):
        updated = loaded.without_cap(name)
    updated.save(plan)
    say(f"removed cap {name} from {plan}")


_CAP_LIMITS = (("memory", "memory_mb", "MiB"), ("timeout", "timeout_ms", "ms"),
               ("payload", "max_payload_mb", "MiB"))
_GUEST_LIMITS = (("memory", "memory_mb", "MiB"), ("timeout", "timeout_ms", "ms"), ("tmp", "tmp_mb", "MiB"))
_RUN_LIMITS = (("instances", "max_instances", ""), ("cap memory", "max_memory_mb", "MiB"))


def _limits_text(limits: CapLimits | GuestLimits | RunLimits, fields: tuple[tuple[str, str, str], ...] = _CAP_LIMITS,
                 sep: str = "\n") -> Text:
    """Effective limits; the ones the plan leaves to the defaults are dimmed."""
    text = Text()
    effective = limits.effective()
    for label, attr, unit in fields:
        if text:
            text.append(sep)
        style = "" if getattr(limits, attr) is not None else "dim"
        value = getattr(effective, attr)
        text.append(f"{label} {value} {unit}".rstrip() if value is not None else f"{label} none", style=style)
    return text


@app.command("show")
def show(plan: Annotated[Path, _PLAN]) -> None:
    """Show PLAN's guest and caps: digests, sources, limits (dim = default), WASI and trust."""
    loaded = Plan.load(plan)
    store, policy = BlobStore(), TrustPolicy.load()
    guest = loaded.guest
    if guest is None or guest.digest is None:
        out.print("guest: stock (the guest this install built)")
    else:
        trusted = "trusted" if policy.is_trusted_guest(guest.digest) else "NOT trusted"
        size = f", {guest.size} bytes" if guest.size is not None else ""
        out.print(f"guest: {guest.digest} ({trusted}{size})")
        for src in guest.sources:
            out.print(f"  source: {src}")
    guest_limits = guest.limits if guest is not None else GuestLimits()
    out.print(Text("guest limits: ").append_text(_limits_text(guest_limits, _GUEST_LIMITS, ", ")))
    out.print(Text("run limits: ").append_text(_limits_text(loaded.limits, _RUN_LIMITS, ", ")))
    if not loaded.caps:
        out.print("no caps")
        return
    table = Table(Column("cap", no_wrap=True), Column("digest", overflow="fold"),
                  Column("sources", overflow="fold"), Column("limits", no_wrap=True),
                  "wasi", "stored", "trusted", title=str(plan))
    for name, cap in loaded.caps.items():
        cap_trusted = policy.is_trusted(name, cap.digest)
        table.add_row(
            name, cap.digest, "\n".join(cap.sources) or "-", _limits_text(cap.limits),
            "yes" if cap.wasi else "no",
            "yes" if store.has(cap.digest) else "no",
            Text("yes", style="green") if cap_trusted else Text("no", style="red"),
        )
    out.print(table)


@app.command("verify")
def verify(plan: Annotated[Path, _PLAN]) -> None:
    """Check PLAN: schema, trust, and every trusted blob stored or fetchable with the right digest.

    Trust is checked first: an untrusted guest or cap is reported and never
    fetched. Missing trusted blobs are fetched (no further than the plan's
    size). Exits 1 if any trust or blob check fails.
    """
    loaded = Plan.load(plan)
    store, policy = BlobStore(), TrustPolicy.load()
    # (label, digest, sources, size, the command that would allow it or None if allowed)
    items: list[tuple[str, str, tuple[str, ...], int | None, str | None]] = []
    if loaded.guest is not None and loaded.guest.digest is not None:
        guest, digest = loaded.guest, loaded.guest.digest
        items.append(("guest", digest, guest.sources, guest.size,
                      None if policy.is_trusted_guest(digest) else allow_guest_command(digest)))
    for name, cap in loaded.caps.items():
        items.append((f"cap {name}", cap.digest, cap.sources, cap.size,
                      None if policy.is_trusted(name, cap.digest) else allow_command(name, cap.digest)))
    table = Table(Column("item", no_wrap=True), Column("digest", overflow="fold"), "trust", "blob",
                  title=str(plan))
    failures = []
    for label, digest, sources, size, allow in items:
        if allow is not None:
            # Untrusted bytes are not fetched: a plan cannot make Pylon download what you did not allow.
            failures.append(f"{label}: not trusted; to allow it run: {allow}")
            table.add_row(label, digest, Text("NOT ALLOWED", style="red"), Text("not fetched", style="dim"))
            continue
        try:
            with fetch_progress(label) as progress:
                store.fetch(digest, sources, size=size, progress=progress)
            blob = Text("ok", style="green")
        except BlobError as exc:
            blob = Text("FAILED", style="red")
            failures.append(f"{label}: {exc}")
        table.add_row(label, digest, Text("allowed", style="green"), blob)
    out.print(table)
    for failure in failures:
        say(failure, style="red")
    if failures:
        raise typer.Exit(1)
    say(f"{plan}: ok")
