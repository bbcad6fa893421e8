"""Measures one cap in each linkage mode it has (``composectl bench CAP``).

The modes are the cap's faces, read from its ``cap.toml``: ``[dynlink]``,
``[embedded]`` and ``[static]``; what to call in each is its ``[bench]``
entry. A face added to a cap shows up here with nothing else to change; a
face without a ``[bench]`` entry, or one this machine cannot build or run,
is reported as unavailable with the reason.

* **dynlink**: the cap built (``build_cap``, cached), stored in a temporary
  blob store, trusted by an in-memory policy (the user's install is never
  touched), called from the stock pylon.wasm through the host's linker.
  First resolve: ``dynlink.load`` plus the first call, on a fresh engine per
  run, *cold* (a copy of the cap made unique by a custom section, its
  compiled artifact deleted before each run: verify, compile, instantiate)
  and *warm* (its artifact on disk: verify, load, instantiate).
* **embedded**: the stock pylon.wasm when it embeds the cap (``[embedded]``
  with ``stock``); otherwise "not built".
* **static**: the MicroPython static module with the cap folded in
  (``build_micropython``, cached), run by :mod:`pylon.static_runner`. That
  build has no ``time`` module, so the host times whole runs: per call is
  (t(N calls) - t(0 calls)) / N, from interleaved pairs of runs.

Timing inside the CPython guest is :mod:`pylon.bench.timing`
(``time.perf_counter_ns``): batches of calls, ns per call per batch, median
and best batch.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pylon import paths
from pylon.bench import timing
from pylon.bench.data import make_data
from pylon.build.manifest import CAPS_DIR, MANIFEST, BenchCall, Manifest, load_manifest, read_toml
from pylon.errors import PylonError
from pylon.names import is_cap_name

__all__ = ["FULL_SIZES", "MODES", "QUICK_SIZES", "Settings", "bench_cap", "drop_compiled", "find_cap",
           "nonced_cap"]

#: The linkage modes, in the seed's order (docs/choosing.md).
MODES = ("dynlink", "embedded", "static")
KIB, MIB = 1 << 10, 1 << 20
#: Bulk sizes: powers of 4 from 1 KiB to 16 MiB.
FULL_SIZES = (KIB, 4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, MIB, 4 * MIB, 16 * MIB)
QUICK_SIZES = (KIB, 64 * KIB, MIB)
#: Per guest run: generous, so a slow machine never turns a figure into a timeout.
RUN_TIMEOUT_MS = 600_000
GUEST_MEMORY = 1 << 30
#: The plan limits of the cap under test: room for 16 MiB in and out (zstd).
CAP_LIMITS = {"memory-mb": 512, "max-payload-mb": 64, "timeout-ms": 120_000}
#: MicroPython's GC heap for the static runs: the payload (up to 16 MiB) and what the call returns.
STATIC_HEAP = "80m"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    """How much to measure. ``quick``: fewer sizes, repeats and resolves."""

    quick: bool = False
    sizes: tuple[int, ...] = FULL_SIZES
    repeats: int = 7
    target_s: float = 0.2
    resolves: int = 5

    @staticmethod
    def make(quick: bool) -> Settings:
        if quick:
            return Settings(quick=True, sizes=QUICK_SIZES, repeats=3, target_s=0.05, resolves=2)
        return Settings()


@dataclass
class ModeResult:
    """One mode's figures; ``why`` says why a mode is unavailable."""

    available: bool = False
    why: str | None = None
    artifact: str | None = None  # what was measured for size
    artifact_bytes: int | None = None
    handles: str = ""
    tiny: dict[str, Any] | None = None  # {"median_us", "best_us", "samples_us", "bytes"}
    bulk: dict[str, dict[str, Any]] = field(default_factory=dict)  # size -> {"median_mbs", ...}
    first_resolve: dict[str, dict[str, Any]] | None = None  # "cold"/"warm" -> {"median_ms", ...}
    notes: list[str] = field(default_factory=list)


def find_cap(arg: str) -> Path:
    """A cap folder (a path with a cap.toml), or the name of a cap under ``caps/``.

    Raises:
        PylonError: neither.
    """
    path = Path(arg).expanduser()
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise PylonError(f"{arg} is not a cap folder: it has no {MANIFEST}")
        return path.resolve()
    if is_cap_name(arg) and (CAPS_DIR / arg / MANIFEST).is_file():
        return (CAPS_DIR / arg).resolve()
    known = sorted(p.parent.name for p in CAPS_DIR.glob(f"*/{MANIFEST}") if not p.parent.name.startswith(("_", ".")))
    raise PylonError(f"unknown cap {arg!r}: give a cap folder (with a {MANIFEST}) or the name of a cap under "
                     f"caps/ ({', '.join(known) or 'none there'})")


