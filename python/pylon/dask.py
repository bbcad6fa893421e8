"""Script runs spread over a Dask cluster (``pip install pylon[dask]``; ``docs/scale-out.md``).

::

    from distributed import Client
    from pylon.dask import RunSpec, run_many

    client = Client("tcp://scheduler:8786")
    specs = [RunSpec("import sys; print(sys.argv[1])", argv=[str(i)]) for i in range(100)]
    results = run_many(client, "plan.json", specs, timeout=10)   # list[pylon.Result], in order

What travels: the plan as its canonical JSON text and each run as a
:class:`RunSpec` (the script's *text*, argv, stdin, a time limit), never a
host path, since a worker may be another machine. What a worker does with a
run (:func:`_run_on_worker`):

1. Loads the plan text again (a worker treats it as untrusted input: it is
   validated like any plan file).
2. Takes its :class:`pylon.Sandbox` for that plan from a per-process cache,
   keyed by the plan's sha256, the sandbox options and the worker's own
   trust file (a changed trust file makes a new sandbox), or makes one:
   *the worker's* trust policy gates the guest and each cap, the blobs come
   from the plan's sources into *the worker's* blob store, and the guest is
   compiled (or loaded from the worker machine's compile cache) once per
   worker process.
3. Runs the script in a fresh instance and returns the :class:`pylon.Result`.

Failure semantics:

* What the guest does (a non-zero exit, an exception, its time limit) is a
  *result*, never a task failure, and is never retried.
* A host-side error on the worker (the worker does not trust the guest or
  cannot fetch it, a bad plan) fails that task; the client's
  :func:`distributed.Client.gather` raises it, with a note naming the
  worker. ``retries=`` re-runs such tasks (useful for a flaky blob source).
* A worker that dies mid-run (killed, out of memory, its machine gone) makes
  the scheduler run its tasks on another worker (up to
  ``distributed.scheduler.allowed-failures`` times). So execution is
  *at least once* (a retried run may have partly run before), results are
  *exactly once*: one :class:`~pylon.Result` per spec, in submission order.
  Guest runs have no side effects outside what they print (no writable
  folders are offered here), which is what makes re-running safe.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    import distributed
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("pylon.dask needs the 'distributed' package: pip install 'pylon[dask]'") from exc

from pylon import paths
from pylon.errors import PylonError
from pylon.plan import Plan
from pylon.runtime import load_plan
from pylon.sandbox import DEFAULT_MAX_OUTPUT, Result, Sandbox

__all__ = ["RunSpec", "SandboxOptions", "WorkerStats", "map_scripts", "run_many", "submit", "worker_stats"]

#: Sandboxes a worker process keeps (one per plan and options); the least
#: recently used goes first. Each holds a loaded guest (tens of MB mapped).
CACHE_SIZE = 8


@dataclass(frozen=True)
class RunSpec:
    """One script run: what :meth:`pylon.Sandbox.run` gets, as plain values.

    Attributes:
        script: the program's text, run as ``python -c`` would
            (``sys.argv[0] == "-c"``).
        argv: the script's arguments (``sys.argv[1:]``).
        stdin: all the guest can read (bytes or text).
        timeout: seconds this run may take; None: the sandbox's.
    """

    script: str
    argv: tuple[str, ...] = ()
    stdin: bytes = b""
    timeout: float | None = None

    def __init__(self, script: str, argv: Iterable[str] = (), stdin: bytes | str | None = None,
                 timeout: float | None = None):
        # A hand-written __init__ on a frozen dataclass: it accepts lists and
        # str for convenience and stores the immutable, picklable forms.
        if not isinstance(script, str):
            raise PylonError(f"RunSpec.script must be the script's text (str), not {type(script).__name__}")
        if isinstance(argv, str):
            raise PylonError("RunSpec.argv must be a sequence of strings, not one string")
        args = tuple(argv)
        for arg in args:
            if not isinstance(arg, str):
                raise PylonError(f"RunSpec.argv items must be str, not {type(arg).__name__}")
        data = b"" if stdin is None else stdin.encode() if isinstance(stdin, str) else bytes(stdin)
        if timeout is not None and not timeout > 0:
            raise PylonError(f"RunSpec.timeout must be a positive number of seconds, got {timeout!r}")
        object.__setattr__(self, "script", script)
        object.__setattr__(self, "argv", args)
        object.__setattr__(self, "stdin", data)
        object.__setattr__(self, "timeout", timeout)

    @classmethod
    def from_file(cls, path: str | Path, argv: Iterable[str] = (), stdin: bytes | str | None = None,
                  timeout: float | None = None) -> RunSpec:
        """A spec that runs the text of the script at ``path`` (read here, on the client)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PylonError(f"cannot read script {path}: {exc}") from exc
        return cls(text, argv, stdin, timeout)


