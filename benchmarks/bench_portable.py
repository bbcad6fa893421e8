"""The portable guest under wasmtime-py vs the stock guest under ``composectl run``.

    python benchmarks/bench_portable.py [--runs N]

Builds (or finds cached) ``composectl build --portable`` and runs ``composectl
setup``, then prints, side by side:

* start-up: the wall time of a whole process running ``-c pass``, median of
  N (default 7) after one warm-up. ``composectl run`` loads the stock guest
  from its compile cache; the wasmtime-py process (this file with
  ``--host``) imports wasmtime, deserializes the portable guest compiled
  once into the build cache, instantiates it and calls ``wasi:cli/run``;
* a crc32c loop timed inside the guest (the same script on both hosts):
  ``dynlink.load("crc32c").invoke`` on 9 bytes and on 1 MiB, which crosses
  our engine's host and a provider Store under composectl and stays inside
  the composition (guest -> router) under wasmtime-py; and the ``crc32c``
  module, which both guests embed with ``wac plug`` (a control: it should
  cost the same).

Nothing is written to the checkout: the compiled guest lives in the build
cache, the guest script in a temporary folder.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
os.environ.pop("RUST_BACKTRACE", None)  # wasmtime captures a backtrace per trap when set

GUEST_SCRIPT = """\
import json, time
import crc32c
from pylon_guest import dynlink

def per_call_ns(fn, n, rounds=5):
    fn()
    best = None
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        took = (time.perf_counter_ns() - start) / n
        best = took if best is None else min(best, took)
    return best

cap = dynlink.load("crc32c")
small, big = b"123456789", bytes(range(256)) * 4096
assert int.from_bytes(cap.invoke("crc32c", small), "little") == 0xE3069283
print(json.dumps({
    "invoke 9 B": per_call_ns(lambda: cap.invoke("crc32c", small), 20000),
    "invoke 1 MiB": per_call_ns(lambda: cap.invoke("crc32c", big), 100),
    "crc32c module 9 B": per_call_ns(lambda: crc32c.crc32c(small), 20000),
}))
"""


# -- the wasmtime-py host (run in a process of its own) ------------------------------

def host_main(cwasm: str, guest_argv: list[str], preopen: str | None, config: Any = None) -> int:
    """One run of the portable guest, as a user's Python program would do it.

    ``config``: a ``wasmtime.Config`` the guest was compiled with (see
    :func:`_compiled`); default wasmtime's defaults.
    """
    from wasmtime import Engine, ExitTrap, Store, WasiConfig
    from wasmtime.component import Component, Linker

    epochs = config is not None and getattr(config, "_pylon_epochs", False)
    engine = Engine(config) if config is not None else Engine()
    component = Component.deserialize_file(engine, cwasm)
    linker = Linker(engine)
    linker.add_wasip2()
    store = Store(engine)
    if epochs:
        store.set_epoch_deadline(1 << 40)  # checked, never reached: the cost of the checks alone
    wasi = WasiConfig()
    wasi.argv = ["pylon", *guest_argv]
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    if preopen:
        wasi.preopen_dir(preopen, preopen)
    store.set_wasi(wasi)
    instance = linker.instantiate(store, component)
    run = instance.get_func(store, instance.get_export_index(
        store, "run", instance.get_export_index(store, "wasi:cli/run@0.2.12")))
    try:
        result = run(store)
    except ExitTrap as exc:
        return exc.code
    return 0 if result is None or getattr(result, "tag", "ok") == "ok" else 1


# -- the benchmark -------------------------------------------------------------------

def _composectl(*args: str) -> str:
    result = subprocess.run([str(BIN / "composectl"), *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"composectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def _compiled(portable: Path, digest: str, config: Any = None, label: str = "") -> Path:
    """The portable guest compiled by wasmtime-py (with ``config``, named ``label``
    in the cache), serialized once into the build cache."""
    sys.path.insert(0, str(REPO / "python"))
    from wasmtime import Engine
    from wasmtime.component import Component

    from pylon.build import toolchain

    version = importlib.metadata.version("wasmtime")
    name = f"portable-wasmtime-py-{version}" + (f"-{label}" if label else "")
    out = toolchain.output_dir(name, digest.removeprefix("sha256:")[:16])
    cwasm = out / "pylon-portable.cwasm"
    if not cwasm.exists():
        print(f"  .. compiling the portable guest with wasmtime-py {version} {label} (once)", file=sys.stderr)
        out.mkdir(parents=True, exist_ok=True)
        tmp = cwasm.with_suffix(".tmp")
        engine = Engine(config) if config is not None else Engine()
        tmp.write_bytes(Component.from_file(engine, str(portable)).serialize())
        os.replace(tmp, cwasm)
    return cwasm


def _median_s(cmd: list[str], runs: int) -> float:
    def once() -> float:
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        return time.perf_counter() - start
    once()
    return statistics.median(once() for _ in range(runs))


def _guest_json(cmd: list[str]) -> dict[str, float]:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="process starts per side (median)")
    parser.add_argument("--host", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host:  # the wasmtime-py side: --host CWASM PREOPEN|- GUEST_ARGV...
        cwasm, preopen, *guest_argv = args.host
        sys.exit(host_main(cwasm, guest_argv, None if preopen == "-" else preopen))

    print("  .. composectl setup and build --portable (cached after the first time)", file=sys.stderr)
    _composectl("setup")
    digest, path = _composectl("build", "--portable").split()
    cwasm = _compiled(Path(path), digest)
    host = [sys.executable, __file__, "--host", str(cwasm)]
    composectl = [str(BIN / "composectl"), "run"]

    with tempfile.TemporaryDirectory(prefix="bench-portable-") as tmp:
        script = Path(tmp) / "crc_loop.py"
        script.write_text(GUEST_SCRIPT)
        startup = {
            "composectl run -c pass": _median_s([*composectl, "-c", "pass"], args.runs),
            "wasmtime-py, portable guest": _median_s([*host, "-", "-c", "pass"], args.runs),
        }
        engine_loop = _guest_json([*composectl, str(script)])
        portable_loop = _guest_json([*host, tmp, str(script)])

    wasmtime_py = importlib.metadata.version("wasmtime")
    print(f"\nstart-up, whole process, median of {args.runs} (wasmtime-py {wasmtime_py}):")
    for what, seconds in startup.items():
        print(f"  {what:<40}{seconds * 1e3:9.1f} ms")
    print("\ncrc32c inside the guest, best of 5 rounds:")
    print(f"  {'':<22}{'composectl run':>16}{'wasmtime-py (portable)':>26}")
    for what in engine_loop:
        scale, unit = (1e-3, "us") if "MiB" in what else (1, "ns")
        print(f"  {what:<22}{engine_loop[what] * scale:13.1f} {unit}{portable_loop[what] * scale:23.1f} {unit}")


if __name__ == "__main__":
    main()
