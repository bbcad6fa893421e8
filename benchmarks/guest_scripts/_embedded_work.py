"""The workloads of bench_embedded, shared word for word by the guest script
(``embedded.py``: pylon_guest.sqlite, pylon_guest.zstd) and the host side
(CPython's sqlite3, the zstandard package), so both run the same Python loop.

Every timing is a list of samples in seconds (``time.perf_counter``), one per
repeat; the benchmark takes medians.
"""

import time

#: Rows inserted with executemany and scanned by the aggregate.
ROWS = 100_000
#: Point selects per sample.
SELECTS = 5_000
SCHEMA = "create table t (id integer primary key, name text not null, value real not null)"
INSERT = "insert into t (id, name, value) values (?, ?, ?)"
SELECT = "select name, value from t where id = ?"
AGGREGATE = "select count(*), sum(value), avg(length(name)), max(name) from t"
SCAN = "select id, name, value from t"
ZSTD_LEVEL = 3


def make_rows(n=ROWS):
    """n (int, str, float) rows; deterministic."""
    return [(i, f"name-{i % 1000:04d}-{(i * 7919) % 100003}", i * 0.25) for i in range(n)]


def select_keys(n=SELECTS):
    return [(k * 7919) % ROWS for k in range(n)]


def samples(fn, repeats, setup=None):
    out = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def sqlite_suite(sqlite, repeats):
    """insert (executemany + commit), point selects, aggregate, fetchall scan,
    on ":memory:" with ``sqlite`` a DB-API module (sqlite3 or pylon_guest.sqlite).
    Returns (timings, results to compare across sides)."""
    conn = sqlite.connect(":memory:")
    rows = make_rows()
    keys = select_keys()

    def fresh_table():
        conn.execute("drop table if exists t")
        conn.execute(SCHEMA)
        conn.commit()

    def insert():
        conn.executemany(INSERT, rows)
        conn.commit()

    def selects():
        execute = conn.execute
        for k in keys:
            execute(SELECT, (k,)).fetchone()

    t = {"insert": samples(insert, repeats, fresh_table)}  # leaves the table filled
    t["select"] = [s / len(keys) for s in samples(selects, repeats)]
    t["aggregate"] = samples(lambda: conn.execute(AGGREGATE).fetchone(), repeats)
    t["fetchall"] = samples(lambda: conn.execute(SCAN).fetchall(), repeats)

    def iterate():
        for _ in conn.execute(SCAN):
            pass

    def fetchmany():
        cur = conn.execute(SCAN)
        while cur.fetchmany(100):
            pass

    t["iterate"] = samples(iterate, repeats)
    t["fetchmany"] = samples(fetchmany, repeats)
    scan = conn.execute(SCAN).fetchall()
    check = {
        "aggregate": list(conn.execute(AGGREGATE).fetchone()),
        "select": list(conn.execute(SELECT, (keys[-1],)).fetchone()),
        "scan": [len(scan), list(scan[-1])],
    }
    conn.close()
    return t, check


def zstd_suite(compress, decompress, data, repeats):
    """compress / decompress ``data`` at ZSTD_LEVEL with ``compress(data,
    level)`` and ``decompress(frame)``."""
    frame = compress(data, ZSTD_LEVEL)
    assert decompress(frame) == data
    t = {
        "compress": samples(lambda: compress(data, ZSTD_LEVEL), repeats),
        "decompress": samples(lambda: decompress(frame), repeats),
    }
    return t, {"frame_len": len(frame)}
