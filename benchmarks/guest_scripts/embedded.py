"""Embedded caps in one run of the stock (fat) guest: crc32c embedded vs
dynlink, SQLite through pylon_guest.sqlite and through the guest's built-in
sqlite3, zstd through pylon_guest.zstd, and where the time goes (a no-op typed
call, packing vs the component call).

argv: OUT.json DATA REPEATS. DATA is the 16 MiB zstd / crc32c input (made by
the host, on a preopened folder). Timings are in seconds per sample
(``_embedded_work.samples``) or ns per call (``_timing.side_by_side``).
"""

import gc
import json
import sys

import _crc32c_dynlink_cap as crc32c_dynlink
import crc32c
from pylon_guest import sqlite, zstd

import _embedded_work as work
from _timing import side_by_side

out_path, data_path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(data_path, "rb") as f:
    data = f.read()
out = {"backends": {"crc32c": crc32c.backend(), "sqlite": sqlite.backend().name, "zstd": zstd.backend().name}}


def py_noop():
    return None


def _builtin_filled():
    import sqlite3  # noqa: PLC0415

    c = sqlite3.connect(":memory:")
    c.execute(work.SCHEMA)
    c.executemany(work.INSERT, work.make_rows())
    c.commit()
    return c


# -- crc32c: embedded vs dynlink, one run -------------------------------------
TINY = b"123456789"
assert crc32c.crc32c(TINY) == crc32c_dynlink.crc32c(TINY) == 0xE3069283
assert crc32c.crc32c(data) == crc32c_dynlink.crc32c(data)
out["crc32c_tiny_ns"] = side_by_side({
    "embedded": lambda: crc32c.crc32c(TINY),
    "dynlink": lambda: crc32c_dynlink.crc32c(TINY),
    # The same import through componentize-py's generic path (what
    # crc32c.crc32c was before its C binding, caps/crc32c/guest_binding.c).
    "embedded_raw": lambda: crc32c._wit.update(0, TINY),
    "py_call": py_noop,
}, target_s=0.15, repeats=7)
out["crc32c_16mib_ns"] = side_by_side({
    "embedded": lambda: crc32c.crc32c(data),
    "dynlink": lambda: crc32c_dynlink.crc32c(data),
}, target_s=0.3, repeats=5)

# -- SQLite: pylon_guest.sqlite and the guest's built-in sqlite3, interleaved ------
# The built-in is CPython's own _sqlite3 with the SQLite componentize-py
# compiles into libpython: the same workload, the same interpreter, one run.
import sqlite3 as builtin_sqlite3  # noqa: E402

out["sqlite"], out["sqlite_check"] = work.sqlite_suite(sqlite, repeats)
out["sqlite_builtin"], out["sqlite_builtin_check"] = work.sqlite_suite(builtin_sqlite3, repeats)
again, _ = work.sqlite_suite(sqlite, repeats)
for key, xs in again.items():  # both sides of the built-in run, pooled
    out["sqlite"][key] += xs
out["sqlite_builtin_version"] = builtin_sqlite3.sqlite_version

