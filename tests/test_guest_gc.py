"""The guest's cyclic garbage collector and the shared heap image.

Every instance of pylon.wasm starts from the heap componentize-py snapshotted
at build time (the whole standard library pre-imported), mapped copy-on-write
from one image. ``guest/app.py`` ends with ``gc.freeze()``: the snapshot's
objects sit in the permanent generation, so a collection at run time neither
walks them nor writes their headers. Without it one ``gc.collect()`` in a
session copied ~23 MiB of the shared image into that session and took
50-70 ms; with it, a few MiB and about a millisecond (docs/benchmarks.md,
"RSS per session").

The image's pages a session only reads are shared, but each first read used
to map the 64 KiB around it (Linux's fault-around): ~6 MiB of every
session's resident set. The engine's pool turns that off for the image
(engine/patches/wasmtime-48.0.8-uffd-no-fault-around.patch).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

import pylon
from conftest import Pylon


@pytest.fixture
def sb(home):
    return pylon.Sandbox(timeout=60)


def _rss_anon_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


def _userfaultfd_available() -> bool:
    """What the engine's pool needs to turn fault-around off (the wasmtime
    patch engine/patches/wasmtime-48.0.8-uffd-no-fault-around.patch):
    userfaultfd(UFFD_USER_MODE_ONLY), which a seccomp policy may refuse."""
    sys_userfaultfd = {"x86_64": 323, "aarch64": 282}.get(os.uname().machine)
    if sys_userfaultfd is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(sys_userfaultfd, os.O_CLOEXEC | 1)
    if fd < 0:
        return False
    os.close(fd)
    return True


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


# In a process of its own: a slot the pool kept warm from an earlier session
# still has the image pages that session mapped, so only fresh slots show it.
_SHARED_IMAGE_PER_SESSION = """
import pylon
def shmem_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssShmem:"):
            return int(line.split()[1])
sb = pylon.Sandbox(timeout=60)
sessions = [pylon.Session(sb) for _ in range(2)]
for s in sessions:
    s.run("x = 1")
before, count = shmem_kib(), 8
for _ in range(count):
    s = pylon.Session(sb)
    assert s.run("x = 1").exit_code == 0
    sessions.append(s)
print((shmem_kib() - before) / count / 1024)
"""


@pytest.mark.skipif(not _userfaultfd_available(), reason="userfaultfd is unavailable here (kernel or seccomp)")
def test_a_session_maps_only_the_image_pages_it_reads(home: Pylon) -> None:
    """The shared heap image's pages a new session has mapped: what it read,
    ~0.5 MiB. With Linux's fault-around (each first read mapping the 64 KiB
    around it) the same session mapped ~6 MiB of the image."""
    result = subprocess.run([sys.executable, "-c", _SHARED_IMAGE_PER_SESSION], capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    per_session_mib = float(result.stdout)
    assert per_session_mib < 2, f"{per_session_mib:.2f} MiB of the shared image mapped per session"
