"""The same routes hosted by wasmtime-py (the Python-only alternative to our engine).

    python benchmarks/bench_wasmtime_py.py GUEST CAP OUT.json [--throughput]

Run by run_all.py in a process of its own (two wasmtime versions, ours and
wasmtime-py's, are kept out of one process). Writes ns per call:

* ``full_route_ns``: the whole guest -> host -> provider route, with
  ``compose:dynlink/linker`` implemented on wasmtime-py's component API
  (a host resource ``instance``, ``resolve-by-id`` and
  ``[method]instance.invoke`` as Python callbacks, the provider in a Store of
  its own): the stock pylon.wasm runs ``guest_scripts/invoke.py``, which
  times ``dynlink.load("crc32c").invoke("crc32c", b"123456789")``;
* ``provider_leg_ns``: the host -> provider leg alone, from Python;
* with ``--throughput``: ``provider_leg_1mib_ns``, the leg with a 1 MiB payload
  (stock wasmtime-py lowers ``list<u8>`` one value per byte, in Python).

The guest is compiled by wasmtime-py's own engine once (about 20 s) and then
loaded from a serialized copy next to the build outputs.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.pop("RUST_BACKTRACE", None)  # wasmtime would capture a backtrace per trap
HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "guest_scripts"
sys.path.insert(0, str(SCRIPTS))

from wasmtime import Engine, Store, WasiConfig  # noqa: E402
from wasmtime.component import Component, Linker, ResourceHost, ResourceType, Variant  # noqa: E402

from _timing import side_by_side  # noqa: E402  (the guest scripts' timing loop)

WASMTIME_PY = importlib.metadata.version("wasmtime")
PAYLOAD = b"123456789"
EXPECTED = (0xE3069283).to_bytes(4, "little")
INSTANCE_TYPE = 1


def per_call_ns(fn, *, repeats: int = 7) -> float:
    return side_by_side({"fn": fn}, target_s=0.15, repeats=repeats)["fn"]


def _load(engine: Engine, path: Path, cache: Path | None) -> Component:
    if cache is not None and cache.exists():
        return Component.deserialize_file(engine, str(cache))
    component = Component.from_file(engine, str(path))
    if cache is not None:
        tmp = cache.with_suffix(".tmp")
        tmp.write_bytes(component.serialize())
        os.replace(tmp, cache)
    return component


class Provider:
    """The crc32c cap instantiated by wasmtime-py in a Store of its own."""

    def __init__(self, engine: Engine, component: Component):
        linker = Linker(engine)
        with linker.root() as root:
            with root.add_instance("compose:dynlink/types@0.1.0"):
                pass
        self.store = Store(engine)
        instance = linker.instantiate(self.store, component)
        iface = instance.get_export_index(self.store, "compose:dynlink/provider@0.1.0")
        self.func = instance.get_func(self.store, instance.get_export_index(self.store, "invoke", iface))

    def invoke(self, method: str, payload: bytes):
        # result<list<u8>, error> comes back untagged: bytes, or a Variant for the error.
        return self.func(self.store, method, payload)


def guest_linker(engine: Engine, cap: Component) -> Linker:
    """WASI plus compose:dynlink/linker, implemented in Python."""
    live: dict[int, Provider] = {}
    next_rep = [1]

    def resolve_by_id(_store, name: str):
        if name != "crc32c":
            return Variant("not-found", f"cap {name!r} is not in this benchmark's plan")
        rep = next_rep[0]
        next_rep[0] += 1
        live[rep] = Provider(engine, cap)
        return ResourceHost.own(rep, INSTANCE_TYPE)

    def invoke(store, this, method: str, payload: bytes):
        # A leading U+0000 offers the request buffer for the reply
        # (docs/guest-api.md, "Memory per call"): this host declines, and
        # drops the marker as every host must.
        return live[this.to_host(store).rep].invoke(method.removeprefix("\0"), payload)

    def shim(_store, _this):
        return None

    linker = Linker(engine)
    linker.add_wasip2()
    with linker.root() as root:
        with root.add_instance("compose:dynlink/types@0.1.0"):
            pass
        with root.add_instance("compose:dynlink/linker@0.1.0") as dl:
            dl.add_resource("instance", ResourceType.host(INSTANCE_TYPE), lambda _s, rep: live.pop(rep, None))
            dl.add_func("resolve-by-id", resolve_by_id)
            dl.add_func("[method]instance.invoke", invoke)
            dl.add_func("[method]instance.shim", shim)
    return linker


def run_guest_script(engine: Engine, guest: Component, cap: Component, script: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="pylon-bench-wtpy-") as tmp:
        out = Path(tmp) / "result.json"
        wasi = WasiConfig()
        wasi.inherit_stdout()
        wasi.inherit_stderr()
        wasi.preopen_dir(str(SCRIPTS), str(SCRIPTS), False)
        wasi.preopen_dir(tmp, tmp, True)
        store = Store(engine)
        store.set_wasi(wasi)
        instance = guest_linker(engine, cap).instantiate(store, guest)
        entry = instance.get_export_index(store, "pylon:guest/entry@0.1.0")
        run = instance.get_func(store, instance.get_export_index(store, "run", entry))
        status = run(store, [str(SCRIPTS / script), str(out)], [], str(SCRIPTS))
        if status != 0:
            raise RuntimeError(f"{script} exited with {status} under wasmtime-py")
        return json.loads(out.read_text())


def main() -> None:
    guest_path, cap_path, out_path = map(Path, sys.argv[1:4])
    throughput = "--throughput" in sys.argv[4:]
    cache_dir = Path(os.environ.get("PYLON_BENCH_WTPY_CACHE", tempfile.gettempdir()))
    cache_dir.mkdir(parents=True, exist_ok=True)
    engine = Engine()
    t0 = time.perf_counter()
    guest = _load(engine, guest_path, cache_dir / f"{guest_path.name}-wasmtime-py-{WASMTIME_PY}.cwasm")
    load_s = time.perf_counter() - t0
    cap = _load(engine, cap_path, None)

    provider = Provider(engine, cap)
    assert provider.invoke("crc32c", PAYLOAD) == EXPECTED
    result = {"guest_load_s": load_s, "wasmtime_py": WASMTIME_PY,
              "provider_leg_ns": per_call_ns(lambda: provider.invoke("crc32c", PAYLOAD))}
    if throughput:
        mib = bytes(range(256)) * 4096
        result["provider_leg_1mib_ns"] = per_call_ns(lambda: provider.invoke("crc32c", mib), repeats=3)
    full = run_guest_script(engine, guest, cap, "invoke.py")
    result["full_route_ns"] = full["dynlink_cap_invoke"]
    result["full_route_binding_ns"] = full["dynlink_binding"]
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
