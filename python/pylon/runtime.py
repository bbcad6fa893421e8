"""Runs a script in pylon.wasm: plan -> trust gate -> blobs -> engine.

The steps of one ``composectl run``:

1. Load the plan (``--plan``, else the default plan ``composectl setup``
   wrote, else an empty one) and check the folders the guest will see
   (:mod:`pylon.preopens`: read-only unless asked, never Pylon's own state).
2. Gate the guest's digest on the trust policy, *then* make sure its blob is
   stored (fetching it if needed). The engine verifies the blob's bytes
   against the digest before it compiles them, and runs an already compiled
   guest only from an artifact it authenticates.
3. Run the guest on a worker thread under its limits (time, memory; the
   caps it resolves share a budget of instances and memory), while this
   thread waits and turns Ctrl-C into a stop.
4. Each ``resolve-by-id(name)`` from the guest calls back into
   :class:`Resolver`: the name must be in the plan, its digest must pass the
   trust policy, and only then is its blob fetched (on first use: a cap the
   script never imports is never fetched) and handed to the engine as a
   :class:`~pylon.engine.ProviderSpec`. A refusal tells the guest the cap's
   name, digest and what to run; paths and causes go to the host's stderr.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path

from pylon import stock
from pylon.blobstore import BlobStore, Progress
from pylon.engine import Interrupt, ProviderSpec, get_engine
from pylon.errors import DigestMismatch, PylonError, TrustError
from pylon.guard import run_stoppable, timeout_ms
from pylon.names import CAP_NAME_PATTERN
from pylon.plan import CapEntry, Plan
from pylon.preopens import Preopen, plan_preopens
from pylon.trust import TrustPolicy

__all__ = ["run", "Resolver", "load_plan", "guest_blob"]

#: Makes a fetch progress callback for a description (the CLI passes a rich bar);
#: the context may yield None, for no progress reports.
ProgressFactory = Callable[[str], AbstractContextManager[Progress | None]]
#: Receives what the host must hear and the guest must not see.
Report = Callable[[str], None]

MIB = 1 << 20


def _no_progress(_description: str) -> AbstractContextManager[None]:
    return contextlib.nullcontext(None)


def _report_to_stderr(message: str) -> None:
    sys.stderr.write(f"pylon: {message}\n")
    sys.stderr.flush()


def load_plan(plan: Path | None) -> tuple[Plan, str]:
    """The plan to run with and a label for messages."""
    if plan is not None:
        return Plan.load(plan), str(plan)
    default = stock.default_plan_path()
    if default.exists():
        return Plan.load(default), str(default)
    return Plan(), "(no plan: run `composectl setup` or pass --plan)"


class _Refusal(Exception):
    """What the guest is told when a resolve is refused (``dynlink_kind`` is the WIT case)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.dynlink_kind = kind