def nonced_cap(cap: Path, dest: Path) -> Path:
    """``cap`` plus a custom section holding a fresh nonce: the same code under a
    digest never compiled before (a cold compile cache for that one cap)."""
    name, data = b"pylon-bench-nonce", os.urandom(16)
    body = bytes([len(name)]) + name + data
    dest.write_bytes(cap.read_bytes() + b"\x00" + bytes([len(body)]) + body)
    return dest


def drop_compiled(digest: str) -> None:
    """Deletes the engine's compiled artifacts of ``digest`` from the disk cache."""
    for p in paths.compiled_root().glob(f"{digest.removeprefix('sha256:')}-*"):
        p.unlink(missing_ok=True)


def _us(samples_ns: list[float], **extra: Any) -> dict[str, Any]:
    s = timing.summary(samples_ns)
    return {"median_us": s["median"] / 1e3, "best_us": s["best"] / 1e3,
            "samples_us": [x / 1e3 for x in samples_ns], **extra}


def _mbs(size: int, samples_ns: list[float]) -> dict[str, Any]:
    s = timing.summary(samples_ns)
    # The best throughput is the fastest call: the smallest time.
    return {"median_mbs": size / s["median"] * 1e3, "best_mbs": size / s["best"] * 1e3,
            "median_ns": s["median"], "samples_ns": samples_ns}


def _ms(samples_ns: list[float]) -> dict[str, Any]:
    s = timing.summary(samples_ns)
    return {"median_ms": s["median"] / 1e6, "best_ms": s["best"] / 1e6, "samples_ms": [x / 1e6 for x in samples_ns]}


def _interface_has_resources(manifest: Manifest) -> tuple[bool, bool]:
    """(whether the cap's WIT interface declares resources, whether the cap has an
    ``[interface]`` table: the generated dynlink face, docs/cap-interface.md)."""
    doc = read_toml(manifest.file)
    iface = doc.get("interface")
    wit: Path | None = None
    name: str | None = None
    if isinstance(iface, dict) and isinstance(iface.get("wit"), str):
        wit = (manifest.dir / iface["wit"]).resolve()
        name = iface.get("export")
    elif manifest.embedded is not None:
        wit, name = manifest.embedded.wit, manifest.embedded.interface
    if wit is None or not wit.is_file():
        return False, isinstance(iface, dict)
    text = wit.read_text(encoding="utf-8", errors="replace")
    short = name.split("/", 1)[1].split("@", 1)[0] if name and "/" in name else None
    if short is not None:
        # The interface's block: resources of other interfaces in the package do not count.
        start = text.find(f"interface {short} ")
        if start >= 0:
            text = text[start:]
            end = text.find("\ninterface ")
            text = text if end < 0 else text[:end]
    has = any(line.strip().startswith("resource ") for line in text.splitlines())
    return has, isinstance(iface, dict)


def handles_per_mode(manifest: Manifest) -> dict[str, str]:
    """The "holds C handles across calls?" answer per mode, from the cap's interface."""
    has, generated = _interface_has_resources(manifest)
    if not has:
        return {m: "not needed (its interface has no resources)" for m in MODES}
    return {
        "dynlink": "yes (generated handles)" if generated else "by hand (handle numbers in its CBOR payloads)",
        "embedded": "yes (WIT resources)",
        "static": "yes (C objects in the module)",
    }


# ------------------------------------------------------------ guest runs


