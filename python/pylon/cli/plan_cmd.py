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
from pylon.errors import BlobError, PlanError, SignatureError
from pylon.plan import DEFAULT_LIMITS, BlobRef, CapEntry, CapLimits, GuestLimits, GuestRef, Plan, RunLimits
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


def _pull_oci(store: BlobStore, name: str, reference: str) -> tuple[str, int, str, BlobRef | None]:
    """Resolves an oci:// cap, pulls it into the store and looks for its signature tag.

    Returns the layer digest, its size, the source to record and the
    signature's BlobRef (None if the repository has no ``sha256-<hex>.sig``).
    The source is pinned by manifest digest, tag kept (``oci://H/R:TAG@sha256:M``):
    the plan is a lock file and names what was checked now; a tag moved later
    cannot make the source serve anything else (the layer digest would be
    refused anyway), and the tag stays for readers.
    """
    from pylon import oci

    ref = oci.parse_reference(reference)
    with oci.client(ref.host) as client:
        artifact = client.resolve(ref)
        assert artifact is not None
        if not artifact.is_wasm:
            raise PlanError(f"{reference} is a {artifact.layer_media_type} artifact, not a component")
        sig_ref = ref.at(tag=oci.signature_tag(artifact.layer_digest))
        sig = client.resolve(sig_ref, optional=True)
    pinned = str(artifact.reference)
    with fetch_progress(name) as progress:
        store.fetch(artifact.layer_digest, [pinned], size=artifact.layer_size, progress=progress)
    if sig is None:
        return artifact.layer_digest, artifact.layer_size, pinned, None
    if sig.layer_media_type != oci.DSSE_MEDIA_TYPE:
        raise PlanError(f"{sig_ref} holds a {sig.layer_media_type} layer, not a signature "
                        f"({oci.DSSE_MEDIA_TYPE})")
    with fetch_progress(f"{name} signature") as progress:
        store.fetch(sig.layer_digest, [str(sig_ref)], size=sig.layer_size, progress=progress)
    return (artifact.layer_digest, artifact.layer_size, pinned,
            BlobRef(digest=sig.layer_digest, sources=(str(sig_ref),), size=sig.layer_size))


@app.command("add")
def add(
    plan: Annotated[Path, _PLAN],
    name: Annotated[str, typer.Argument(metavar="NAME", help="The cap's name, as guests resolve it.")],
    file_or_digest: Annotated[str, typer.Argument(
        metavar="FILE_OR_DIGEST",
        help="A cap component file (stored, and its file:// URL recorded as a source), "
             "a digest sha256:<hex> already stored or fetchable from --source, "
             "or an OCI reference oci://HOST[:PORT]/REPO:TAG (pulled; recorded pinned by manifest digest).")],
    source: Annotated[list[str] | None, typer.Option(
        "--source", help="A URL to fetch the cap from (file://, http://, https://, oci://); repeatable, "
                         "tried in order.")] = None,
    signature: Annotated[Path | None, typer.Option(
        help="A detached signature of the cap (a DSSE envelope file): stored, and recorded as the "
             "cap's signature. Default: the registry's sha256-<hex>.sig tag, for an oci:// cap.",
        exists=True, dir_okay=False)] = None,
    memory_mb: Annotated[int | None, typer.Option(
        help=f"Memory limit in MiB (default {DEFAULT_LIMITS.memory_mb}).", show_default=False)] = None,
    timeout_ms: Annotated[int | None, typer.Option(
        help=f"Time limit per call in ms (default {DEFAULT_LIMITS.timeout_ms}).",
        show_default=False)] = None,
    max_payload_mb: Annotated[int | None, typer.Option(
        help=f"Largest payload per call in MiB (default {DEFAULT_LIMITS.max_payload_mb}).",
        show_default=False)] = None,
    max_handles: Annotated[int | None, typer.Option(
        help=f"Most live handles (resources) the cap may hold for one run, for caps with a generated "
             f"interface (default {DEFAULT_LIMITS.max_handles}).", show_default=False)] = None,
    wasi: Annotated[bool, typer.Option(
        "--wasi", help="Let the cap import WASI (deny-by-default context). Default: it imports nothing.")
    ] = False,
) -> None:
    """Add cap NAME to PLAN (or replace it), pinned by digest."""
    current = Plan.load(plan)
    store = BlobStore()
    sources = list(source or [])
    found_signature: BlobRef | None = None
    if file_or_digest[:6].lower() == "oci://":
        digest, size, oci_source, found_signature = _pull_oci(store, name, file_or_digest)
        sources = [oci_source, *[s for s in sources if s != oci_source]]
    elif is_digest(file_or_digest):
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
    if signature is not None:
        sig_digest, sig_source, sig_size = _store_file(store, signature)
        found_signature = BlobRef(digest=sig_digest, sources=(sig_source,), size=sig_size)
    limits = CapLimits(memory_mb=memory_mb, timeout_ms=timeout_ms, max_payload_mb=max_payload_mb,
                       max_handles=max_handles)
    with _editing(plan):
        updated = current.with_cap(name, digest=digest, sources=sources, limits=limits, wasi=wasi, size=size,
                                   signature=found_signature)
    updated.save(plan)
    say(f"added cap {name} {digest} to {plan}"
        + (f" (signature {found_signature.digest})" if found_signature is not None else ""))
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
               ("payload", "max_payload_mb", "MiB"), ("handles", "max_handles", ""))
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
        # show fetches nothing: a signature counts here only if it is already stored.
        how, _why = _cap_trust(name, cap, policy, store, fetch=False)
        table.add_row(
            name, cap.digest, "\n".join(cap.sources) or "-", _limits_text(cap.limits),
            "yes" if cap.wasi else "no",
            "yes" if store.has(cap.digest) else "no",
            Text(how, style="green") if how else Text("no", style="red"),
        )
    out.print(table)
    for pin in loaded.packages:
        stored = "stored" if store.has(pin.digest) else "not stored"
        out.print(f"package {pin.name} {pin.version}: {pin.digest} ({stored})")