@dataclass(frozen=True)
class SandboxOptions:
    """The :class:`pylon.Sandbox` arguments a worker makes its sandbox with.

    Only plain values: host folders and host caps are the worker machine's
    business, and writable folders would make a retried run unsafe.
    """

    timeout: float | None = None
    memory_mb: int | None = None
    fuel: int | None = None
    tmp_mb: int | None = None
    env: tuple[tuple[str, str], ...] = ()
    max_output_bytes: int = DEFAULT_MAX_OUTPUT

    @classmethod
    def make(cls, *, timeout: float | None = None, memory_mb: int | None = None, fuel: int | None = None,
             tmp_mb: int | None = None, env: Mapping[str, str] | None = None,
             max_output_bytes: int = DEFAULT_MAX_OUTPUT) -> SandboxOptions:
        """Options from keyword arguments as :class:`pylon.Sandbox` takes them."""
        pairs = tuple(sorted((str(k), str(v)) for k, v in (env or {}).items()))
        return cls(timeout, memory_mb, fuel, tmp_mb, pairs, max_output_bytes)


@dataclass
class WorkerStats:
    """What one worker process has done (:func:`worker_stats`).

    Attributes:
        runs: runs started (a run cut short by the worker's death is not counted anywhere).
        sandboxes_made: sandboxes made (each loads the guest once).
        cached: sandboxes held now.
        blob_dir: the worker's blob store.
        pid: the worker's process id.
    """

    runs: int = 0
    sandboxes_made: int = 0
    cached: int = 0
    blob_dir: str = ""
    pid: int = field(default_factory=os.getpid)


# -- the client side ----------------------------------------------------------


def _plan_text(plan: Plan | str | Path | None) -> str:
    """The plan as canonical JSON, checked here too (a bad plan fails before anything is sent)."""
    if isinstance(plan, Plan):
        return plan.dumps()
    loaded, _label = load_plan(Path(plan) if plan is not None else None)
    return loaded.dumps()


def submit(client: distributed.Client, plan: Plan | str | Path | None, specs: Iterable[RunSpec], *,
           retries: int = 0, timeout: float | None = None, memory_mb: int | None = None,
           fuel: int | None = None, tmp_mb: int | None = None, env: Mapping[str, str] | None = None,
           max_output_bytes: int = DEFAULT_MAX_OUTPUT) -> list[distributed.Future[Result]]:
    """Submits one task per spec; returns their futures, in the order of ``specs``.

    Args:
        client: a connected :class:`distributed.Client`.
        plan: a :class:`~pylon.plan.Plan`, a plan file, or None for this
            machine's default plan. Its sources must be reachable from the
            workers (``oci://``, ``http(s)://`` or a shared ``file://`` path).
        specs: the runs.
        retries: how many times a task that *raised* on the worker (a
            host-side error: fetch, trust, plan) is tried again. A guest's
            own failure is a result and is never retried; a dead worker's
            tasks are rescheduled by the scheduler regardless.
        timeout, memory_mb, fuel, tmp_mb, env, max_output_bytes: as for
            :class:`pylon.Sandbox`, the same for every run.

    Each future's result is a :class:`pylon.Result`.
    """
    text = _plan_text(plan)
    options = SandboxOptions.make(timeout=timeout, memory_mb=memory_mb, fuel=fuel, tmp_mb=tmp_mb, env=env,
                                  max_output_bytes=max_output_bytes)
    futures: list[distributed.Future[Result]] = []
    batch = uuid.uuid4().hex[:12]
    for i, spec in enumerate(specs):
        if not isinstance(spec, RunSpec):
            raise PylonError(f"specs[{i}] is a {type(spec).__name__}, not a pylon.dask.RunSpec")
        # Unique keys (not content hashes): two equal specs are two runs, since
        # a script may print the time or a random number.
        futures.append(client.submit(_run_on_worker, text, options, spec, key=f"pylon-run-{batch}-{i}",
                                     retries=retries, pure=False))
    return futures


