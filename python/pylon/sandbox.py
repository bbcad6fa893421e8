"""The embedding API: run untrusted Python from a Python program.

::

    import pylon

    sb = pylon.Sandbox(timeout=2.0, memory_mb=256, caps={"kv": my_store})
    r = sb.run("print(1)")
    r.exit_code, r.stdout, r.stderr, r.duration, r.timed_out

    with sb.session() as s:          # one instance whose globals persist
        s.run("x = 41")
        s.run("print(x + 1)")

A :class:`Sandbox` holds what every run shares: the plan, the checked
folders, the trust decision on the guest, and the guest itself, loaded and
linked once (``Engine.prepare_guest``). Each :meth:`Sandbox.run` is then a
fresh instance of it, so nothing a script does survives into the next run;
a :class:`Session` is the one exception, on purpose.

What the guest may do is the same as under ``composectl run`` (see
``docs/security.md``): it sees only the folders given, read-only unless
``"rw"``, only the environment given, and only the caps the plan names
(trust-gated, fetched on first use) plus the host caps given in ``caps=``.
Time, memory and (optionally) fuel are bounded per run; the caps a run
resolves share the plan's instance and memory budget.

The engine releases the GIL while a guest runs, so threads run guests in
parallel; :meth:`Sandbox.run_async` runs one on a worker thread for asyncio.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pylon import _engine
from pylon.blobstore import BlobStore
from pylon.engine import HostCapSpec, Interrupt, ProviderSpec, get_engine
from pylon.errors import DigestMismatch, GuestInterrupted, PylonError
from pylon.guard import timeout_ms
from pylon.hostcaps import host_cap_handler
from pylon.names import CAP_NAME_RULE, is_cap_name
from pylon.plan import Plan
from pylon.preopens import Preopen, parse_dir_spec, plan_preopens
from pylon.runtime import Resolver, guest_blob, load_plan, package_setup
from pylon.scratch import Scratch, Stoppable, check_tmp_mb, scratch
from pylon.trust import TrustPolicy

__all__ = ["Sandbox", "Session", "Result", "OutputSink"]

MIB = 1 << 20
#: Where a guest stream goes: None captures it into the Result, "inherit"
#: writes to this process's own stream, a callable receives each write.
OutputSink = None | Literal["inherit"] | Callable[[bytes], object]
#: Default capture per stream; what a guest prints past it is dropped and counted.
DEFAULT_MAX_OUTPUT = 16 * MIB


@dataclass(frozen=True)
class Result:
    """What one run (or one session call) did.

    Attributes:
        exit_code: 0, 1 for an uncaught exception, ``sys.exit``'s status,
            124 when stopped by its time limit or fuel.
        stdout, stderr: what it printed (empty when streamed or inherited).
        duration: wall-clock seconds of the call, as the host measured it.
        timed_out: its time limit stopped it.
        out_of_fuel: its fuel ran out.
        fuel_consumed: fuel it used (sandboxes with ``fuel=`` only).
        output_dropped: bytes printed past ``max_output_bytes`` (lost).
        handles_released: cap name -> handles the run left open, which the
            cap released (ran their destructors) when it was dropped; only
            caps that released any. For a session call: the caps dropped
            during it (and all of them when it ended the session).
    """

    exit_code: int
    stdout: bytes
    stderr: bytes
    duration: float
    timed_out: bool = False
    out_of_fuel: bool = False
    fuel_consumed: int | None = None
    output_dropped: int = 0
    handles_released: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether it exited with status 0."""
        return self.exit_code == 0


def _result(outcome: _engine.Outcome, duration: float) -> Result:
    if outcome.stopped == "interrupt":
        raise GuestInterrupted(f"the guest was interrupted after {outcome.stopped_after or 0:.2f} s",
                               seconds=outcome.stopped_after)
    return Result(
        exit_code=outcome.status,
        stdout=outcome.stdout,
        stderr=outcome.stderr,
        duration=duration,
        timed_out=outcome.stopped == "timeout",
        out_of_fuel=outcome.stopped == "fuel",
        fuel_consumed=outcome.fuel_consumed,
        output_dropped=outcome.dropped,
        handles_released=outcome.handles_released,
    )


def _dir_list(dirs: Mapping[str | Path, str] | Iterable[str | Path | Preopen] | None) -> list[Preopen]:
    """``{path: "ro"|"rw"}`` or ``["DIR", "DIR:rw", Preopen]`` as unchecked preopens."""
    if dirs is None:
        return []
    if isinstance(dirs, Mapping):
        out = []
        for folder, mode in dirs.items():
            if mode not in ("ro", "rw"):
                raise PylonError(f"dirs[{str(folder)!r}] must be 'ro' or 'rw', got {mode!r}")
            out.append(Preopen(Path(folder), writable=mode == "rw"))
        return out
    return [d if isinstance(d, Preopen) else Preopen(d) if isinstance(d, Path) else parse_dir_spec(d)
            for d in dirs]


