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

import math
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pylon.engine import Interrupt
from pylon.errors import GuestInterrupted, GuestTimeout, PylonError

__all__ = ["GRACE_S", "MAX_TIMEOUT_S", "run_stoppable", "timeout_ms"]

T = TypeVar("T")

#: How long a stopped guest may take to unwind before it is abandoned.
GRACE_S = 0.05
#: Longest time limit a run accepts: a day, as a plan's timeout-ms allows.
MAX_TIMEOUT_S = 86_400


def timeout_ms(timeout_s: float | None) -> int | None:
    """A time limit in seconds as the engine takes it (whole ms, at least 1).

    Raises:
        PylonError: not a number of seconds in (0, a day].
    """
    if timeout_s is None:
        return None
    if not (math.isfinite(timeout_s) and 0 < timeout_s <= MAX_TIMEOUT_S):
        raise PylonError(f"the time limit must be more than 0 and at most {MAX_TIMEOUT_S} s "
                         f"(a day), got {timeout_s}")
    return max(1, round(timeout_s * 1000))


def run_stoppable(call: Callable[[Interrupt], T], *, timeout_s: float | None,
                  interrupt: Interrupt | None = None) -> T:
    """Runs ``call(interrupt)`` on a worker thread; this thread turns Ctrl-C into a stop.

    The engine stops the guest itself at its deadline or when ``interrupt``
    is set, within one epoch tick of wasm. A guest blocked in a host call
    cannot be unwound: after :data:`GRACE_S` it is abandoned and the stop is
    raised with ``abandoned=True``.
    """
    interrupt = interrupt or Interrupt()
    box: dict[str, Any] = {}
    # An Event, not Thread.join()/is_alive(): on Python 3.11 a join interrupted
    # by Ctrl-C can leave the thread looking stopped while it still runs.
    done = threading.Event()

    def work() -> None:
        try:
            box["result"] = call(interrupt)
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=work, name="pylon-guest", daemon=True)
    worker.start()
    try:
        # Short waits: Ctrl-C is delivered to this thread between them.
        while not done.wait(0.05):
            running = interrupt.running_for()
            if timeout_s is not None and running is not None and running > timeout_s + GRACE_S:
                interrupt.set()
                raise GuestTimeout(f"the guest timed out after {running:.2f} s (blocked in a host call)",
                                   seconds=running, abandoned=True)
    except KeyboardInterrupt:
        interrupt.set()
        if not done.wait(GRACE_S):
            running = interrupt.running_for()
            why = ("while its code was loading" if running is None
                   else f"after {running:.2f} s (blocked in a host call)")
            raise GuestInterrupted(f"the guest was interrupted {why}", seconds=running,
                                   abandoned=True) from None
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result
