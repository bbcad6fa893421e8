"""Pinned packages: a warm run with 10 pinned packages vs none, side by side.

    python benchmarks/bench_packages.py [--quick]

Needs the package index once (pip resolves the 10 packages into a plan in a
temporary folder; their wheels go to the blob store, their trees to
``<cache>/packages``). Then, all warm (stored, unpacked, compiled), in one
invocation, the two sides interleaved sample by sample:

* **Sandbox run**: ``Sandbox.run("pass")`` on one sandbox per plan. Each run
  with packages re-checks every tree (in a long-lived process a tree that
  passed is known by its entries' identities, so only a walk with ``lstat``).
* **composectl run**: ``composectl run --plan P -c pass`` as a whole process
  (bytecode cached in ``<cache>/bench-pycache``, as an installed package has
  it); a new process hashes every wheel and every unpacked file before the run.
* **the check alone**, in this process: :func:`pylon.packages.prepare` with
  its memory cleared (what each ``composectl run`` pays) and remembered (what
  each ``Sandbox.run`` pays).
* **importing all 10** in the guest (``Sandbox.run("import ...")``): the
  guest compiles their sources on every run (no bytecode is written; it
  could not be read back either).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _common as c  # sets up sys.path and the environment
from pylon import Sandbox, packages
from pylon.blobstore import BlobStore
from pylon.plan import Plan

#: Ten pure-Python packages without dependencies (on this host's markers).
PACKAGES = ("attrs", "tabulate", "six", "idna", "packaging", "pyparsing", "click", "certifi",
            "iniconfig", "typing-extensions")
MODULES = ("attr", "tabulate", "six", "idna", "packaging", "pyparsing", "click", "certifi",
           "iniconfig", "typing_extensions")


def interleaved(fns: dict[str, Callable[[], object]], n: int) -> dict[str, list[float]]:
    """Seconds per call, the functions taking turns (A B, then B A) so drift hits both."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for i in range(n):
        for name in names if i % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            fns[name]()
            out[name].append(time.perf_counter() - t0)
    return out


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:8.2f} ms (min {min(samples) * 1000:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    runs, procs = (20, 5) if args.quick else (100, 15)
    c.ensure_stock()
    store = BlobStore()
    with tempfile.TemporaryDirectory(prefix="pylon-bench-pkgs-") as tmp:
        none_plan, pkg_plan = Path(tmp) / "none.json", Path(tmp) / "ten.json"
        Plan().save(none_plan)
        c.log(f"resolving {len(PACKAGES)} packages with pip")
        found = packages.resolve(list(PACKAGES))
        pins = [packages.pin(f, store) for f in found]
        Plan().with_packages(pins).save(pkg_plan)
        total = sum(p.size or 0 for p in pins)
        ready = packages.prepare(pins, store)  # unpack once: everything below is warm
        files = sum(1 for host, _g, _ro in ready.preopens for q in Path(host).rglob("*") if q.is_file())
        print(f"{len(pins)} packages pinned: {', '.join(f'{p.name} {p.version}' for p in pins)}")
        print(f"wheels {total / 1024:.0f} KiB, {files} unpacked files")

        sb_none, sb_pkgs = Sandbox(none_plan, tmp_mb=0), Sandbox(pkg_plan, tmp_mb=0)
        for _ in range(5):
            sb_none.run("pass")
            sb_pkgs.run("pass")
        imports = "import " + ", ".join(MODULES)
        assert sb_pkgs.run(imports).ok
        sandbox = interleaved({"none": lambda: sb_none.run("pass"), "ten": lambda: sb_pkgs.run("pass")}, runs)

        def full() -> None:
            packages.clear_memory()
            packages.prepare(pins, store)

        check = interleaved({"full": full, "remembered": lambda: packages.prepare(pins, store)}, runs)
        importing = interleaved({"import 10": lambda: sb_pkgs.run(imports)}, max(runs // 5, 5))

        cli = [sys.executable, "-m", "pylon.cli", "run"]
        # Bytecode cached, as an installed package has it (bench_embedding.py does the same).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(c.paths.cache_root() / "bench-pycache")

        def proc(plan: Path) -> Callable[[], object]:
            return lambda: subprocess.run([*cli, "--plan", str(plan), "-c", "pass"], check=True, env=env)

        proc(pkg_plan)()
        proc(none_plan)()
        whole = interleaved({"none": proc(none_plan), "ten": proc(pkg_plan)}, procs)

    def row(label: str, a: list[float], b: list[float]) -> None:
        ratio = statistics.median(b) / statistics.median(a)
        print(f"{label:<28} {ms(a)}   {ms(b)}   {ratio:5.2f}x")

    print()
    print(f"{'warm, median of N':<28} {'no packages':<27}   {'10 pinned packages':<27}   ratio")
    row(f"Sandbox.run('pass') N={runs}", sandbox["none"], sandbox["ten"])
    row(f"composectl run -c pass N={procs}", whole["none"], whole["ten"])
    print()
    print(f"the check alone, N={runs}: new process (hash wheels + files) {ms(check['full'])}; "
          f"remembered (lstat walk) {ms(check['remembered'])}")
    print(f"Sandbox.run('{imports[:40]}...') {ms(importing['import 10'])}")


if __name__ == "__main__":
    main()
