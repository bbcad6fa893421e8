"""Tiny ``invoke`` round trips (payload b"123456789", reply 4 bytes), side by side.

* in one run of the composed guest (our engine): ``dynlink.load("crc32c").invoke``
  (guest -> host -> provider Store) vs the same cap ``wac plug``-ged into the
  guest and called through its ``compose:dynlink/provider`` import;
* the same guest -> host -> provider route hosted by wasmtime-py (the stock
  guest, the dynlink linker written on wasmtime-py's component API), in a
  subprocess;
* host -> provider from Python: our engine's ``load_provider(...).invoke`` vs
  wasmtime-py's component ``Func`` call;
* native: CPython calling the C ``crc32c`` package (PyPI ``crc32c``).

Every figure is ns per call from the same timing loop (guest_scripts/_timing.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import _common as c

PAYLOAD = b"123456789"


def run(st: c.Stock, composed: c.Composed) -> dict:
    out: dict = {}
    c.log("tiny invoke: dynlink vs composed, in one guest run")
    guest = c.run_guest_script(composed.path, composed.digest, "invoke.py", [])
    out.update({f"guest_{k}": v for k, v in guest.items()})

    c.log("tiny invoke: host -> provider through our engine")
    provider = c.get_engine().load_provider(c.provider_spec(st))
    assert provider.invoke("crc32c", PAYLOAD) == (0xE3069283).to_bytes(4, "little")
    out["host_engine_provider"] = c.per_call_ns(lambda: provider.invoke("crc32c", PAYLOAD))

    c.log("tiny invoke: native crc32c")
    import crc32c  # noqa: PLC0415  (PyPI crc32c; a dev dependency)

    out["native_crc32c"] = c.per_call_ns(lambda: crc32c.crc32c(PAYLOAD))
    out["native_hardware"] = bool(getattr(crc32c, "hardware_based", False))

    def noop(_data):
        return None

    out["host_py_call"] = c.per_call_ns(lambda: noop(PAYLOAD))

    c.log("tiny invoke: the wasmtime-py route (subprocess; first run compiles the guest, ~30 s)")
    out.update(wasmtime_py(st))
    return out


def wasmtime_py(st: c.Stock) -> dict:
    cache = c.toolchain.output_dir("bench-wasmtime-py", "cache")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pylon-bench-") as tmp:
        result = Path(tmp) / "wtpy.json"
        proc = subprocess.run(
            [sys.executable, str(c.BENCH / "bench_wasmtime_py.py"), str(st.guest), str(st.cap), str(result),
             "--throughput"],
            env={**c.os.environ, "PYLON_BENCH_WTPY_CACHE": str(cache)}, text=True, capture_output=True)
        if proc.returncode != 0:
            c.log(f"wasmtime-py route failed:\n{proc.stdout}{proc.stderr}")
            return {"wtpy_error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
        data = json.loads(result.read_text())
    return {
        "wtpy_version": data["wasmtime_py"],
        "wtpy_full_route": data["full_route_ns"],
        "wtpy_provider_leg": data["provider_leg_ns"],
        "wtpy_provider_leg_1mib": data.get("provider_leg_1mib_ns"),
    }
