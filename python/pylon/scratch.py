"""A run's private scratch folders: a capped ``/tmp`` and an empty ``/dev/null``.

Python code expects an ordinary machine: :mod:`tempfile` needs a writable
temporary folder and ``open(os.devnull)`` needs ``/dev/null``. WASI has
neither, so every run gets, in one fresh host folder of its own
(``tempfile.mkdtemp``, mode ``0700``, in ``$TMPDIR`` if set, else in
memory-backed ``/dev/shm`` where there is one, else the system's temporary
folder; never inside Pylon's state)::

    pylon-run-XXXX/
        tmp/        preopened read-write at /tmp, TMPDIR=/tmp in the guest
        dev/null    an empty file; dev/ is preopened read-only at /dev

The folder is made before the run, removed after it whatever happens (the
guest returns, fails, times out, is interrupted by Ctrl-C), and never shared:
no run sees another's files, and every run starts with an empty ``/tmp``.

``/dev/null`` is a plain empty file the guest cannot write: reading it gives
EOF forever. Writing to ``os.devnull`` is done inside the guest, which
discards the bytes before they reach the host
(``guest/python/pylon_guest/_devnull.py`` says why a host file cannot do that).

**The size cap.** wasmtime-wasi cannot limit the bytes written into a
preopened folder, so a watcher thread (one per process, for every live run's
folder: starting and joining a thread per run cost more than the rest of the
folder's upkeep) measures ``tmp/`` every :data:`POLL_S` seconds (less often
for a folder that takes long to measure: :data:`BACKOFF`)
and, once it holds more than the run's ``tmp-mb``, stops the run through its
:class:`~pylon.engine.Interrupt` (the engine unwinds the guest at its next
epoch tick, 5 ms); the run fails with :class:`ScratchFull` ("the run's
temporary folder passed N MiB", exit status 153, as a shell reports a process
past its file-size limit). What counts: a file its size or the disk blocks it
holds, whichever is more (a sparse file counts in full), and every file or
folder at least :data:`ENTRY_BYTES`, so a flood of empty files reaches the cap
too. A run that ends by itself is measured once more, so a burst written just
before the end is caught as well (a ``tmp/`` the guest left empty is simply
removed: ``rmdir`` fails on anything inside it).

The cap is enforced after the fact, so a guest overshoots it by what it writes
while the watcher notices and the engine stops it: one poll, one measurement
and one epoch tick, ~10 ms for a small folder, a few MiB at the page cache's
speed (``tests/test_guest_os.py`` prints it; docs/guest-os.md has figures).
CPython's C library hands a big buffer to WASI in small pieces, so even one
huge ``write()`` is stopped partway. A guest blocked in a host call (a sleep)
when the watcher trips cannot write meanwhile, and stops when the call
returns. Everything is deleted when the run ends.

Used by :func:`pylon.runtime.run`, the MicroPython profile
(:mod:`pylon.static_runner`) and the embedding API::

    with scratch.scratch(tmp_mb, interrupt=stop, taken=guest_paths) as tmp:
        preopens += tmp.preopens          # /tmp (rw) and /dev (ro)
        env = {**tmp.env, **env}          # TMPDIR, unless the caller sets it
        engine.run_guest(..., interrupt=stop)
    # leaving the block removes the folder; ScratchFull if the cap was passed
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pylon.errors import GuestInterrupted, GuestStopped, PylonError
from pylon.preopens import Preopen, PreopenError, plan_preopens

__all__ = ["BACKOFF", "ENTRY_BYTES", "MAX_TMP_MB", "POLL_S", "GuestPreopen", "Scratch", "ScratchFull",
           "check_tmp_mb", "measure", "scratch"]

MIB = 1 << 20
#: Largest tmp-mb a run accepts (64 GiB), as the plan schema says.
MAX_TMP_MB = 65_536
#: How often the watcher measures the temporary folder, in seconds (at least).
POLL_S = 0.002
#: The watcher waits this many times as long as its last measurement took, if
#: that is longer than POLL_S: it never takes more than a tenth of a core
#: (measuring an empty folder takes ~10 us, 500 files ~2 ms).
BACKOFF = 9
#: What each file or folder counts at least: one block of a typical file system.
ENTRY_BYTES = 4096
#: Where the guest may see its temporary folder: the first the run does not
#: already show (a script that lives in /tmp keeps its folder at /tmp).
TMP_GUEST_PATHS = ("/tmp", "/var/tmp")
#: Where the guest sees the folder holding ``null``.
DEV_GUEST_PATH = "/dev"


class Stoppable(Protocol):
    """What the watcher needs of a run: :class:`pylon.engine.Interrupt` is one."""

    def set(self) -> None: ...


class ScratchFull(GuestStopped):
    """The run's temporary folder passed its size cap (``tmp-mb``), so the run was stopped.

    Attributes:
        limit_bytes: the cap.
        held_bytes: what the folder held when the guest had stopped, measured
            just before it was removed (the overshoot is ``held - limit``).
    """

    #: 128 + SIGXFSZ: what a shell shows for a process stopped at its file-size limit.
    exit_status = 153

    def __init__(self, message: str, *, limit_bytes: int, held_bytes: int,
                 seconds: float | None = None, abandoned: bool = False):
        super().__init__(message, seconds=seconds, abandoned=abandoned)
        self.limit_bytes = limit_bytes
        self.held_bytes = held_bytes


@dataclass(frozen=True)
class GuestPreopen(Preopen):
    """A :class:`~pylon.preopens.Preopen` the guest sees at ``guest_path`` instead of its host path."""

    guest_path: str = "/tmp"

    def as_engine_tuple(self) -> tuple[str, str, bool]:
        return (str(self.path), self.guest_path, not self.writable)


def check_tmp_mb(tmp_mb: object) -> int:
    """``tmp_mb`` if it is a whole number of MiB in [1, :data:`MAX_TMP_MB`].

    Raises:
        PylonError: it is not.
    """
    if isinstance(tmp_mb, bool) or not isinstance(tmp_mb, int) or not 1 <= tmp_mb <= MAX_TMP_MB:
        raise PylonError(f"the temporary folder's size limit must be a whole number of MiB from 1 to "
                         f"{MAX_TMP_MB}, got {tmp_mb!r}")
    return tmp_mb


def measure(folder: Path | str, stop_above: int | None = None) -> int:
    """Bytes ``folder`` holds, as the cap counts them (see the module's docstring).

    Symbolic links are counted, never followed. Entries that vanish while
    the walk runs are skipped. With ``stop_above``, the walk ends as soon as
    the total passes it, so one measurement costs at most about
    ``stop_above / ENTRY_BYTES`` entries however many the guest made.
    """
    total = 0
    todo = [os.fspath(folder)]
    while todo:
        try:
            with os.scandir(todo.pop()) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        continue  # removed since it was listed
                    total += max(st.st_size, st.st_blocks * 512, ENTRY_BYTES)
                    if is_dir:
                        todo.append(entry.path)
                    if stop_above is not None and total > stop_above:
                        return total
        except OSError:
            continue  # a folder removed while we walked
    return total


def _mib(n: int) -> str:
    return f"{n / MIB:.1f}".removesuffix(".0")


class Scratch:
    """One run's scratch folders; made by :func:`scratch`, which also watches and removes them.

    Attributes:
        root: the host folder holding everything below (removed after the run).
        preopen: the temporary folder, writable, at :attr:`guest_tmp` in the guest.
        devnull: the read-only folder holding an empty ``null``, at ``/dev``
            (None when the run already shows the guest a ``/dev`` of its own).
        env: what to add to the guest's environment (``TMPDIR``).
        limit_bytes: the temporary folder's cap.
    """

    def __init__(self, root: Path, tmp_mb: int, guest_tmp: str, with_dev: bool):
        self.root = root
        self.limit_bytes = tmp_mb * MIB
        self.guest_tmp = guest_tmp
        # os calls on str paths: pathlib's parsing was a third of a fresh
        # embedded run's folder upkeep.
        base = os.fspath(root)
        tmp = os.path.join(base, "tmp")
        os.mkdir(tmp, 0o700)
        self.preopen = GuestPreopen(Path(tmp), writable=True, guest_path=guest_tmp)
        self.devnull: GuestPreopen | None = None
        if with_dev:
            dev = os.path.join(base, "dev")
            os.mkdir(dev, 0o700)
            # Read-only on the host too: even a bug in the read-only preopen
            # could not let the guest put bytes in it.
            os.close(os.open(os.path.join(dev, "null"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400))
            self.devnull = GuestPreopen(Path(dev), writable=False, guest_path=DEV_GUEST_PATH)
        self.env = {"TMPDIR": guest_tmp}
        self._over: int | None = None
        self._interrupt: Stoppable | None = None
        self._removed = False
        #: Held while the watcher measures this folder: stop_watching waits on it.
        self._measuring = threading.Lock()

    @property
    def preopens(self) -> list[Preopen]:
        """What to add to the run's preopens."""
        found: list[Preopen] = [self.preopen]
        if self.devnull is not None:
            found.append(self.devnull)
        return found

    @property
    def tripped(self) -> bool:
        """Whether the watcher saw the folder past its cap (and stopped the run)."""
        return self._over is not None

    def usage(self, stop_above: int | None = None) -> int:
        """What the temporary folder holds now (see :func:`measure`)."""
        return measure(self.preopen.path, stop_above)

    def watch(self, interrupt: Stoppable) -> None:
        """Has the watcher measure this folder: past the cap it calls ``interrupt.set()`` once."""
        if self._interrupt is not None:
            raise RuntimeError("this scratch folder is already watched")
        self._interrupt = interrupt
        _WATCHER.add(self)

    def stop_watching(self) -> None:
        """Ends the watching; waits for a measurement under way (milliseconds), so
        the watcher neither reads the folder nor stops the run after this returns."""
        if sys.is_finalizing():
            # The interpreter is exiting (a session left open is closed as its
            # objects are collected): the watcher is a daemon thread, which
            # Python ends where it next takes the GIL, possibly holding one of
            # the locks below. Nothing is left to stop.
            self._interrupt = None
            return
        _WATCHER.discard(self)
        with self._measuring:
            self._interrupt = None

    def _measure_once(self) -> float | None:
        """One measurement by the watcher: seconds it took, or None once done with
        (the cap was passed and the run told to stop, or no longer watched)."""
        with self._measuring:
            interrupt = self._interrupt
            if interrupt is None:
                return None
            started = time.monotonic()
            used = self.usage(stop_above=self.limit_bytes)
            if used > self.limit_bytes:
                self._over = used
                interrupt.set()
                self._interrupt = None
                return None
            return time.monotonic() - started

    def full_error(self, *, seconds: float | None = None, abandoned: bool = False) -> ScratchFull:
        """The error that says this run's temporary folder passed its cap."""
        held = self.usage()
        when = f" after {seconds:.2f} s" if seconds is not None else ""
        return ScratchFull(
            f"the run's temporary folder passed {_mib(self.limit_bytes)} MiB (its tmp-mb limit; it held "
            f"{_mib(held)} MiB when the guest stopped), so the guest was stopped{when}. Raise the "
            "limit with --tmp-mb or the plan's guest.limits.tmp-mb, or write less to the temporary folder",
            limit_bytes=self.limit_bytes, held_bytes=held, seconds=seconds, abandoned=abandoned)

    def check(self) -> None:
        """Raises :class:`ScratchFull` if the folder is, or was seen, past its cap."""
        if self.tripped or self.usage(stop_above=self.limit_bytes) > self.limit_bytes:
            raise self.full_error()

    def remove(self, report: Callable[[str], None]) -> None:
        """Deletes :attr:`root` and everything in it; tells ``report`` if it cannot.

        A Ctrl-C during the removal does not leave the folder behind: the
        removal finishes, then the interrupt goes on.
        """
        if self._removed or self._remove_untouched():
            return
        interrupted: BaseException | None = None
        # A guest abandoned in a host call may still be creating files while
        # the tree is removed; a few passes outlast it (once the folder is
        # gone nothing can be created in it).
        for _ in range(5):
            try:
                shutil.rmtree(self.root, ignore_errors=True)
            except KeyboardInterrupt as exc:
                interrupted = exc
                continue
            if not os.path.lexists(self.root):
                break
        else:
            report(f"could not remove the run's temporary folder {self.root}; delete it by hand")
        if interrupted is not None:
            raise interrupted

    def _remove_untouched(self) -> bool:
        """Removes the folder as it was made, if the guest left ``tmp/`` empty
        (most runs): four calls instead of a tree walk. False, with nothing
        or part removed, when anything else is there: the caller walks it.
        ``rmdir`` removes only empty folders and never follows a link."""
        try:
            os.rmdir(self.preopen.path)
            if self.devnull is not None:
                os.unlink(os.path.join(self.devnull.path, "null"))
                os.rmdir(self.devnull.path)
            os.rmdir(self.root)
        except OSError:
            return False
        self._removed = True
        return True


class _Watcher:
    """The thread that measures every watched :class:`Scratch` of this process.

    Each folder is measured every :data:`POLL_S` seconds, or :data:`BACKOFF`
    times as long as its last measurement took if that is longer. The thread
    starts with the first folder and then waits, idle, for the next.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        #: Watched folders and when each is due to be measured (time.monotonic()).
        self._due: dict[Scratch, float] = {}
        self._thread: threading.Thread | None = None

    def add(self, scratch: Scratch) -> None:
        with self._lock:
            self._due[scratch] = time.monotonic() + POLL_S
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="pylon-scratch-watch", daemon=True)
                self._thread.start()
            self._lock.notify()

    def discard(self, scratch: Scratch) -> None:
        with self._lock:
            self._due.pop(scratch, None)

    def _next(self) -> list[Scratch]:
        """Waits until a folder is due; returns those that are."""
        with self._lock:
            while True:
                now = time.monotonic()
                due = [s for s, when in self._due.items() if when <= now]
                if due:
                    return due
                self._lock.wait(min(self._due.values(), default=now + 60.0) - now)

    def _loop(self) -> None:
        while True:
            for scratch in self._next():
                took = scratch._measure_once()
                with self._lock:
                    if took is None:
                        self._due.pop(scratch, None)
                    elif scratch in self._due:
                        self._due[scratch] = time.monotonic() + max(POLL_S, BACKOFF * took)


_WATCHER = _Watcher()


def _fresh_watcher_after_fork() -> None:
    """In a forked child: a watcher of its own, and unlocked folders (the
    parent's watcher thread is not in the child, but its locks may have been
    copied held)."""
    global _WATCHER
    for scratch in list(_WATCHER._due):
        scratch._measuring = threading.Lock()
        scratch._interrupt = None
    _WATCHER = _Watcher()


os.register_at_fork(after_in_child=_fresh_watcher_after_fork)


def _report_to_stderr(message: str) -> None:
    sys.stderr.write(f"pylon: {message}\n")
    sys.stderr.flush()


#: Memory-backed, where a system has it.
SHM = "/dev/shm"
#: Smaller than this (a container's 64 MiB default), /dev/shm would fill before a run's cap.
SHM_MIN_BYTES = 1 << 30


def _scratch_parent() -> str:
    """Where run folders go: ``$TMPDIR`` when it is set (the user chose), else
    ``/dev/shm`` when usable, else the system's temporary folder.

    Why memory first: making and removing a run's folder on a disk file
    system waits on its journal (1.5 ms a run measured here, more than the
    rest of a fresh embedded run), on tmpfs it takes microseconds; what a
    run may put there is bounded by its ``tmp-mb`` anyway. A small
    ``/dev/shm`` (containers often give 64 MiB) is passed over.
    """
    if os.environ.get("TMPDIR"):
        return tempfile.gettempdir()
    try:
        fs = os.statvfs(SHM)
    except OSError:
        return tempfile.gettempdir()
    if fs.f_frsize * fs.f_blocks >= SHM_MIN_BYTES and os.access(SHM, os.W_OK | os.X_OK):
        return SHM
    return tempfile.gettempdir()


def _make_root() -> Path:
    """A fresh ``0700`` folder for one run (see :func:`_scratch_parent`), checked against Pylon's state."""
    parent = _scratch_parent()
    try:
        # Resolved once per parent: a folder mkdtemp just made in a resolved
        # parent is resolved too (Path.resolve per run cost ~30 us).
        resolved = _resolved_parents.get(parent)
        if resolved is None:
            resolved = _resolved_parents[parent] = os.path.realpath(parent)
        root = Path(tempfile.mkdtemp(prefix="pylon-run-", dir=resolved))
    except OSError as exc:
        raise PylonError(f"cannot make the run's temporary folder in {parent}: "
                         f"{exc.strerror or exc}") from exc
    try:
        # The same rules as any folder the guest sees: never Pylon's state, never host code.
        _check_fresh_folder(root)
    except PreopenError as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise PreopenError(f"the host's temporary folder ({parent}) cannot hold the "
                           f"guest's: {exc} Point TMPDIR somewhere else.") from None
    return root


#: Each temporary parent, resolved (symbolic links followed).
_resolved_parents: dict[str, str] = {}
#: Temporary parents already checked, with the environment that placed Pylon's state.
_checked_parents: set[tuple[Path, tuple[str | None, ...]]] = set()
#: What decides where Pylon's state and the host's code live (python/pylon/paths.py).
_STATE_VARS = ("PYLON_CACHE_DIR", "PYLON_BLOB_DIR", "PYLON_CONFIG_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
               "HOME", "PYTHONUSERBASE")


def _check_fresh_folder(root: Path) -> None:
    """Refuses ``root`` if the guest may not write it (see :func:`pylon.preopens.plan_preopens`).

    A folder just made cannot be or contain Pylon's state, so only its parent
    decides; the full check (which resolves every state and code root, about
    1.5 ms) runs once per parent and environment, not once per run.
    """
    key = (root.parent, tuple(os.environ.get(var) for var in _STATE_VARS))
    if key in _checked_parents:
        return
    plan_preopens(None, [Preopen(root, writable=True)])
    _checked_parents.add(key)


def _guest_tmp_path(taken: set[str]) -> str:
    for candidate in TMP_GUEST_PATHS:
        if candidate not in taken:
            return candidate
    raise PreopenError(f"the run already shows the guest folders at {' and '.join(TMP_GUEST_PATHS)}, so "
                       "its private temporary folder has nowhere to go; give one of them a folder "
                       "elsewhere")


@contextlib.contextmanager
def scratch(tmp_mb: int, *, interrupt: Stoppable | None = None, taken: Iterable[str] = (),
            report: Callable[[str], None] = _report_to_stderr) -> Iterator[Scratch]:
    """Makes a run's scratch folders, watches the cap, removes them on the way out.

    Args:
        tmp_mb: the temporary folder's size cap, MiB.
        interrupt: the run's stop flag; past the cap the watcher sets it.
            ``None``: no watcher (the cap is still checked when the block ends).
        taken: guest paths the run's other preopens already use. The
            temporary folder takes the first free one of ``/tmp``,
            ``/var/tmp``; ``/dev`` is left out if taken.
        report: hears about a folder that could not be removed.

    Raises:
        ScratchFull: the run was stopped by the watcher (the block raised
            ``GuestInterrupted`` after the watcher set ``interrupt``), or the
            block ended normally with the folder past its cap.
        PreopenError: the host's temporary folder is inside Pylon's state,
            or neither ``/tmp`` nor ``/var/tmp`` is free in the guest.
        PylonError: ``tmp_mb`` is out of range, or the folder cannot be made.
    """
    check_tmp_mb(tmp_mb)
    taken = {str(p) for p in taken}
    guest_tmp = _guest_tmp_path(taken)
    root = _make_root()
    try:
        tmp = Scratch(root, tmp_mb, guest_tmp, with_dev=DEV_GUEST_PATH not in taken)
    except BaseException as exc:
        shutil.rmtree(root, ignore_errors=True)
        if isinstance(exc, OSError):
            raise PylonError(f"cannot make the run's temporary folder: {exc.strerror or exc}") from exc
        raise
    try:
        if interrupt is not None:
            tmp.watch(interrupt)
        try:
            yield tmp
        except GuestInterrupted as exc:
            tmp.stop_watching()
            if tmp.tripped:
                raise tmp.full_error(seconds=exc.seconds, abandoned=exc.abandoned) from None
            raise
        tmp.stop_watching()
        # A tmp/ the guest left empty holds nothing to measure: removing it
        # as made (rmdir fails on anything left inside) is the check.
        if tmp.tripped or not tmp._remove_untouched():
            tmp.check()
    finally:
        # A watcher never outlives its folder, and the folder never outlives the run.
        tmp.stop_watching()
        tmp.remove(report)
