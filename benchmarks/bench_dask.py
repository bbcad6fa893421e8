"""Runs per second through ``pylon.dask`` with 1 and 2 Dask workers, beside a local Sandbox.

    python benchmarks/bench_dask.py [--runs 40] [--rounds 3]

docs/benchmarks.md ("Dask runs") and docs/scale-out.md have a run. Against
the stock install (``_common.ensure_stock``: the default plan and the stock
guest), on this machine:

* **local**: one ``pylon.Sandbox`` in this process, the runs one after the
  other (the reference a cluster has to beat);
* **1 worker / 2 workers**: a ``LocalCluster`` of that many worker processes
  (one thread each, under nannies), ``run_many`` of the same runs. Both
  clusters are up for the whole benchmark and every worker is warmed up first
  (its sandbox made, the guest loaded), so the figures are steady-state
  throughput, not start-up (printed separately). The rounds interleave
  local, 1 worker and 2 workers, so load from elsewhere spreads over all.

Two workloads: ``cpu``, a pure-Python loop of about 50-100 ms per run, and
``tiny``, ``print(1)``, whose rate shows the per-task cost of going through
the scheduler (pickling the plan text and spec, two network hops, the
result back). Each figure is the median of ``--rounds`` rounds of
``--runs`` runs; the ratio is 2 workers over 1. On a 2-core machine two
workers can at best reach ~2x, less whatever the scheduler, the nannies and
this client take from the same cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402  (sets up sys.path and the environment)
from pylon import Sandbox  # noqa: E402

CPU_LOOP = 250_000
CPU_SCRIPT = f"""
s = 0
for i in range({CPU_LOOP}):
    s += i * i % 7
print(s)
"""
TINY_SCRIPT = "print(1)"
WORKLOADS = {"cpu": CPU_SCRIPT, "tiny": TINY_SCRIPT}


def _rate(fn: Callable[[], object], runs: int) -> float:
    t = time.perf_counter()
    fn()
    return runs / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40, help="runs per round (default 40)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure (default 3)")
    args = parser.parse_args()
    runs = args.runs

    from distributed import Client, LocalCluster

    from pylon.dask import RunSpec, run_many, worker_stats

    st = c.ensure_stock()
    plan = st.plan
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load}; {runs} runs per round, "
          f"median of {args.rounds} rounds")
    sb = Sandbox(plan, timeout=60)

    def local(script: str) -> None:
        for _ in range(runs):
            r = sb.run(script)
            assert r.exit_code == 0, r.stderr

    def on_cluster(client: Client, script: str) -> None:
        results = run_many(client, plan, [RunSpec(script) for _ in range(runs)], timeout=60)
        assert all(r.exit_code == 0 for r in results), [r.stderr for r in results if r.exit_code]

    with ExitStack() as stack:
        clients: dict[int, Client] = {}
        for n in (1, 2):
            t = time.perf_counter()
            lc = stack.enter_context(LocalCluster(n_workers=n, processes=True, threads_per_worker=1,
                                                  dashboard_address=":0"))
            client = stack.enter_context(Client(lc))
            client.wait_for_workers(n)
            started = time.perf_counter() - t
            # Warm-up: every worker makes its sandbox (loads the guest) before timing.
            t = time.perf_counter()
            while not all(s.sandboxes_made for s in worker_stats(client).values()):
                run_many(client, plan, [RunSpec(TINY_SCRIPT)] * (2 * n), timeout=60)
            print(f"{n} worker(s): cluster started in {started:.2f} s; every worker's guest loaded "
                  f"(first runs) in {time.perf_counter() - t:.2f} s")
            clients[n] = client
        for script in WORKLOADS.values():  # warm-up runs of each workload everywhere
            local(script)
            for client in clients.values():
                on_cluster(client, script)
        # Rounds interleave the three setups, so load from elsewhere on the
        # machine spreads over all of them instead of skewing one.
        rates: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for name, script in WORKLOADS.items():
                rates.setdefault((name, "local"), []).append(_rate(lambda s=script: local(s), runs))
                for n, client in clients.items():
                    rates.setdefault((name, f"{n}w"), []).append(
                        _rate(lambda cl=client, s=script: on_cluster(cl, s), runs))

    med = {key: statistics.median(values) for key, values in rates.items()}
    print(f"{'workload':<10}{'local Sandbox':>15}{'1 worker':>11}{'2 workers':>11}{'2w / 1w':>10}"
          f"{'1w / local':>12}   (runs/s)")
    for name in WORKLOADS:
        loc, r1, r2 = med[(name, "local")], med[(name, "1w")], med[(name, "2w")]
        print(f"{name:<10}{loc:>15.1f}{r1:>11.1f}{r2:>11.1f}{r2 / r1:>9.2f}x{r1 / loc:>11.2f}x")
    print(f"one cpu run: {1000 / med[('cpu', 'local')]:.0f} ms; one tiny run: "
          f"{1000 / med[('tiny', 'local')]:.1f} ms (local Sandbox)")
    print(f"per-task cost of the cluster (tiny, 1 worker, beyond the run itself): "
          f"{1000 / med[('tiny', '1w')] - 1000 / med[('tiny', 'local')]:.1f} ms")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for key, values in rates.items():
        print(f"  rounds {key[0]:<5}{key[1]:<6}" + ", ".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    main()
