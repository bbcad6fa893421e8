"""The stock install: the guest and caps built from this checkout.

``composectl setup`` builds pylon.wasm and every cap under ``caps/``, puts
them in the blob store, trusts the guest and the caps it built (they are built
here, from sources the user has) and writes the default plan, so that
``composectl run script.py`` works with no further steps. Where things go
(the config root is created ``0700`` and refused when unsafe, see
:func:`pylon.paths.private_dir`):

* ``<config root>/stock.json``: digests (and sizes) of the stock guest and
  caps (beside the trust policy and default plan, so each Pylon home has its
  own).
* ``<config root>/plan.json``: the default plan, used when ``run`` gets no
  ``--plan``. It is a plain plan: edit it like any other; setup keeps the
  caps, guest limits and run limits you add to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pylon import paths
from pylon.blobstore import BlobStore, write_atomic
from pylon.errors import PylonError
from pylon.plan import CapEntry, GuestLimits, GuestRef, Plan
from pylon.trust import TrustPolicy

__all__ = ["SetupResult", "default_plan_path", "setup", "stock_file", "stock_guest", "stock_guest_digest",
           "stock_guest_size"]


def stock_file() -> Path:
    """Where the stock digests are recorded."""
    return paths.config_root() / "stock.json"


def default_plan_path() -> Path:
    """The plan ``composectl run`` uses without ``--plan``."""
    return paths.config_root() / "plan.json"


def stock_guest_ref() -> tuple[str, tuple[str, ...], int | None]:
    """The stock guest this install built: its digest, where its build output is, and its
    size in bytes (``None`` if the record predates sizes). One read of ``stock.json``.

    Raises:
        PylonError: nothing was built yet.
    """
    try:
        record = json.loads(stock_file().read_text())
        digest, sources = record["guest"], tuple(record.get("guest_sources", ()))
    except (OSError, ValueError, KeyError) as exc:
        raise PylonError("no stock guest yet: run `composectl setup` first "
                         "(it builds pylon.wasm and the stock caps)") from exc
    size = record.get("guest_size")
    return digest, sources, size if type(size) is int and size > 0 else None


def stock_guest() -> tuple[str, tuple[str, ...]]:
    """The digest of the stock guest and where its build output is (see :func:`stock_guest_ref`)."""
    digest, sources, _ = stock_guest_ref()
    return digest, sources


def stock_guest_digest() -> str:
    """The digest of the stock guest (see :func:`stock_guest_ref`)."""
    return stock_guest_ref()[0]


def stock_guest_size() -> int | None:
    """The stock guest's size in bytes, or ``None`` (see :func:`stock_guest_ref`)."""
    return stock_guest_ref()[2]


@dataclass(frozen=True)
class SetupResult:
    """What :func:`setup` built and recorded."""

    guest_digest: str
    caps: dict[str, str]
    plan_path: Path


def setup(*, log: Callable[[str], None] = lambda _m: None, store: BlobStore | None = None,
          cap_dirs: list[Path] | None = None) -> SetupResult:
    """Builds the stock guest and caps, stores and trusts them, writes the default plan.

    Raises:
        StateError: the config root cannot be created or is unsafe (checked
            before anything is built).
    """
    from pylon.build.caps import build_cap, find_caps
    from pylon.build.guest import build_guest

    paths.private_dir(paths.config_root())
    store = store or BlobStore()
    log("building the guest (pylon.wasm)")
    guest = build_guest()
    guest_digest = store.put_file(guest.path)
    guest_size = _stored_size(store, guest_digest)
    log(f"guest {guest_digest}")

    trust = TrustPolicy.load()
    trust.allow_guest(guest_digest)
    caps: dict[str, str] = {}
    entries: dict[str, CapEntry] = {}
    old = Plan.load(default_plan_path()) if default_plan_path().exists() else Plan()
    for cap_dir in cap_dirs if cap_dirs is not None else find_caps(paths.SOURCE_ROOT / "caps"):
        log(f"building cap {cap_dir.name}")
        built = build_cap(cap_dir)
        digest = store.put_file(built.path)
        trust.allow(built.name, digest)
        caps[built.name] = digest
        previous = old.caps.get(built.name)
        entries[built.name] = CapEntry(
            digest=digest,
            sources=(built.path.as_uri(),),
            size=_stored_size(store, digest),
            limits=previous.limits if previous else CapEntry(digest=digest).limits,
            wasi=previous.wasi if previous else False,
        )
        log(f"cap {built.name} {digest}")
    trust.save()
    # Caps the user added to the default plan by hand stay in it, and so do
    # the guest limits and run limits set there. The guest is the stock one
    # (no digest): the runtime finds it through stock.json.
    for name, entry in old.caps.items():
        entries.setdefault(name, entry)
    guest_limits = old.guest.limits if old.guest is not None else GuestLimits()
    plan = Plan(guest=GuestRef(limits=guest_limits) if guest_limits != GuestLimits() else None,
                caps=entries, limits=old.limits)
    plan.save(default_plan_path())
    record = {"guest": guest_digest, "guest_sources": [guest.path.as_uri()], "guest_size": guest_size,
              "caps": caps}
    write_atomic(stock_file(), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return SetupResult(guest_digest, caps, default_plan_path())


def _stored_size(store: BlobStore, digest: str) -> int:
    """The size of a blob just stored (the plan's ``size``: a fetch stops there)."""
    return store.blob_path(digest).stat().st_size