def _cap_trust(name: str, cap: CapEntry, policy: TrustPolicy, store: BlobStore, *,
               fetch: bool) -> tuple[str | None, str | None]:
    """How cap ``name`` passes the trust gate ("yes", "signed by KEYID"), or None and why not.

    The same rule as the runtime's gate: a pinned digest, or a signature by a
    key trusted for the name that vouches for exactly this digest.
    """
    if policy.is_trusted(name, cap.digest):
        return "yes", None
    if cap.signature is not None and policy.keys(name) and (fetch or store.has(cap.signature.digest)):
        from pylon.signing import vouch  # securesystemslib: only for plans with signatures

        try:
            return f"signed by {vouch(name, cap.digest, cap.signature, store=store, trust=policy)}", None
        except SignatureError as exc:
            return None, str(exc)
    return None, f"not trusted; to allow it run: {allow_command(name, cap.digest)}"


@app.command("verify")
def verify(plan: Annotated[Path, _PLAN]) -> None:
    """Check PLAN: schema, trust, and every trusted blob stored or fetchable with the right digest.

    Trust is checked first: an untrusted guest or cap is reported and never
    fetched. Missing trusted blobs are fetched (no further than the plan's
    size). Exits 1 if any trust or blob check fails.
    """
    loaded = Plan.load(plan)
    store, policy = BlobStore(), TrustPolicy.load()
    # (label, digest, sources, size, why it is not trusted (with the command that would allow it) or None)
    items: list[tuple[str, str, tuple[str, ...], int | None, str | None]] = []
    if loaded.guest is not None and loaded.guest.digest is not None:
        guest, digest = loaded.guest, loaded.guest.digest
        items.append(("guest", digest, guest.sources, guest.size,
                      None if policy.is_trusted_guest(digest)
                      else f"not trusted; to allow it run: {allow_guest_command(digest)}"))
    for name, cap in loaded.caps.items():
        items.append((f"cap {name}", cap.digest, cap.sources, cap.size,
                      _cap_trust(name, cap, policy, store, fetch=True)[1]))
    # Packages run inside the guest, like the script: pinned by digest, no trust entry.
    items += [(f"package {p.name}", p.digest, p.sources, p.size, None) for p in loaded.packages]
    table = Table(Column("item", no_wrap=True), Column("digest", overflow="fold"), "trust", "blob",
                  title=str(plan))
    failures = []
    for label, digest, sources, size, allow in items:
        if allow is not None:
            # Untrusted bytes are not fetched: a plan cannot make Pylon download what you did not allow.
            failures.append(f"{label}: {allow}")
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