def _bytes(data: bytes | str | None) -> bytes:
    if data is None:
        return b""
    return data.encode() if isinstance(data, str) else bytes(data)


class _SandboxResolver:
    """Host caps by name first, then the plan's caps through the trust gate."""

    def __init__(self, host: Mapping[str, HostCapSpec], plan: Resolver):
        self.host = host
        self.plan = plan

    def __call__(self, name: str) -> ProviderSpec | HostCapSpec:
        found = self.host.get(name)
        return found if found is not None else self.plan(name)


class Sandbox:
    """A configured guest; each :meth:`run` is a fresh, isolated instance.

    Args:
        plan: plan file (``str``/``Path``) or a loaded :class:`~pylon.plan.Plan`;
            None: the default plan ``composectl setup`` wrote, else none.
        timeout: seconds each run (each session call) may take; default the
            plan's ``guest.limits.timeout-ms``, else none.
        memory_mb: the guest's memory limit; default the plan's.
        fuel: a deterministic CPU budget per run, in wasm fuel units (about
            one per instruction). Uses a second, metering engine: its first
            use compiles the guest for it (cached on disk afterwards).
        tmp_mb: size cap of each run's private ``/tmp`` (see
            :mod:`pylon.scratch`); default the plan's ``guest.limits.tmp-mb``.
            0: no ``/tmp`` or ``/dev/null`` at all (a run is cheaper by the
            folder it no longer makes and removes).
        dirs: host folders the guest sees at the same path:
            ``{"/data": "ro", "/out": "rw"}`` or ``["/data", "/out:rw"]``.
            Pylon's own folders are refused.
        env: the guest's whole environment (it sees nothing of the host's).
        caps: host caps, ``{"name": object}``: the guest resolves them like
            plan caps and calls their public methods (see :mod:`pylon.hostcaps`).
        stdout, stderr: where output goes (:data:`OutputSink`); default captured.
        max_output_bytes: capture limit per stream and run.
        store: the blob store (default: the user's).
        report: receives host-side details the guest must not see
            (default: this process's stderr).

    Raises:
        PylonError: a bad plan, folder, limit or cap; an untrusted guest; a
            guest that cannot be fetched or loaded.
    """

    def __init__(self, plan: str | Path | Plan | None = None, *, timeout: float | None = None,
                 memory_mb: int | None = None, fuel: int | None = None, tmp_mb: int | None = None,
                 dirs: Mapping[str | Path, str] | Iterable[str | Path | Preopen] | None = None,
                 env: Mapping[str, str] | None = None, caps: Mapping[str, object] | None = None,
                 stdout: OutputSink = None, stderr: OutputSink = None,
                 max_output_bytes: int = DEFAULT_MAX_OUTPUT, store: BlobStore | None = None,
                 report: Callable[[str], None] | None = None):
        if isinstance(plan, Plan):
            self.plan, label = plan, "(plan given to Sandbox)"
        else:
            self.plan, label = load_plan(Path(plan) if plan is not None else None)
        limits = self.plan.guest_limits()
        budget = self.plan.run_limits()
        if timeout is None and limits.timeout_ms is not None:
            timeout = limits.timeout_ms / 1000
        self.timeout = timeout
        self._timeout_ms = timeout_ms(timeout)
        memory_mb = memory_mb if memory_mb is not None else limits.memory_mb
        if memory_mb is None or memory_mb <= 0:
            raise PylonError(f"memory_mb must be a positive number of MiB, got {memory_mb}")
        if fuel is not None and fuel <= 0:
            raise PylonError(f"fuel must be a positive number, got {fuel}")
        if max_output_bytes < 0:
            raise PylonError("max_output_bytes must be 0 or more")
        assert budget.max_instances is not None and budget.max_memory_mb is not None
        # 0: no /tmp and no /dev/null (saves making and removing a folder per run).
        self._tmp_mb = 0 if tmp_mb == 0 else check_tmp_mb(tmp_mb if tmp_mb is not None else limits.tmp_mb)
        self._memory_bytes = memory_mb * MIB
        self._fuel = fuel
        self._max_instances = budget.max_instances
        self._max_cap_memory = budget.max_memory_mb * MIB
        self._preopens = plan_preopens(None, _dir_list(dirs))
        self._env = sorted((str(k), str(v)) for k, v in (env or {}).items())
        self._stdout, self._stderr = stdout, stderr
        self._max_output = max_output_bytes
        self.report = report or _report_to_stderr
        self._host_caps = self._host_cap_specs(caps or {})
        store = store or BlobStore()
        trust = TrustPolicy.load()
        self._resolver = _SandboxResolver(
            self._host_caps, Resolver(self.plan, label, store=store, trust=trust, report=self.report))
        self._engine = get_engine(fuel=fuel is not None)
        path, digest, sources, size = guest_blob(self.plan, store, trust)
        try:
            self._guest = self._engine.prepare_guest(str(path), digest)
        except DigestMismatch as exc:
            # The stored guest went bad (the engine checked it before compiling):
            # fetch it again once, as composectl run does.
            self.report(f"the stored guest failed verification ({exc}); fetching it again")
            fresh = store.fetch(digest, sources, size=size)
            self._guest = self._engine.prepare_guest(str(fresh), digest)
        self._store = store
        # The plan's pinned packages: fetched and unpacked now, so a bad one fails
        # here; checked again before every run and session (docs/packages.md).
        self._packages()

    def _packages(self) -> tuple[list[tuple[str, str, bool]], list[tuple[str, str]]]:
        """Package preopens for one run, and the sandbox's environment with their variable."""
        opened, extra = package_setup(self.plan, self._store, report=self.report)
        if not extra:  # no packages: nothing to merge on this per-run path
            return opened, self._env
        return opened, sorted({**dict(self._env), **extra}.items())

    def _host_cap_specs(self, caps: Mapping[str, object]) -> dict[str, HostCapSpec]:
        specs = {}
        for name, obj in caps.items():
            if not is_cap_name(name):
                raise PylonError(f"host cap name {name!r} is not a valid cap name: {CAP_NAME_RULE}")
            if name in self.plan.caps:
                raise PylonError(f"cap {name!r} is both in the plan and in caps=: rename one of them")
            specs[name] = HostCapSpec(name=name, handler=host_cap_handler(name, obj, self.report),
                                      max_payload_bytes=64 * MIB)
        return specs

    # -- runs -------------------------------------------------------------

    def run(self, code: str, *, argv: Iterable[str] = (), stdin: bytes | str | None = None,
            timeout: float | None = None, interrupt: Interrupt | None = None) -> Result:
        """Runs ``code`` as ``python -c`` would, in a fresh instance.

        ``argv`` follows ``sys.argv[0] == "-c"``; ``stdin`` is what the guest
        reads; ``timeout`` overrides the sandbox's for this run;
        ``interrupt.set()`` from another thread stops it (raising
        :class:`~pylon.errors.GuestInterrupted`).
        """
        cwd = str(self._preopens[0].path) if self._preopens else "/"
        return self._run(["-c", code, *argv], cwd, self._preopens, stdin, timeout, interrupt)

    def run_file(self, path: str | Path, *, argv: Iterable[str] = (), stdin: bytes | str | None = None,
                 timeout: float | None = None, interrupt: Interrupt | None = None) -> Result:
        """Runs the script at ``path`` (its folder visible read-only, and the working directory)."""
        script = Path(path).resolve()
        if not script.is_file():
            raise PylonError(f"script not found: {path}")
        preopens = plan_preopens(script, self._preopens)
        return self._run([str(script), *argv], str(script.parent), preopens, stdin, timeout, interrupt)

    async def run_async(self, code: str, **kwargs: Any) -> Result:
        """:meth:`run` on a worker thread, for asyncio hosts."""
        return await asyncio.to_thread(self.run, code, **kwargs)

    def _run(self, argv: list[str], cwd: str, preopens: list[Preopen], stdin: bytes | str | None,
             timeout: float | None, interrupt: Interrupt | None) -> Result:
        limit_ms = timeout_ms(timeout) if timeout is not None else self._timeout_ms
        data = _bytes(stdin)
        stop = interrupt or Interrupt()
        started = time.perf_counter()
        package_preopens, env = self._packages()
        # A private /tmp (and /dev/null) per run, removed when it ends.
        with self._scratch(preopens, stop) as tmp:
            outcome = self._guest.run(
                argv, tmp.env_with(env), cwd, preopens=tmp.engine_preopens(preopens) + package_preopens,
                resolver=self._resolver, report=self.report, timeout_ms=limit_ms,
                memory_bytes=self._memory_bytes, fuel=self._fuel, max_instances=self._max_instances,
                max_cap_memory_bytes=self._max_cap_memory, interrupt=stop, stdin=data,
                stdout=self._stdout, stderr=self._stderr, max_output_bytes=self._max_output)
            return _result(outcome, time.perf_counter() - started)

    def _scratch(self, preopens: list[Preopen], stop: Stoppable) -> AbstractContextManager[_ScratchView]:
        if self._tmp_mb == 0:
            return nullcontext(_ScratchView(None))
        taken = [p.as_engine_tuple()[1] for p in preopens]
        return _ScratchView.around(scratch(self._tmp_mb, interrupt=stop, taken=taken, report=self.report))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A :class:`Session`: one instance whose ``__main__`` persists across calls."""
        s = Session(self)
        try:
            yield s
        finally:
            s.close()

    def __repr__(self) -> str:
        caps = ", ".join(sorted(self._host_caps)) or "none"
        return f"<pylon.Sandbox timeout={self.timeout} memory={self._memory_bytes // MIB} MiB host caps: {caps}>"


class Session:
    """One guest instance kept alive between calls, like a REPL.

    Each :meth:`run` executes in the same ``__main__``; time limit and fuel
    apply per call. A call that is stopped (timeout, fuel) or traps closes
    the session: its state is no longer trustworthy.
    """

    def __init__(self, sandbox: Sandbox):
        self._sandbox = sandbox
        sb = sandbox
        cwd = str(sb._preopens[0].path) if sb._preopens else "/"
        # One private /tmp for the session's life; its watcher stops whichever
        # call is running when the cap is passed.
        self._current = _CurrentCall()
        self._scratch_cm: AbstractContextManager[_ScratchView] | None = sb._scratch(sb._preopens, self._current)
        tmp = self._scratch_cm.__enter__()
        try:
            package_preopens, env = sb._packages()
            self._live = sb._guest.session(
                tmp.env_with(env), cwd, preopens=tmp.engine_preopens(sb._preopens) + package_preopens,
                resolver=sb._resolver, report=sb.report, memory_bytes=sb._memory_bytes, fuel=sb._fuel,
                max_instances=sb._max_instances, max_cap_memory_bytes=sb._max_cap_memory,
                stdout=sb._stdout, stderr=sb._stderr, max_output_bytes=sb._max_output)
        except BaseException:
            self._scratch_cm.__exit__(None, None, None)
            self._scratch_cm = None
            raise

    def run(self, code: str, *, timeout: float | None = None, interrupt: Interrupt | None = None) -> Result:
        """Runs ``code`` in the session's ``__main__``."""
        limit_ms = timeout_ms(timeout if timeout is not None else self._sandbox.timeout)
        stop = self._current.start(interrupt or Interrupt())
        started = time.perf_counter()
        try:
            outcome = self._live.run(code, timeout_ms=limit_ms, interrupt=stop)
        finally:
            self._current.finish()
        if outcome.stopped == "interrupt" and self._current.tripped:
            self.close()  # raises ScratchFull: the watcher stopped this call
        return _result(outcome, time.perf_counter() - started)

    @property
    def is_open(self) -> bool:
        """Whether the session takes more calls."""
        return self._live.is_open

    def close(self) -> None:
        """Frees the instance (its memory and caps) and its ``/tmp``.

        Raises:
            ScratchFull: its temporary folder passed the cap.
        """
        if self._scratch_cm is None:
            return
        self._live.close()
        cm, self._scratch_cm = self._scratch_cm, None
        error = GuestInterrupted("the session's temporary folder passed its cap") if self._current.tripped else None
        if error is None:
            cm.__exit__(None, None, None)
        elif not cm.__exit__(type(error), error, None):
            raise error

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CurrentCall:
    """A session's stop target for its scratch watcher: the running call's flag."""

    def __init__(self) -> None:
        self._stop: Interrupt | None = None
        self.tripped = False
        self._lock = threading.Lock()

    def start(self, stop: Interrupt) -> Interrupt:
        with self._lock:
            self._stop = stop
            if self.tripped:
                stop.set()
        return stop

    def finish(self) -> None:
        with self._lock:
            self._stop = None

    def set(self) -> None:
        with self._lock:
            self.tripped = True
            if self._stop is not None:
                self._stop.set()


class _ScratchView:
    """The parts of a run's :class:`~pylon.scratch.Scratch` a sandbox uses."""

    def __init__(self, tmp: Scratch | None):
        self.tmp = tmp

    @staticmethod
    @contextmanager
    def around(cm: AbstractContextManager[Scratch]) -> Iterator[_ScratchView]:
        with cm as tmp:
            yield _ScratchView(tmp)

    def env_with(self, env: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``env`` plus ``TMPDIR`` unless it sets one."""
        if self.tmp is None:
            return env
        return sorted({**self.tmp.env, **dict(env)}.items())

    def engine_preopens(self, preopens: list[Preopen]) -> list[tuple[str, str, bool]]:
        extra = self.tmp.preopens if self.tmp is not None else []
        return [p.as_engine_tuple() for p in [*preopens, *extra]]


def _report_to_stderr(message: str) -> None:
    sys.stderr.write(f"pylon: {message}\n")
    sys.stderr.flush()