class Resolver:
    """The trust gate and first-use fetch behind ``resolve-by-id``.

    Called by the engine (on the guest's thread, with the GIL) once per
    resolve. A refusal raises an exception whose text the guest sees: the
    cap's name, the digest it asked for and the command that would help.
    The full reason (plan path, source URLs, other trusted digests) goes to
    ``report`` on the host side.
    """

    def __init__(self, plan: Plan, plan_label: str, *, store: BlobStore, trust: TrustPolicy,
                 progress: ProgressFactory = _no_progress, report: Report = _report_to_stderr):
        self.plan = plan
        self.plan_label = plan_label
        self.store = store
        self.trust = trust
        self.progress = progress
        self.report = report

    def __call__(self, name: str) -> ProviderSpec:
        try:
            return self._resolve(name)
        except _Refusal:
            raise
        except Exception as exc:  # noqa: BLE001 - anything else: the host hears it, the guest not
            self.report(f"resolving cap {name[:64]!r} failed: {type(exc).__name__}: {exc}")
            raise _Refusal("not-found", f"cap {name[:64]!r} could not be resolved; "
                                        "composectl's error output says why") from None

    def _resolve(self, name: str) -> ProviderSpec:
        entry = self.plan.caps.get(name)
        if entry is None:
            known = ", ".join(sorted(self.plan.caps)) or "none"
            # The name is the guest's: shown as a bounded repr (no terminal escapes).
            shown = repr(name[:64]) + ("..." if len(name) > 64 else "")
            self.report(f"the guest asked for cap {shown}, which is not in the plan {self.plan_label} "
                        f"(caps there: {known})")
            hint = name if re.fullmatch(CAP_NAME_PATTERN, name) else "NAME"
            raise _Refusal("not-found", f"cap {shown} is not in this run's plan; "
                                        f"add it with: composectl plan add PLAN {hint} FILE")
        # The gate comes first: an untrusted cap is never fetched, let alone run.
        try:
            self._trust_gate(name, entry)
        except TrustError as exc:
            self.report(str(exc))
            raise _Refusal("denied", TrustPolicy.guest_message(name, entry.digest)) from None
        try:
            if self.store.has(entry.digest):
                # Not hashed here: the engine reads the blob once, checks its
                # digest and compiles exactly those bytes (a stored blob gone
                # bad is refused there; `composectl blob verify` quarantines it).
                path = self.store.blob_path(entry.digest)
            else:
                with self.progress(f"fetching cap {name}") as progress:
                    path = self.store.fetch(entry.digest, entry.sources, size=entry.size, progress=progress)
        except PylonError as exc:
            self.report(f"cap {name!r}: {exc}")
            raise _Refusal("not-found", f"cap {name!r} ({entry.digest}) could not be fetched; "
                                        "composectl's error output says why") from None
        limits = entry.limits.effective()
        assert limits.memory_mb is not None and limits.timeout_ms is not None
        assert limits.max_payload_mb is not None and limits.max_handles is not None
        return ProviderSpec(
            name=name,
            path=str(path),
            digest=entry.digest,
            memory_bytes=limits.memory_mb * MIB,
            timeout_ms=limits.timeout_ms,
            max_payload_bytes=limits.max_payload_mb * MIB,
            wasi=entry.wasi,
            max_handles=limits.max_handles,
        )

    def _trust_gate(self, name: str, entry: CapEntry) -> None:
        """Passes if the digest is pinned for ``name``, or the plan's signature vouches for it.

        A signature counts only when a key trusted for ``name`` signed a
        Statement naming ``name`` and exactly ``entry.digest``
        (:func:`pylon.signing.vouch`); the signature blob is fetched first,
        by its own digest, and the cap's blob only after this passes, and
        the engine then checks the cap's bytes against that same digest.

        Raises:
            TrustError: neither; a :class:`~pylon.errors.SignatureError`
                when a signature was there and failed (names cap, digest, key ids).
        """
        if entry.signature is None or self.trust.is_trusted(name, entry.digest):
            self.trust.check(name, entry.digest)
            return
        # Imported here: plans without signatures never load securesystemslib.
        from pylon.signing import vouch

        # No progress bar: a signature is at most 64 KiB.
        vouch(name, entry.digest, entry.signature, store=self.store, trust=self.trust)


def guest_blob(plan: Plan, store: BlobStore, trust: TrustPolicy,
               progress: ProgressFactory = _no_progress) -> tuple[Path, str, tuple[str, ...], int | None]:
    """The guest's blob path, digest, sources and size, after the trust gate.

    A stored guest is not hashed here: the engine verifies the bytes it
    compiles, and a compiled guest runs from an artifact it authenticates,
    so hashing 36 MB on every run would buy nothing.
    """
    if plan.guest is not None and plan.guest.digest is not None:
        digest, sources, size = plan.guest.digest, plan.guest.sources, plan.guest.size
    else:
        digest, sources, size = stock.stock_guest_ref()
    trust.check_guest(digest)
    if store.has(digest):
        return store.blob_path(digest), digest, sources, size
    with progress("fetching guest") as cb:
        return store.fetch(digest, sources, size=size, progress=cb), digest, sources, size


_guest_blob = guest_blob  # the name run() uses


def package_setup(plan: Plan, store: BlobStore, progress: ProgressFactory | None = None,
                  report: Report | None = None) -> tuple[list[tuple[str, str, bool]], dict[str, str]]:
    """The plan's pinned packages, ready for one run: engine preopens and guest environment.

    Each wheel is verified and its unpacked tree checked (or repaired) on every
    call (:func:`pylon.packages.prepare`); a plan without packages costs nothing
    and imports nothing.

    Raises:
        PackageError: a package cannot be fetched or used (the message names it).
    """
    if not plan.packages:
        return [], {}
    from pylon import packages

    ready = packages.prepare(plan.packages, store, progress=progress or _no_progress,
                             report=report or _report_to_stderr)
    return ready.engine_preopens(), dict(ready.env)


