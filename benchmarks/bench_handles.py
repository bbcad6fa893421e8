"""Handles over dynlink: SQLite through the generated proxy vs embedded vs the
guest's built-in sqlite3, and the proxy's own cost per call.

    python benchmarks/bench_handles.py [--repeats N] [--json OUT.json]

(also a section of ``benchmarks/run_all.py``). Needs ``composectl setup``.
Three guest runs, each timing its own loops with ``time.perf_counter``:

* the stock guest (sqlite embedded): ``pylon_guest.sqlite`` and the guest's
  built-in ``sqlite3``;
* a lean guest (``build_guest(embed=())``, no embedded sqlite) with the sqlite
  cap's dynlink face (``build_cap("caps/sqlite")``): ``pylon_guest.sqlite``
  through the generated proxy;
* the stock guest with tests/caps/typed_probe: a tiny method
  (``counter.get``) through the proxy vs ``cap.invoke`` of a prebuilt payload.

Workloads: point selects by primary key on a reused prepared statement
(``cur.execute(sql, (k,)).fetchone()``, the statement cache keeps it), and
``executemany`` of 10k rows. Median and best of the repeats. The caps are
trusted in memory for this run only (the trust file is not written).
Targets: dynlink within 2x of embedded; proxy <= 0.3 us over raw invoke.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402
from pylon.build import caps as build_caps  # noqa: E402
from pylon.runtime import Resolver, load_plan  # noqa: E402
from pylon.trust import TrustPolicy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REPEATS = 7
TARGET_DYNLINK_VS_EMBEDDED = 2.0
TARGET_PROXY_EXTRA_US = 0.3

SQLITE_SCRIPT = r'''
import json, statistics, sys, time
from pylon_guest import sqlite
import sqlite3
repeats = int(sys.argv[2])
which = sys.argv[3:]

def timed(fn, n):
    best, samples = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(n)
        dt = (time.perf_counter() - t0) / n
        samples.append(dt)
    return {"median_us": statistics.median(samples) * 1e6, "best_us": min(samples) * 1e6}

def bench(mod):
    db = mod.connect(":memory:")
    db.execute("create table t (k integer primary key, v text)")
    db.executemany("insert into t values (?, ?)", [(i, "value %d" % i) for i in range(1000)])
    db.commit()
    cur = db.cursor()
    sql = "select v from t where k = ?"
    def point(n):
        for i in range(n):
            cur.execute(sql, (i % 1000,)).fetchone()
    rows = [(i, "row %d" % i, i * 0.5) for i in range(10000)]
    def many(n):
        for _ in range(n):
            d = mod.connect(":memory:")
            d.execute("create table m (a integer, b text, c real)")
            d.executemany("insert into m values (?, ?, ?)", rows)
            d.commit()
            d.close()
    point(200)
    return {"point_select": timed(point, 2000), "executemany_10k": timed(many, 3)}

out = {"backend": sqlite.backend().name if "pylon" in which else None}
if "pylon" in which:
    out["pylon"] = bench(sqlite)
if "builtin" in which:
    out["builtin"] = bench(sqlite3)
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
'''

PROXY_SCRIPT = r'''
import json, statistics, sys, time
from pylon_guest import dynlink
repeats = int(sys.argv[2])
cap = dynlink.load("typed_probe")
p = cap.api
counter = p.Counter(7)
payload = b"\x81" + counter._h
invoke = cap.invoke
direct = cap._invoke                       # the WIT import itself, no Python wrapper
method = "[method]counter.get"
get = counter.get
n = 20000

def raw():
    for _ in range(n):
        invoke("[method]counter.get", payload)

def direct_raw():
    for _ in range(n):
        direct(method, payload)

def proxy():
    for _ in range(n):
        get()

def loop():
    for _ in range(n):
        pass

res = {"raw": [], "direct": [], "proxy": [], "loop": []}
for _ in range(repeats):
    for name, fn in (("raw", raw), ("direct", direct_raw), ("proxy", proxy), ("loop", loop)):
        t0 = time.perf_counter()
        fn()
        res[name].append((time.perf_counter() - t0) / n * 1e6)
out = {k: {"median_us": statistics.median(v), "best_us": min(v)} for k, v in res.items()}
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
'''


def run(guest: Path, digest: str, code: str, args: list[str], plan: Path | None,
        trust: TrustPolicy) -> dict[str, Any]:
    engine = c.get_engine()
    the_plan, label = load_plan(plan)
    resolver = Resolver(the_plan, label, store=c.BlobStore(), trust=trust)
    with tempfile.TemporaryDirectory(prefix="pylon-bench-handles-") as tmp:
        script = Path(tmp) / "script.py"
        script.write_text(textwrap.dedent(code))
        out = Path(tmp) / "result.json"
        status = engine.run_guest(str(guest), digest, argv=[str(script), str(out), *args], env=[], cwd=tmp,
                                  preopens=[(tmp, tmp, False)], resolver=resolver)
        if status != 0:
            raise RuntimeError(f"the guest exited with {status}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def composectl(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pylon.cli", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"composectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def measure(repeats: int = REPEATS) -> dict[str, Any]:
    st = c.ensure_stock()
    trust = TrustPolicy.load()
    lean = c.build_guest(embed=())
    sqlite_cap = build_caps.build_cap(REPO / "caps" / "sqlite")
    probe_cap = build_caps.build_cap(REPO / "tests" / "caps" / "typed_probe")
    with tempfile.TemporaryDirectory(prefix="pylon-bench-plans-") as tmp:
        dyn_plan = Path(tmp) / "dynlink.json"
        composectl("plan", "new", str(dyn_plan), "--guest", str(lean.path))
        composectl("plan", "add", str(dyn_plan), "sqlite", str(sqlite_cap.path))
        probe_plan = Path(tmp) / "probe.json"
        composectl("plan", "new", str(probe_plan))
        composectl("plan", "add", str(probe_plan), "typed_probe", str(probe_cap.path))
        # In memory only: this run trusts what it just built.
        trust.allow("sqlite", sqlite_cap.digest)
        trust.allow("typed_probe", probe_cap.digest)
        c.log("sqlite: stock guest (embedded + built-in sqlite3)")
        embedded = run(st.guest, st.guest_digest, SQLITE_SCRIPT, [str(repeats), "pylon", "builtin"], None, trust)
        c.log("sqlite: lean guest + dynlink cap")
        dynlink = run(lean.path, lean.digest, SQLITE_SCRIPT, [str(repeats), "pylon"], dyn_plan, trust)
        c.log("proxy overhead: typed_probe")
        proxy = run(st.guest, st.guest_digest, PROXY_SCRIPT, [str(repeats)], probe_plan, trust)
    assert embedded["backend"] == "embedded" and dynlink["backend"] == "dynlink", (embedded, dynlink)
    return {"embedded": embedded["pylon"], "builtin": embedded["builtin"], "dynlink": dynlink["pylon"],
            "proxy": proxy}


def report(r: dict[str, Any]) -> list[str]:
    lines = ["Handles over dynlink (us per operation; median / best of repeats)", ""]
    lines.append(f"{'workload':<18}{'dynlink':>18}{'embedded':>18}{'built-in':>18}{'dyn/emb':>10}"
                 f"{'emb/built-in':>14}")
    for w in ("point_select", "executemany_10k"):
        d, e, b = r["dynlink"][w], r["embedded"][w], r["builtin"][w]
        lines.append(f"{w:<18}" + "".join(f"{x['median_us']:>10.2f} /{x['best_us']:>6.2f}" for x in (d, e, b))
                     + f"{d['median_us'] / e['median_us']:>10.2f}{e['median_us'] / b['median_us']:>14.2f}")
    ratio = r["dynlink"]["point_select"]["median_us"] / r["embedded"]["point_select"]["median_us"]
    lines.append(f"target: dynlink within {TARGET_DYNLINK_VS_EMBEDDED}x of embedded (point select): "
                 f"{ratio:.2f}x {'MET' if ratio <= TARGET_DYNLINK_VS_EMBEDDED else 'MISSED'}")
    p = r["proxy"]
    # Against the WIT import called directly: what the proxy adds on top of
    # the call itself (Cap.invoke is a Python wrapper around the same import).
    extra = p["proxy"]["median_us"] - p["direct"]["median_us"]
    extra_best = p["proxy"]["best_us"] - p["direct"]["best_us"]
    lines += ["", "Proxy vs raw invoke (typed_probe [method]counter.get; us per call, median / best)",
              f"  raw cap.invoke (prebuilt payload): {p['raw']['median_us']:.3f} / {p['raw']['best_us']:.3f}",
              f"  the WIT import, called directly:   {p['direct']['median_us']:.3f} / {p['direct']['best_us']:.3f}",
              f"  proxy counter.get():               {p['proxy']['median_us']:.3f} / {p['proxy']['best_us']:.3f}",
              f"  empty loop:                        {p['loop']['median_us']:.3f} / {p['loop']['best_us']:.3f}",
              f"  proxy over the direct import: {extra:+.3f} us (best {extra_best:+.3f}); "
              f"target <= {TARGET_PROXY_EXTRA_US} us: {'MET' if extra <= TARGET_PROXY_EXTRA_US else 'MISSED'}"]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=REPEATS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    r = measure(args.repeats)
    print("\n".join(report(r)))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