def run_many(client: distributed.Client, plan: Plan | str | Path | None, specs: Iterable[RunSpec], *,
             retries: int = 0, timeout: float | None = None, memory_mb: int | None = None,
             fuel: int | None = None, tmp_mb: int | None = None, env: Mapping[str, str] | None = None,
             max_output_bytes: int = DEFAULT_MAX_OUTPUT) -> list[Result]:
    """Runs every spec on the cluster; returns their results in the order of ``specs``.

    Arguments as for :func:`submit`. Raises the first host-side error a
    worker raised (a :class:`~pylon.errors.PylonError` with a note naming
    the worker); the other runs are cancelled then.
    """
    futures = submit(client, plan, specs, retries=retries, timeout=timeout, memory_mb=memory_mb, fuel=fuel,
                     tmp_mb=tmp_mb, env=env, max_output_bytes=max_output_bytes)
    # (distributed leaves gather and cancel unannotated.)
    try:
        results: list[Result] = client.gather(futures)  # type: ignore[no-untyped-call]
    except BaseException:
        client.cancel(futures)  # type: ignore[no-untyped-call]
        raise
    return results


def map_scripts(client: distributed.Client, plan: Plan | str | Path | None, script: str,
                argvs: Iterable[Sequence[str]], *, stdins: Iterable[bytes | str] | None = None,
                **options: Any) -> list[Result]:
    """Runs one script once per argument list (with the matching stdin, if given); results in order."""
    arg_lists = [list(a) for a in argvs]
    inputs: list[bytes | str | None] = list(stdins) if stdins is not None else [None] * len(arg_lists)
    if len(inputs) != len(arg_lists):
        raise PylonError(f"map_scripts got {len(arg_lists)} argument lists but {len(inputs)} stdins")
    return run_many(client, plan, [RunSpec(script, a, s) for a, s in zip(arg_lists, inputs, strict=True)],
                    **options)


def worker_stats(client: distributed.Client) -> dict[str, WorkerStats]:
    """Each worker's :class:`WorkerStats`, by worker address."""
    stats: dict[str, WorkerStats] = client.run(_stats_on_worker)
    return stats


# -- the worker side ----------------------------------------------------------

_lock = threading.Lock()
_sandboxes: OrderedDict[tuple[Any, ...], Sandbox] = OrderedDict()
#: One lock per key being made, so two threads of a worker never load the same guest twice.
_making: dict[tuple[Any, ...], threading.Lock] = {}
_stats = WorkerStats()


def _trust_state() -> tuple[str, int, int, int]:
    """The worker's trust file and what identifies its current contents (cheap: one stat)."""
    path = paths.trust_file()
    try:
        st = path.stat()
    except OSError:
        return str(path), 0, 0, 0
    return str(path), st.st_ino, st.st_size, st.st_mtime_ns


def _sandbox_for(text: str, options: SandboxOptions) -> Sandbox:
    digest = hashlib.sha256(text.encode()).hexdigest()
    # The trust file's identity is in the key: a revocation on this worker
    # takes effect for the next run, not at the next worker restart.
    key = (digest, options, _trust_state(), str(paths.blob_root()))
    with _lock:
        found = _sandboxes.get(key)
        if found is not None:
            _sandboxes.move_to_end(key)
            return found
        making = _making.setdefault(key, threading.Lock())
    with making:
        with _lock:
            found = _sandboxes.get(key)
        if found is not None:
            return found
        # The worker's own checks: the plan is validated again, and the
        # Sandbox gates the guest (and later each cap) on this machine's
        # trust policy before anything is fetched or run.
        try:
            plan = Plan.loads(text, file="(plan sent by the client)")
            sandbox = Sandbox(plan, timeout=options.timeout, memory_mb=options.memory_mb, fuel=options.fuel,
                              tmp_mb=options.tmp_mb, env=dict(options.env),
                              max_output_bytes=options.max_output_bytes)
            with _lock:
                _sandboxes[key] = sandbox
                _stats.sandboxes_made += 1
                while len(_sandboxes) > CACHE_SIZE:
                    _sandboxes.popitem(last=False)
        finally:
            with _lock:
                _making.pop(key, None)
        return sandbox


def _run_on_worker(text: str, options: SandboxOptions, spec: RunSpec) -> Result:
    """The task: one run of ``spec`` in this worker's sandbox for the plan ``text``."""
    try:
        sandbox = _sandbox_for(text, options)
        with _lock:
            _stats.runs += 1
        return sandbox.run(spec.script, argv=spec.argv, stdin=spec.stdin, timeout=spec.timeout)
    except PylonError as exc:
        raise _portable(exc) from None


def _portable(exc: PylonError) -> PylonError:
    """``exc`` with a note naming this worker (every Pylon error pickles with its fields)."""
    try:
        worker = distributed.get_worker().address
    except ValueError:
        worker = "(not in a worker)"
    exc.add_note(f"raised on Dask worker {worker} (pid {os.getpid()})")
    return exc


def _stats_on_worker() -> WorkerStats:
    with _lock:
        return WorkerStats(**{**asdict(_stats), "cached": len(_sandboxes), "blob_dir": str(paths.blob_root()),
                              "pid": os.getpid()})
