"""A rich progress bar for blob fetches, usable by anything that fetches.

Usage::

    with fetch_progress("crc32c") as progress:
        store.fetch(digest, sources, progress=progress)

The bar goes to stderr, appears only once bytes actually stream (a blob
already in the store shows nothing), and disappears when done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["fetch_progress"]


@contextmanager
def fetch_progress(description: str = "fetching") -> Iterator[Callable[[int, int | None], None]]:
    """Yields a ``progress(bytes_done, bytes_total_or_None)`` callback drawing a bar on stderr."""
    bar: Any = None
    task = None

    def update(done: int, total: int | None) -> None:
        nonlocal bar, task
        if bar is None:
            # Started (and rich.progress imported, ~15 ms) lazily: most fetches
            # find the blob stored and stream nothing.
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            bar = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True,
            )
            bar.start()
            task = bar.add_task(description, total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if bar is not None:
            bar.stop()