def _source_options(values: list[str]) -> dict[str, list[str]]:
    """``--source NAME=URL`` options, by normalized package name."""
    from packaging.utils import canonicalize_name

    out: dict[str, list[str]] = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not name or not url:
            raise typer.BadParameter(f"{value!r} is not NAME=URL", param_hint="--source")
        out.setdefault(canonicalize_name(name), []).append(url)
    return out


@app.command("add-packages")
def add_packages(
    plan: Annotated[Path, _PLAN],
    specs: Annotated[list[str] | None, typer.Argument(
        metavar="[SPEC]...", help="Requirements as pip takes them: NAME, NAME==VERSION, 'NAME>=1,<2'.",
        show_default=False)] = None,
    requirement: Annotated[list[Path] | None, typer.Option(
        "-r", "--requirement", help="A requirements file (pip's format); repeatable.", dir_okay=False,
        exists=True)] = None,
    source: Annotated[list[str] | None, typer.Option(
        "--source", metavar="NAME=URL", help="Another source for package NAME's wheel, after the URL pip "
                                             "found it at; repeatable.")] = None,
    index_url: Annotated[str | None, typer.Option(
        "--index-url", help="The package index pip resolves from (default: pip's own setting).")] = None,
    find_links: Annotated[list[str] | None, typer.Option(
        "--find-links", help="A folder or page of wheels pip may also use; repeatable.")] = None,
) -> None:
    """Pin pure-Python packages (and their dependencies) in PLAN for the guest's sys.path.

    pip resolves them for the guest (CPython 3.14, pure-Python wheels only);
    each wheel is fetched into the blob store, checked, and pinned by sha256
    with the URL it came from. Packages of the same name are replaced; the
    plan's others are kept (and constrain the resolution). docs/packages.md.
    """
    from pylon import packages

    current = Plan.load(plan)
    extra = _source_options(list(source or []))
    found = packages.resolve(list(specs or []), list(requirement or []), keep=current.packages,
                             index_url=index_url, find_links=list(find_links or []))
    unknown = sorted(set(extra) - {f.name for f in found})
    if unknown:
        raise typer.BadParameter(f"{', '.join(unknown)} is not among the resolved packages "
                                 f"({', '.join(f.name for f in found)})", param_hint="--source")
    store = BlobStore()
    pins = []
    for item in found:
        with fetch_progress(f"package {item.name}") as progress:
            pins.append(packages.pin(item, store, extra_sources=extra.get(item.name, ()), progress=progress))
    with _editing(plan):
        updated = packages.merge(current, pins)
    updated.save(plan)
    for p in pins:
        say(f"pinned {p.name} {p.version} {p.digest} ({p.size} bytes)")
    say(f"wrote {plan}: {len(updated.packages)} package(s)")


@app.command("rm-package")
def rm_package(
    plan: Annotated[Path, _PLAN],
    names: Annotated[list[str] | None, typer.Argument(metavar="[NAME]...", help="Packages to remove.",
                                                      show_default=False)] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove every package.")] = False,
) -> None:
    """Remove packages from PLAN (by name), or all of them with --clear."""
    from packaging.utils import canonicalize_name

    current = Plan.load(plan)
    kept = []
    if not clear:
        if not names:
            raise typer.BadParameter("name a package to remove, or pass --clear", param_hint="NAME")
        gone = {canonicalize_name(n) for n in names}
        missing = sorted(gone - {p.name for p in current.packages})
        if missing:
            pinned = ", ".join(p.name for p in current.packages) or "none"
            raise PlanError(f"no package {', '.join(missing)} in the plan (packages there: {pinned})",
                            file=str(plan))
        kept = [p for p in current.packages if p.name not in gone]
    current.with_packages(kept).save(plan)
    say(f"wrote {plan}: {len(kept)} package(s)")