b = sqlite.backend()
diag = {}
if b.name == "embedded":
    import marshal

    import _sqlite_binding

    conn = sqlite.connect(":memory:")
    rows = work.make_rows()
    conn.execute(work.SCHEMA)
    conn.executemany(work.INSERT, rows)
    conn.commit()
    # executemany = each 32768-row chunk packed (by the binding's codec, in
    # C; marshal.dumps + Latin-1 decode without it) + one execute-many-packed
    # call per chunk (the copy into the cap, the parse, SQLite).
    diag["pack_100k"] = work.samples(lambda: marshal.dumps(rows, 2).decode("latin-1"), repeats)
    # What the binding's run_many does instead (its codec, into the text the
    # call carries; pack() also turns that text back into bytes).
    diag["pack_100k_binding"] = work.samples(lambda: _sqlite_binding.pack(rows), repeats)
    # Point select: the DB-API path, its pieces, and a no-op typed call.
    sel = conn._statement(work.SELECT)
    k = work.select_keys()[-1]
    packed = marshal.dumps((k,), 2).decode("latin-1")
    reply = sel.h.run_packed(packed, 64)
    assert marshal.loads(reply)[0] == [conn.execute(work.SELECT, (k,)).fetchone()]
    diag["select_ns"] = side_by_side({
        "full": lambda: conn.execute(work.SELECT, (k,)).fetchone(),
        "run": lambda: sel.run_params((k,), 64),  # pack + run-packed + unpack in one C call
        "raw": lambda: sel.run_packed(packed, 64),  # from C (caps/sqlite/guest_binding.c)
        "raw_generic": lambda: sel.h.run_packed(packed, 64),  # through componentize-py's generic path
        "pack": lambda: marshal.dumps((k,), 2).decode("latin-1"),
        "unpack": lambda: marshal.loads(reply),
        "noop_typed": lambda: conn._h.in_transaction(),
        "py_call": py_noop,
    }, target_s=0.15, repeats=7)
    # The scan: one step-packed call for the 100k rows vs marshal.loads.
    scan = conn._statement(work.SCAN)
    empty = marshal.dumps((), 2).decode("latin-1")

    def scan_raw():
        scan.h.run_packed(empty, 0)
        return scan.h.step_packed(1 << 30)

    diag["scan_raw_100k"] = work.samples(scan_raw, repeats)
    blob = scan_raw().encode("latin-1")
    diag["scan_bytes"] = len(blob)
    diag["scan_loads_100k"] = work.samples(lambda: marshal.loads(blob), repeats)
    del blob
    # The cyclic GC's share of the big loops (paused here only to measure
    # it: pylon_guest.sqlite never touches the collector).
    gc.disable()
    try:
        diag["fetchall_gc_off"] = work.samples(lambda: conn.execute(work.SCAN).fetchall(), repeats)
        builtin_conn = _builtin_filled()
        diag["fetchall_builtin_gc_off"] = work.samples(lambda: builtin_conn.execute(work.SCAN).fetchall(), repeats)
        builtin_conn.close()
    finally:
        gc.enable()
    conn.close()
out["sqlite_diag"] = diag

# -- zstd through pylon_guest.zstd -----------------------------------------------
out["zstd"], out["zstd_check"] = work.zstd_suite(lambda d, lv: zstd.compress(d, lv), zstd.decompress, data, repeats)

zdiag = {}
if zstd.backend().name == "embedded":
    zw = zstd._wit

    def copy_in():
        # Not a frame: the cap refuses it right after the 16 MiB are lowered in.
        try:
            zw.decompress(data, 1)
        except Exception:
            return
        raise AssertionError("decompress accepted a non-frame")

    zeros = bytes(len(data))
    zframe = zw.compress(zeros, work.ZSTD_LEVEL)
    zdiag["copy_in_16mib"] = work.samples(copy_in, repeats)
    # 16 MiB of zeros: RLE blocks, so decompression is a memset in the cap and
    # the time is allocating and lifting the 16 MiB back out.
    zdiag["zeros_decompress_16mib"] = work.samples(lambda: zw.decompress(zframe, 1 << 30), repeats)
    # The same through the guest binding (caps/zstd/guest_binding.c), which
    # has the host place the result in the bytes it returns.
    if zstd.backend().binding is not None:
        zdiag["zeros_decompress_binding_16mib"] = work.samples(lambda: zstd.decompress(zframe), repeats)
    zdiag["guest_memcpy_16mib"] = work.samples(lambda: bytearray(data), repeats)
    zdiag["compress_raw"] = work.samples(lambda: zw.compress(data, work.ZSTD_LEVEL), repeats)
    # The same cap over runtime dynlink (its generated proxy: CBOR payloads,
    # its own Store).
    dyn = zstd._Backend("dynlink").api
    frame = dyn.compress(data, work.ZSTD_LEVEL)
    assert dyn.decompress(frame, 1 << 30) == data
    zdiag["dynlink_compress"] = work.samples(lambda: dyn.compress(data, work.ZSTD_LEVEL), repeats)
    zdiag["dynlink_decompress"] = work.samples(lambda: dyn.decompress(frame, 1 << 30), repeats)
out["zstd_diag"] = zdiag

# The interpreter itself, against the same loop on the host.
out["py_loop_s"] = work.samples(lambda: sum(i * 2 for i in range(1_000_000)), repeats)

with open(out_path, "w") as f:
    json.dump(out, f)