class _Guest:
    """Runs guest_driver.py jobs in the stock pylon.wasm, in this process."""

    def __init__(self, work: Path, data: Path, resolver: Any = None):
        from pylon import stock
        from pylon.blobstore import BlobStore

        digest, _sources, _size = stock.stock_guest_ref()
        path = BlobStore().blob_path(digest)
        if not path.is_file():
            raise PylonError("the stock pylon.wasm is not in the blob store: run `composectl setup`")
        self.path, self.digest = path, digest
        self.work, self.data = work, data
        self.resolver = resolver
        self.reports: list[str] = []
        self._prepared: dict[int, Any] = {}
        self._n = 0
        here = Path(__file__).parent
        for name in ("guest_driver.py", "timing.py"):
            shutil.copyfile(here / name, work / name)

    def run(self, job: dict[str, Any], engine: Any = None) -> dict[str, Any]:
        from pylon.engine import get_engine

        engine = engine or get_engine()
        guest = self._prepared.get(id(engine))
        if guest is None:
            guest = engine.prepare_guest(str(self.path), self.digest)
            self._prepared[id(engine)] = guest
        self._n += 1
        job_file, out = self.work / f"job-{self._n}.json", self.work / f"out-{self._n}.json"
        job_file.write_text(json.dumps(job))
        folder = str(self.data.parent)
        preopens = [(str(self.work), str(self.work), False), (folder, folder, True)]
        outcome = guest.run([str(self.work / "guest_driver.py"), str(job_file), str(out)], [], str(self.work),
                            preopens=preopens, resolver=self.resolver, report=self.reports.append,
                            timeout_ms=RUN_TIMEOUT_MS, memory_bytes=GUEST_MEMORY)
        if outcome.status != 0 or not out.is_file():
            lines = [ln for ln in outcome.stderr.decode(errors="replace").splitlines() if ln.strip()]
            detail = lines[-1] if lines else f"exit status {outcome.status}"
            host = f"; host: {self.reports[-1]}" if self.reports else ""
            raise PylonError(f"the guest run failed: {detail}{host}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    def forget(self, engine: Any) -> None:
        self._prepared.pop(id(engine), None)


def _job(manifest: Manifest, face: str, call: BenchCall, kind: str, size: int, data: Path, settings: Settings,
         name: str | None = None) -> dict[str, Any]:
    return {"job": kind, "face": face, "name": name or manifest.name, "size": size, "data": str(data),
            "call": asdict(call), "target_s": settings.target_s, "repeats": settings.repeats,
            "import_name": manifest.embedded.import_name if manifest.embedded else ""}


def _tiny_and_bulk(run: Callable[[str, int], dict[str, Any]], res: ModeResult, bulk: bool, tiny_bytes: int,
                   settings: Settings, say: Progress, label: str) -> bool:
    """Fills ``res.tiny`` and ``res.bulk``; False when the mode turned out unavailable."""
    say(f"{label}: tiny call")
    try:
        got = run("tiny", tiny_bytes)
    except PylonError as exc:
        raise PylonError(f"the tiny call: {short_error(exc)}") from exc
    if "unavailable" in got:
        res.available, res.why = False, f"not built ({got['unavailable']})"
        return False
    res.tiny = _us(got["samples_ns"], bytes=tiny_bytes)
    if bulk:
        for size in settings.sizes:
            say(f"{label}: bulk {_size(size)}")
            try:
                res.bulk[str(size)] = _mbs(size, run("bulk", size)["samples_ns"])
            except PylonError as exc:  # one size failing leaves the others' figures
                res.notes.append(f"bulk {_size(size)} failed: {short_error(exc)}")
    return True


def short_error(exc: BaseException) -> str:
    """A trap's message without its wasm backtrace: the first line and the trap."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) > 2 and "backtrace" in lines[0]:
        return f"{lines[0].removesuffix('wasm backtrace:').strip()} ... {lines[-1].split(': ', 1)[-1]}"
    return " ".join(lines)


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB else f"{n // KIB} KiB" if n >= KIB else f"{n} B"


# ------------------------------------------------------------ the modes


def _dynlink(res: ModeResult, manifest: Manifest, call: BenchCall, settings: Settings, work: Path, data: Path,
             say: Progress) -> ModeResult:
    from pylon import _engine
    from pylon.blobstore import BlobStore
    from pylon.build.caps import build_cap
    from pylon.engine import get_engine
    from pylon.plan import Plan
    from pylon.runtime import Resolver
    from pylon.trust import TrustPolicy

    res.available = True
    say("dynlink: building the cap (cached)")
    built = build_cap(manifest.dir)
    res.artifact, res.artifact_bytes = "dynlink component", built.path.stat().st_size
    store = BlobStore(work / "blobs")
    digest = store.put_file(built.path)
    cold = nonced_cap(built.path, work / "cold.wasm")
    cold_digest = store.put_file(cold)
    name, cold_name = manifest.name, f"{manifest.name}-cold"[:64]
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps({"pylon-plan": 1, "caps": {
        name: {"digest": digest, "sources": [], "limits": CAP_LIMITS},
        cold_name: {"digest": cold_digest, "sources": [], "limits": CAP_LIMITS},
    }}))
    # Trusted here, in memory only: the cap was just built from the folder given.
    trust = TrustPolicy(path=work / "trust.json", allow={name: {digest}, cold_name: {cold_digest}})
    guest = _Guest(work, data)
    guest.resolver = Resolver(Plan.load(plan_file), str(plan_file), store=store, trust=trust,
                              report=guest.reports.append)
    bench = manifest.bench
    assert bench is not None

    def run(kind: str, size: int) -> dict[str, Any]:
        return guest.run(_job(manifest, "dynlink", call, kind, size, data, settings))

    _tiny_and_bulk(run, res, bench.bulk, bench.tiny_bytes, settings, say, "dynlink")

    # First resolve, each on a fresh engine (as a new process has): the
    # guest itself comes from the disk cache, the cap cold or warm.
    res.first_resolve = {}
    get_engine().precompile(str(built.path), digest)
    for case, cap_name in (("cold", cold_name), ("warm", name)):
        samples, firsts = [], []
        for i in range(settings.resolves):
            say(f"dynlink: first resolve, {case} compile cache ({i + 1}/{settings.resolves})")
            if case == "cold":
                drop_compiled(cold_digest)
            engine = _engine.Engine(str(paths.compiled_root()))
            try:
                got = guest.run(_job(manifest, "dynlink", call, "resolve", bench.tiny_bytes, data, settings,
                                     name=cap_name), engine=engine)
            finally:
                guest.forget(engine)
            samples.append(float(got["resolve_ns"] + got["first_call_ns"]))
            firsts.append(float(got["first_call_ns"]))
        res.first_resolve[case] = {**_ms(samples), "first_call": _ms(firsts)}
    drop_compiled(cold_digest)
    return res


def _embedded(res: ModeResult, manifest: Manifest, call: BenchCall, settings: Settings, work: Path, data: Path,
              say: Progress) -> ModeResult:
    face = manifest.embedded
    assert face is not None and manifest.bench is not None
    if not face.stock:
        res.why = ("not built (the stock pylon.wasm leaves it out: [embedded].stock = false; "
                   "compose a guest with it: composectl build --with " + manifest.name + ")")
        return res
    res.available = True
    guest = _Guest(work, data)

    def run(kind: str, size: int) -> dict[str, Any]:
        return guest.run(_job(manifest, "embedded", call, kind, size, data, settings))

    if not _tiny_and_bulk(run, res, manifest.bench.bulk, manifest.bench.tiny_bytes, settings, say, "embedded"):
        return res
    try:
        from pylon.build.embedded import build_embedded_cap

        say("embedded: the cap's component (cached build)")
        path = build_embedded_cap(manifest.name)
        res.artifact, res.artifact_bytes = "embedded component (plugged into pylon.wasm)", path.stat().st_size
    except PylonError as exc:
        res.notes.append(f"size unknown: {exc}")
    return res


#: The static run's script: MicroPython has no time, json or os here; the
#: host times the whole run, so everything but the calls is the same for N
#: and for 0 calls.
_STATIC_SCRIPT = """\
import sys
{imports}
_f = open(sys.argv[1], "rb")
data = _f.read(int(sys.argv[2]))
_f.close()
{setup}
_fn = lambda: {call}
_fn()
for _ in range(int(sys.argv[3])):
    _fn()
"""


def _static(res: ModeResult, manifest: Manifest, call: BenchCall, settings: Settings, work: Path, data: Path,
            say: Progress) -> ModeResult:
    from pylon.build.micropython import build_micropython
    from pylon.static_runner import backend, run_script

    assert manifest.bench is not None
    say("static: building the MicroPython static module with the cap (cached; minutes the first time)")
    try:
        module = build_micropython([manifest.dir.name], "exnref", caps_dir=manifest.dir.parent)
    except PylonError as exc:
        res.why = f"n/a (the static build failed: {short_error(exc)})"
        return res
    res.available = True
    res.artifact, res.artifact_bytes = "whole static module (MicroPython + the cap)", module.stat().st_size
    res.notes.append(f"host-timed runs on {backend()}: (t(N calls) - t(0 calls)) / N")
    script = work / "static_bench.py"
    script.write_text(_STATIC_SCRIPT.format(imports=call.imports, setup=call.setup, call=call.call))
    env = [("PYLON_MP_HEAP", STATIC_HEAP)]

    def timed(size: int, n: int) -> float:
        t0 = time.perf_counter_ns()
        code = run_script(module, script, [str(data), str(size), str(n)], env, dirs=[str(data.parent)])
        dt = time.perf_counter_ns() - t0
        if code != 0:
            raise PylonError(f"the static module exited {code} (its stderr above says why)")
        return float(dt)

    def per_call(size: int) -> list[float]:
        base = min(timed(size, 0) for _ in range(2))
        n = 4
        while True:  # calls enough that they dominate a run's start-up noise
            dt = timed(size, n) - base
            if dt > settings.target_s * 1e8 or n >= 1 << 22:
                break
            n *= 4
        n = min(1 << 24, max(n, int(n * settings.target_s * 1e9 / max(dt, 1.0))))
        out = []
        for _ in range(settings.repeats):
            zero, full = timed(size, 0), timed(size, n)  # interleaved: a burst of load hits both
            out.append(max(full - zero, 1.0) / n)
        return out

    def run(kind: str, size: int) -> dict[str, Any]:
        return {"samples_ns": per_call(size)}

    _tiny_and_bulk(run, res, manifest.bench.bulk, manifest.bench.tiny_bytes, settings, say, "static")
    return res


_MEASURE: dict[str, Callable[..., ModeResult]] = {"dynlink": _dynlink, "embedded": _embedded, "static": _static}


@contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pylon-bench-") as tmp:
        yield Path(tmp)


def bench_cap(cap: str | Path, settings: Settings, say: Progress = lambda _m: None) -> dict[str, Any]:
    """Measures the cap in every mode it has; returns every figure (JSON-ready).

    Raises:
        PylonError: not a cap, a broken manifest, or a cap without ``[bench]``.
    """
    cap_dir = find_cap(str(cap))
    manifest = load_manifest(cap_dir)
    if manifest.bench is None:
        raise PylonError(f"cap {manifest.name!r} has no [bench] table in {manifest.file}: add one saying what "
                         "to call in each face (docs/caps.md, \"Benchmarks\")")
    bench = manifest.bench
    raw = read_toml(manifest.file)
    faces = {"dynlink": manifest.dynlink is not None, "embedded": manifest.embedded is not None,
             "static": manifest.static is not None}
    handles = handles_per_mode(manifest)
    modes: dict[str, ModeResult] = {}
    with _workdir() as work:
        data = work / "data" / "payload.bin"
        data.parent.mkdir()
        sizes = [bench.tiny_bytes] + (list(settings.sizes) if bench.bulk else [])
        say(f"making {_size(max(sizes))} of test data")
        make_data(data, max(sizes))
        for mode in MODES:
            call = bench.faces.get(mode)
            if not faces[mode]:
                why = f"n/a (no [{mode}] face)"
                if mode == "embedded" and "embedded" in raw:
                    why = "n/a (an [embedded] face builds only from the source tree's caps/)"
                modes[mode] = ModeResult(why=why)
            elif call is None:
                modes[mode] = ModeResult(why=f"n/a (cap.toml has no [bench.{mode}] entry)")
            else:
                mode_dir = work / mode
                mode_dir.mkdir()
                res = modes[mode] = ModeResult()
                try:
                    _MEASURE[mode](res, manifest, call, settings, mode_dir, data, say)
                except PylonError as exc:
                    # What was measured before the failure (the size, say) stays.
                    res.available, res.why = False, f"failed: {short_error(exc)}"
            modes[mode].handles = handles[mode]
    from pylon import _engine

    return {
        "cap": manifest.name,
        "version": manifest.version,
        "quick": settings.quick,
        "settings": asdict(settings),
        "bulk": bench.bulk,
        "note": bench.note,
        "method": METHOD,
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "wasmtime": _engine.WASMTIME_VERSION},
        "modes": {m: asdict(r) for m, r in modes.items()},
    }


METHOD = ("CPython guest (dynlink, embedded): time.perf_counter_ns inside pylon.wasm around batches of calls "
          "sized to ~target_s each, ns per call per batch, median and best of the batches; each bulk size in "
          "a guest run of its own. Static: host-timed whole runs of the MicroPython module, per call "
          "(t(N calls) - t(0 calls)) / N from interleaved pairs, median and best. First resolve: "
          "dynlink.load + the first call, one per run on a fresh engine; cold = a never-compiled copy of the "
          "cap, warm = its compiled artifact on disk.")