def run(*, plan: Path | None = None, script: str | None = None, code: str | None = None,
        args: Iterable[str] = (), env: Mapping[str, str] | None = None,
        dirs: Iterable[Preopen | str] = (), timeout_s: float | None = None,
        memory_mb: int | None = None, progress: ProgressFactory | None = None,
        store: BlobStore | None = None, report: Report | None = None,
        interrupt: Interrupt | None = None, tmp_mb: int | None = None,
        stdio_fds: tuple[int, int, int] | None = None, ahead: bool = False) -> int:
    """Runs ``script`` (or ``code``) in the guest; returns its exit status.

    Args:
        plan: the plan file; default: the default plan, or none.
        script: path of the script on the host. Its folder is preopened
            read-only at the same absolute path and is the guest's working
            directory.
        code: program text, as ``python -c``.
        args: the script's arguments.
        env: the guest's environment (it sees nothing of the host's otherwise;
            ``TMPDIR`` is set to its temporary folder unless ``env`` sets it).
        dirs: more host folders for the guest: ``"DIR"`` (read-only),
            ``"DIR:rw"`` (writable) or :class:`~pylon.preopens.Preopen`.
            Besides these the guest always gets a private, empty temporary
            folder at ``/tmp`` (``/var/tmp`` when ``/tmp`` is one of these)
            and an empty ``/dev/null`` (:mod:`pylon.scratch`), removed after
            the run.
        timeout_s: wall-clock limit; default the plan's ``guest.limits.timeout-ms``
            (none unless the plan sets one).
        memory_mb: memory limit; default the plan's ``guest.limits.memory-mb``.
        progress: makes progress callbacks for fetches.
        report: receives host-side details of refusals (default: stderr).
        interrupt: set it from another thread to stop the guest.
        tmp_mb: size cap of the temporary folder, MiB; default the plan's
            ``guest.limits.tmp-mb`` (64).
        stdio_fds: open descriptors for the guest's stdin, stdout and stderr
            (default: this process's own; the CLI's server passes its
            client's).
        ahead: start from a guest instance the engine made ahead, and have
            it make the next (for a process that runs again: the CLI's
            server; a one-shot process would make one for nothing).

    Raises:
        GuestTimeout, GuestInterrupted: the guest was stopped.
        ScratchFull: its temporary folder passed ``tmp_mb`` (it was stopped,
            or it ended with the folder past the cap).
        PylonError: the plan, a folder, the trust gate, the guest blob, a
            pinned package (:class:`~pylon.packages.PackageError`, naming it) or
            the engine failed before the script ran. Errors inside the script
            are its exit status.
    """
    # Imported here: the rest of this module is not the scratch folder's business.
    from pylon.scratch import check_tmp_mb, scratch

    progress = progress or _no_progress
    store = store or BlobStore()
    report = report or _report_to_stderr
    the_plan, label = load_plan(plan)
    script_path = Path(script).resolve() if script is not None else None
    if script_path is not None and not script_path.is_file():
        raise PylonError(f"script not found: {script}")
    argv = (["-c", code] if code is not None else [str(script_path)]) + list(args)
    limits = the_plan.guest_limits()
    budget = the_plan.run_limits()
    if timeout_s is None and limits.timeout_ms is not None:
        timeout_s = limits.timeout_ms / 1000
    limit_ms = timeout_ms(timeout_s)
    memory_mb = memory_mb if memory_mb is not None else limits.memory_mb
    tmp_mb = check_tmp_mb(tmp_mb if tmp_mb is not None else limits.tmp_mb)
    assert memory_mb is not None and budget.max_instances is not None and budget.max_memory_mb is not None
    max_instances, max_cap_memory_bytes = budget.max_instances, budget.max_memory_mb * MIB
    preopens = plan_preopens(script_path, dirs)
    trust = TrustPolicy.load()
    guest_path, guest_digest, guest_sources, guest_size = _guest_blob(the_plan, store, trust, progress)
    # Pinned packages: read-only folders on the guest's sys.path, checked before the run.
    package_preopens, package_env = package_setup(the_plan, store, progress, report)
    cwd = str(script_path.parent) if script_path is not None else (str(preopens[0].path) if preopens else "/")
    resolver = Resolver(the_plan, label, store=store, trust=trust, progress=progress, report=report)
    engine = get_engine()
    # One stop flag for the whole run: Ctrl-C, the deadline and the temporary
    # folder's watcher all stop the guest through it.
    stop_flag = interrupt or Interrupt()

    def attempt(blob: Path) -> int:
        # A fresh, empty temporary folder per attempt, removed whatever happens.
        with scratch(tmp_mb, interrupt=stop_flag, taken=[p.as_engine_tuple()[1] for p in preopens],
                     report=report) as tmp:
            opened = [*(p.as_engine_tuple() for p in preopens), *package_preopens,
                      *(p.as_engine_tuple() for p in tmp.preopens)]

            def call(stop: Interrupt) -> int:
                return engine.run_guest(
                    str(blob), guest_digest,
                    argv=argv, env=sorted({**tmp.env, **(env or {}), **package_env}.items()), cwd=cwd,
                    preopens=opened, resolver=resolver, report=report,
                    timeout_ms=limit_ms,
                    memory_bytes=memory_mb * MIB, max_instances=max_instances,
                    max_cap_memory_bytes=max_cap_memory_bytes, interrupt=stop, stdio_fds=stdio_fds,
                    ahead=ahead,
                )
            return run_stoppable(call, timeout_s=timeout_s, interrupt=stop_flag)

    try:
        return attempt(guest_path)
    except DigestMismatch as exc:
        # The stored guest is not what its digest says (the engine checked it
        # before compiling anything). Quarantine it, fetch it again, retry once.
        report(f"the stored guest failed verification ({exc}); fetching it again")
        with progress("fetching guest") as cb:
            fresh = store.fetch(guest_digest, guest_sources, size=guest_size, progress=cb)
        return attempt(fresh)
