"""Embedded caps in one run of the stock (fat) guest: crc32c embedded vs
dynlink, SQLite and zstd through pylon_guest.sqlite / pylon_guest.zstd, and
where the time goes (a no-op typed call, value conversion vs the component
call).

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


# -- crc32c: embedded vs dynlink, one run -------------------------------------
TINY = b"123456789"
assert crc32c.crc32c(TINY) == crc32c_dynlink.crc32c(TINY) == 0xE3069283
assert crc32c.crc32c(data) == crc32c_dynlink.crc32c(data)
out["crc32c_tiny_ns"] = side_by_side({
    "embedded": lambda: crc32c.crc32c(TINY),
    "dynlink": lambda: crc32c_dynlink.crc32c(TINY),
    "embedded_raw": lambda: crc32c._wit.update(0, TINY),  # the typed import alone
    "py_call": py_noop,
}, target_s=0.15, repeats=7)
out["crc32c_16mib_ns"] = side_by_side({
    "embedded": lambda: crc32c.crc32c(data),
    "dynlink": lambda: crc32c_dynlink.crc32c(data),
}, target_s=0.3, repeats=5)

# -- SQLite through pylon_guest.sqlite, then where the time goes -----------------
out["sqlite"], out["sqlite_check"] = work.sqlite_suite(sqlite, repeats)

b = sqlite.backend()
diag = {}
if b.name == "embedded":
    w = sqlite._wit
    Int = w.Value_Integer
    conn = sqlite.connect(":memory:")
    wconn = conn._h  # the typed connection resource
    rows = work.make_rows()

    def fresh_table():
        conn.execute("drop table if exists t")
        conn.execute(work.SCHEMA)
        conn.commit()

    # executemany = Python-side conversion of every value to the WIT variant +
    # one execute-many call per 4096 rows (lowering, then SQLite in the cap).
    diag["convert_100k"] = work.samples(lambda: [b.values(p) for p in rows], repeats)
    chunks = [[b.values(p) for p in rows[i:i + 4096]] for i in range(0, len(rows), 4096)]
    fresh_table()
    ins = wconn.prepare(work.INSERT)  # re-prepared by SQLite after each fresh_table()

    def raw_insert():
        for chunk in chunks:
            ins.execute_many(chunk)
        wconn.commit()

    diag["insert_raw_100k"] = work.samples(raw_insert, repeats, fresh_table)
    ins.finalize()
    # Point select: the DB-API path, the backend without cursor, the raw call.
    sel = conn._statement(work.SELECT)
    conn._unuse(sel)
    k = work.select_keys()[-1]
    assert b.run(sel.h, b.values((k,)), 64)[0] == [conn.execute(work.SELECT, (k,)).fetchone()]
    diag["select_ns"] = side_by_side({
        "full": lambda: conn.execute(work.SELECT, (k,)).fetchone(),
        "backend": lambda: b.run(sel.h, b.values((k,)), 64),
        "raw": lambda: sel.h.run([Int(k)], 64),
        "noop_typed": lambda: wconn.in_transaction(),
        "py_call": py_noop,
    }, target_s=0.15, repeats=7)
    # The scan: lifting 100k rows of WIT values vs turning them into tuples.
    scan = conn._statement(work.SCAN)
    conn._unuse(scan)
    diag["scan_raw_100k"] = work.samples(lambda: scan.h.run([], 200_000), repeats)
    lifted = scan.h.run([], 200_000).rows
    diag["scan_rows_100k"] = work.samples(lambda: b.rows(lifted), repeats)
    del lifted
    # Creating a Python object in the guest, which conversion and lifting do
    # once per value; and the cyclic GC's share of the big loops (paused here
    # only to measure it: pylon_guest.sqlite never touches the collector).
    diag["alloc_ns"] = side_by_side({"value_integer": lambda: Int(1), "py_call": py_noop},
                                    target_s=0.15, repeats=7)

    def insert():
        conn.executemany(work.INSERT, rows)
        conn.commit()

    gc.disable()
    try:
        diag["insert_gc_off"] = work.samples(insert, repeats, fresh_table)
        diag["fetchall_gc_off"] = work.samples(lambda: conn.execute(work.SCAN).fetchall(), repeats)
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
    zdiag["guest_memcpy_16mib"] = work.samples(lambda: bytearray(data), repeats)
    zdiag["compress_raw"] = work.samples(lambda: zw.compress(data, work.ZSTD_LEVEL), repeats)
    # The same cap over runtime dynlink (CBOR payloads, its own Store).
    dyn = zstd._Dynlink()
    frame = dyn.compress(data, work.ZSTD_LEVEL)
    assert dyn.decompress(frame, 1 << 30) == data
    zdiag["dynlink_compress"] = work.samples(lambda: dyn.compress(data, work.ZSTD_LEVEL), repeats)
    zdiag["dynlink_decompress"] = work.samples(lambda: dyn.decompress(frame, 1 << 30), repeats)
out["zstd_diag"] = zdiag

# The interpreter itself, against the same loop on the host.
out["py_loop_s"] = work.samples(lambda: sum(i * 2 for i in range(1_000_000)), repeats)

with open(out_path, "w") as f:
    json.dump(out, f)
