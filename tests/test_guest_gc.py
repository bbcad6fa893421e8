"""The guest's cyclic garbage collector and the shared heap image.

Every instance of pylon.wasm starts from the heap componentize-py snapshotted
at build time (the whole standard library pre-imported), mapped copy-on-write
from one image. ``guest/app.py`` ends with ``gc.freeze()``: the snapshot's
objects sit in the permanent generation, so a collection at run time neither
walks them nor writes their headers. Without it one ``gc.collect()`` in a
session copied ~23 MiB of the shared image into that session and took
50-70 ms; with it, a few MiB and about a millisecond (docs/benchmarks.md,
"RSS per session").
"""

from __future__ import annotations

import pytest

import pylon


@pytest.fixture
def sb(home):
    return pylon.Sandbox(timeout=60)


def _rss_anon_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


def test_the_snapshot_heap_is_frozen_and_new_garbage_is_still_collected(sb: pylon.Sandbox) -> None:
    r = sb.run(
        "import gc, weakref\n"
        "print(gc.get_freeze_count() > 10_000, gc.isenabled())\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.other, b.other = b, a\n"
        "alive = weakref.ref(a); del a, b\n"
        "gc.collect()\n"
        "print(alive() is None)\n")
    assert (r.exit_code, r.stdout, r.stderr) == (0, b"True True\nTrue\n", b"")


def test_a_collection_does_not_copy_the_shared_heap_into_a_session(sb: pylon.Sandbox) -> None:
    """What a live session holds privately after a full collection: ~4 MiB
    frozen, ~23 MiB before (every tracked object's header written)."""
    sessions = [pylon.Session(sb) for _ in range(2)]
    for s in sessions:  # warm: the instances, the pool's slots, this process's own allocations
        s.run("import gc; gc.collect()")
    before = _rss_anon_kib()
    count = 6
    for _ in range(count):
        s = pylon.Session(sb)
        assert s.run("import gc; gc.collect()").exit_code == 0
        sessions.append(s)
    per_session_mib = (_rss_anon_kib() - before) / count / 1024
    for s in sessions:
        s.close()
    assert per_session_mib < 12, f"{per_session_mib:.1f} MiB of private memory per session"
