"""Runs a guest on a worker thread, so Ctrl-C and deadlines can stop it.

Python delivers signals to the main thread only, and only between bytecodes:
a main thread inside the engine would never see Ctrl-C. So the engine call
runs on a worker thread (it releases the GIL), and the calling thread waits
in short slices. On Ctrl-C it sets the run's :class:`~pylon.engine.Interrupt`;
the engine's epoch callback sees it within one tick (5 ms) of wasm and
unwinds the guest, and the waiting thread raises
:class:`~pylon.errors.GuestInterrupted`. Deadlines work the same way from
inside the engine.

What cannot be unwound is a guest blocked in a host call (a WASI sleep, a
read of stdin): epoch checks run only in wasm. Such a run is *abandoned*
after :data:`GRACE_S`: the stop is raised with ``abandoned=True`` and the
worker thread is left behind (``composectl`` then exits the process).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pylon.engine import Interrupt
from pylon.errors import GuestInterrupted, GuestTimeout

__all__ = ["GRACE_S", "run_stoppable"]

#: How long a stopped guest may take to unwind before it is abandoned.
GRACE_S = 0.1


def run_stoppable(call: Callable[[Interrupt], int], *, timeout_s: float | None,
                   interrupt: Interrupt | None = None) -> int:
    """Runs ``call(interrupt)`` on a worker thread; this thread turns Ctrl-C into a stop.

    The engine stops the guest itself at its deadline or when ``interrupt``
    is set, within one epoch tick of wasm. A guest blocked in a host call
    cannot be unwound: after :data:`GRACE_S` it is abandoned and the stop is
    raised with ``abandoned=True``.
    """
    interrupt = interrupt or Interrupt()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["status"] = call(interrupt)
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc

    worker = threading.Thread(target=work, name="pylon-guest", daemon=True)
    started = time.monotonic()
    worker.start()
    hard_deadline = None if timeout_s is None else started + timeout_s + GRACE_S
    try:
        while worker.is_alive():
            worker.join(0.05)  # short waits: Ctrl-C is delivered to this thread
            if hard_deadline is not None and worker.is_alive() and time.monotonic() > hard_deadline:
                interrupt.set()
                seconds = time.monotonic() - started
                raise GuestTimeout(f"the guest timed out after {seconds:.2f} s (blocked in a host call)",
                                   seconds=seconds, abandoned=True)
    except KeyboardInterrupt:
        interrupt.set()
        worker.join(GRACE_S)
        if worker.is_alive():
            seconds = time.monotonic() - started
            raise GuestInterrupted(f"the guest was interrupted after {seconds:.2f} s (blocked in a host call)",
                                   seconds=seconds, abandoned=True) from None
    if "error" in box:
        raise box["error"]
    return int(box["status"])
