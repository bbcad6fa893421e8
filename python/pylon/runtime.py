"""Runs a script in pylon.wasm: plan -> blobs -> trust gate -> engine.

The steps of one ``composectl run``:

1. Load the plan (``--plan``, else the default plan ``composectl setup``
   wrote, else an empty one) and find the guest: the plan's, or the stock
   guest this install built.
2. Make sure the guest blob is stored (fetching it if needed) and run it in
   the engine with the script's folder preopened.
3. Each ``resolve-by-id(name)`` from the guest calls back into
   :class:`Resolver`: the name must be in the plan, its digest must pass the
   trust policy, and only then is its blob fetched (on first use: a cap the
   script never imports is never fetched), verified and handed to the
   engine as a :class:`~pylon.engine.ProviderSpec`. A refusal raises, and the
   engine turns it into the guest-side exception; nothing is instantiated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import ContextManager

from pylon import stock
from pylon.blobstore import BlobStore
from pylon.engine import ProviderSpec, get_engine
from pylon.errors import PlanError, PylonError, TrustError
from pylon.plan import Plan
from pylon.trust import TrustPolicy
from pylon.wasm_sections import custom_section

__all__ = ["run", "Resolver", "load_plan"]

#: Makes a fetch progress callback for a description (the CLI passes a rich bar).
ProgressFactory = Callable[[str], ContextManager[Callable[[int, int | None], None]]]

#: The custom section a cap's typed Python shim travels in.
SHIM_SECTION = "pylon:shim"

MIB = 1 << 20


def _no_progress(_description: str):
    return contextlib.nullcontext(None)


def load_plan(plan: Path | None) -> tuple[Plan, str]:
    """The plan to run with and a label for messages."""
    if plan is not None:
        return Plan.load(plan), str(plan)
    default = stock.default_plan_path()
    if default.exists():
        return Plan.load(default), str(default)
    return Plan(), "(no plan: run `composectl setup` or pass --plan)"


class Resolver:
    """The trust gate and first-use fetch behind ``resolve-by-id``.

    Called by the engine (on its thread, with the GIL) once per resolve.
    Refusals raise a :class:`PylonError` whose ``dynlink_kind`` attribute
    names the WIT error case the guest will see.
    """

    def __init__(self, plan: Plan, plan_label: str, *, store: BlobStore, trust: TrustPolicy,
                 progress: ProgressFactory = _no_progress):
        self.plan = plan
        self.plan_label = plan_label
        self.store = store
        self.trust = trust
        self.progress = progress

    def __call__(self, name: str) -> ProviderSpec:
        try:
            return self._resolve(name)
        except TrustError as exc:
            exc.dynlink_kind = "denied"  # type: ignore[attr-defined]
            raise
        except PylonError as exc:
            exc.dynlink_kind = "not-found"  # type: ignore[attr-defined]
            raise

    def _resolve(self, name: str) -> ProviderSpec:
        entry = self.plan.caps.get(name)
        if entry is None:
            known = ", ".join(sorted(self.plan.caps)) or "none"
            raise PlanError(f"cap {name!r} is not in the plan {self.plan_label} (caps there: {known}); "
                            f"add it with: composectl plan add PLAN {name} FILE")
        # The gate comes first: an untrusted cap is never fetched, let alone run.
        self.trust.check(name, entry.digest)
        with self.progress(f"fetching cap {name}") as progress:
            path = self.store.fetch(entry.digest, entry.sources, progress=progress)
        data = path.read_bytes()
        shim = custom_section(data, SHIM_SECTION)
        limits = entry.limits.effective()
        return ProviderSpec(
            name=name,
            path=str(path),
            digest=entry.digest,
            memory_bytes=limits.memory_mb * MIB,
            timeout_ms=limits.timeout_ms,
            max_payload_bytes=limits.max_payload_mb * MIB,
            wasi=entry.wasi,
            shim=shim.decode("utf-8") if shim is not None else None,
        )


def _guest_blob(plan: Plan, store: BlobStore, progress: ProgressFactory) -> tuple[Path, str]:
    """The guest's path and digest, fetched if needed.

    A guest whose compiled form is already cached is not re-hashed: the
    compiled artifact was made from bytes verified at that time and is keyed
    by their digest, and hashing 36 MB would cost every run ~70 ms. A guest
    that must be compiled is verified first.
    """
    if plan.guest is not None:
        digest, sources = plan.guest.digest, plan.guest.sources
    else:
        digest, sources = stock.stock_guest()
    if store.has(digest) and get_engine().is_cached(digest):
        return store.blob_path(digest), digest
    with progress("fetching guest") as cb:
        return store.fetch(digest, sources, progress=cb), digest


def _preopens(script: Path | None, dirs: Iterable[Path]) -> list[tuple[str, str, bool]]:
    opened: list[tuple[str, str, bool]] = []
    seen: set[str] = set()
    folders = ([script.parent] if script is not None else []) + [Path(d) for d in dirs]
    for folder in folders:
        resolved = str(folder.resolve())
        if resolved not in seen:
            seen.add(resolved)
            opened.append((resolved, resolved, False))
    return opened


def run(*, plan: Path | None = None, script: str | None = None, code: str | None = None,
        args: Iterable[str] = (), env: Mapping[str, str] | None = None, dirs: Iterable[Path] = (),
        progress: ProgressFactory | None = None, store: BlobStore | None = None) -> int:
    """Runs ``script`` (or ``code``) in the guest; returns its exit status.

    Args:
        plan: the plan file; default: the default plan, or none.
        script: path of the script on the host. Its folder is preopened
            read-write at the same absolute path and is the guest's working
            directory.
        code: program text, as ``python -c``.
        args: the script's arguments.
        env: the guest's environment (it sees nothing of the host's otherwise).
        dirs: more host folders to preopen (read-write, same path).
        progress: makes progress callbacks for fetches.

    Raises:
        PylonError: the plan, the guest blob or the engine failed before the
            script ran. Errors inside the script are its exit status.
    """
    progress = progress or _no_progress
    store = store or BlobStore()
    the_plan, label = load_plan(plan)
    script_path = Path(script).resolve() if script is not None else None
    if script_path is not None and not script_path.is_file():
        raise PylonError(f"script not found: {script}")
    argv = (["-c", code] if code is not None else [str(script_path)]) + list(args)
    guest_path, guest_digest = _guest_blob(the_plan, store, progress)
    preopens = _preopens(script_path, dirs)
    cwd = str(script_path.parent) if script_path is not None else (preopens[0][1] if preopens else "/")
    resolver = Resolver(the_plan, label, store=store, trust=TrustPolicy.load(), progress=progress)
    return get_engine().run_guest(
        str(guest_path), guest_digest,
        argv=argv, env=sorted((env or {}).items()), cwd=cwd,
        preopens=preopens, resolver=resolver,
    )
