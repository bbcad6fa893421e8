"""Standard output and error that lose nothing.

componentize-py's CPython starts with unbuffered stdio: ``sys.stdout`` is a
``TextIOWrapper`` straight over the raw ``FileIO`` of descriptor 1, with
``write_through``. A WASI host may take fewer bytes than one write offers
(wasmtime's stdio takes 64 KiB at a time); the raw ``FileIO`` says so, and
``TextIOWrapper`` ignores the count, so the rest of a large write was lost
without a word (one ``print`` of 1 MB gave 64 KiB). A ``BufferedWriter``
between them writes until every byte is out. Line buffering sends each line
as it ends, as on a terminal: output still streams line by line to a
caller's callback, and a run stopped mid-line loses at most that line (as
``python`` writing to a pipe loses its whole buffer). ``flush=True`` sends a
partial line at once.
"""

from __future__ import annotations

import io
import sys
from typing import Any


def _complete_writer(stream: Any) -> Any:
    """``stream`` rebuilt over a ``BufferedWriter``, if it writes through to a raw ``FileIO``."""
    if not isinstance(getattr(stream, "buffer", None), io.FileIO):
        return stream
    encoding, errors = stream.encoding, stream.errors
    stream.flush()
    # Detached, the old wrapper no longer closes the FileIO when it is freed.
    raw = stream.detach()
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding=encoding, errors=errors, newline="\n",
                            line_buffering=True)


def install() -> None:
    """Rebuilds ``sys.stdout`` and ``sys.stderr`` (and their ``__std*__``
    originals) so that no write is cut short."""
    sys.stdout = sys.__stdout__ = _complete_writer(sys.stdout)
    sys.stderr = sys.__stderr__ = _complete_writer(sys.stderr)
