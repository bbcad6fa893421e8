"""The embedding API (``pylon.Sandbox``) and the CLI, side by side with eryx.

    python benchmarks/bench_embedding.py [--quick] [--json OUT.json]

(also the last section of ``benchmarks/run_all.py``, so ``make bench``).
Every figure is measured in one invocation, both sides interleaved, and
printed with its ratio; docs/benchmarks.md ("The embedding API") has a run.

Each side runs in a worker process of its own, driven by this one over a
pipe (one JSON line per command and per reply), so both are measured the
same way: ``python bench_embedding.py --worker pylon`` under this venv's
Python, ``--worker eryx`` under the eryx venv's. A worker loads its engine,
makes its sandboxes and warms up (20 runs of each kind) before it says it is
ready; then the rounds alternate the two sides (A B, then B A) batch by batch:

* **fresh run**: ``Sandbox.run("print('hello')")`` on a sandbox made once
  (each run a new instance), with Pylon's default private ``/tmp`` per run
  and with ``tmp_mb=0`` (no ``/tmp``: no folder made, watched and removed),
  plus the default with the host's temporary folder moved to ``/dev/shm``
  when it is not a tmpfs already (the folder's cost is the file system's);
  and "create + run" (a new ``Sandbox`` per sample). eryx: ``execute`` on
  one ``eryx.Sandbox`` and ``eryx.Sandbox().execute``. 10 rounds of 20.
  "Paced": the same runs with an untimed 10 ms pause before each, as an
  interactive host makes them (work a side defers past its return, such as
  freeing the last instance, is then done before the next run starts).
* **session**: ``Session.run("x = 1")`` (eryx: ``Session.execute``). 10 rounds of 50.
* **host-cap tiny call**, timed inside the guest with ``time.perf_counter``:
  a loop of N calls divided by N, beside a loop of N calls of a no-op
  Python function in the same guest (5 batches each, alternating; median and
  best batch). Pylon: ``dynlink.load("bench").invoke("noop")`` (raw bytes,
  empty payload) and ``.call("noop")`` (CBOR) on a host cap
  ``caps={"bench": {"noop": noop}}``; the host cap's Python handler alone
  (``pylon.hostcaps``) is timed on the host as well, and the guest loop is
  run once more against a bare ``lambda method, payload: ...`` handed to the
  engine (the floor without that layer). eryx:
  ``await bench_noop()``, a callback. 3 guest runs per side.
* **runs per second** with 1 and 2 threads sharing one sandbox, fixed 1 s
  windows, 3 rounds (median and best round).
* **RSS**: in a fresh worker (warm: one sandbox and one session used), the
  growth of ``VmRSS`` (and its parts ``RssAnon``, ``RssFile``, ``RssShmem``,
  and ``VmPTE``) from ``/proc/self/status`` over 16
  live sandboxes, each used once, then over 16 live sessions, each having
  run ``x = 1``, then over 16 more whose first call was a full collection
  (``gc.collect()``: what a long-lived session meets sooner or later);
  divided by 16.
* **CLI**: ``composectl run examples/hello.py`` (this venv's) vs
  ``python -c pass`` vs ``eryx examples/hello.py`` vs the eryx venv's
  ``python -c pass``, whole processes, interleaved, 2 warm-up rounds then 15.
  Bytecode is cached (``PYTHONPYCACHEPREFIX`` in the cache folder,
  ``PYTHONDONTWRITEBYTECODE`` unset) as an installed package has it; when the
  caller's environment sets ``PYTHONDONTWRITEBYTECODE``, ``composectl run``
  is also timed as that environment runs it. The split: a process that only
  imports the CLI's run path, and one that does a run's steps through
  pylon's API, timing each inside (imports, plan and trust, ``Engine()``,
  ``prepare_guest``: the compiled guest's load, the first and a second run,
  dropping the engine).

**eryx** is the PyPI package ``pyeryx`` (cp312 abi3 wheels only), in a
Python 3.12 venv outside the repository::

    python3.12 -m venv ~/.cache/pylon/eryx-venv     # e.g. ~/.pyenv/versions/3.12.*/bin/python3.12
    ~/.cache/pylon/eryx-venv/bin/pip install pyeryx==0.11.0

``PYLON_ERYX_VENV`` names another venv. Without one, the eryx side is
skipped with a note and everything else runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
HELLO_CODE = "print('hello')"
HELLO_SCRIPT = REPO / "examples" / "hello.py"
ERYX_VENV = Path(os.environ.get("PYLON_ERYX_VENV", Path.home() / ".cache" / "pylon" / "eryx-venv"))

ROUNDS, BATCH, SESSION_BATCH = 10, 20, 50
#: Runs also timed one every GAP seconds (the sleep untimed), as an
#: interactive host calls: work a side defers past its return then has
#: finished before the next run.
PACED, GAP = {"pylon": ("run", "run_tmp0"), "eryx": ("run",)}, 0.01
WARMUP = 20
HOSTCAP_RUNS, HOSTCAP_BATCHES = 3, 5
RATE_ROUNDS, RATE_SECONDS = 3, 1.0
RSS_K = 16
#: A session's first call for the "collected" row of the RSS table: a full
#: collection, which a long-lived session meets sooner or later.
COLLECT = "import gc; gc.collect()"
CLI_WARMUP, CLI_RUNS = 2, 15

#: Issue 10's targets and a colleague's eryx figures (not re-measured: for reference).
TARGETS = {"fresh_ms": 1.0, "session_ms": 0.1, "cli_over_ms": 20.0, "hostcap_us": 2.0}
ERYX_COLLEAGUE = {"fresh_ms": 1.36, "session_ms": 0.086, "rss_sandbox_mib": "0.9-1.8",
                  "rss_session_mib": "6.6-6.9", "cli_ms": 113}


# -- the workers (stdlib only at import time: the eryx one runs on Python 3.12) --

def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _rss() -> dict:
    gc.collect()
    return {"rss": _status_kib("VmRSS"), "anon": _status_kib("RssAnon"), "file": _status_kib("RssFile"),
            "shmem": _status_kib("RssShmem"), "pte": _status_kib("VmPTE")}


def scratch_parent() -> str:
    """Where a default run's folder goes (``$TMPDIR``, else ``/dev/shm``, else the system's)."""
    from pylon.scratch import _scratch_parent
    return _scratch_parent()


def mount_of(path: str) -> tuple[str, str, str]:
    """(mount point, file system type, options) of the mount holding ``path``."""
    best = ("/", "?", "")
    real = os.path.realpath(path)
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, point, fstype, options = line.split()[:4]
            if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
                best = (point, fstype, options)
    except OSError:
        pass
    return best


def _timed(fn, n: int, gap: float = 0.0) -> list[float]:
    out = []
    for _ in range(n):
        if gap:
            time.sleep(gap)
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _rate(fn, threads: int, seconds: float) -> float:
    """Calls of ``fn`` per second, ``threads`` threads calling it for ``seconds``."""
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def loop(i: int) -> None:
        start.wait()
        while time.perf_counter() < deadline[0]:
            fn()
            counts[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start.wait()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - t0)


#: The guest half of the host-cap measure: N calls per batch, batches alternating.
PYLON_HOSTCAP = """
import json, time
from pylon_guest import dynlink
cap = dynlink.load("bench")
inv, call = cap.invoke, cap.call
def noop(): pass
def b_invoke(n):
    t = time.perf_counter()
    for _ in range(n): inv("noop")
    return time.perf_counter() - t
def b_call(n):
    t = time.perf_counter()
    for _ in range(n): call("noop")
    return time.perf_counter() - t
def b_py(n):
    t = time.perf_counter()
    for _ in range(n): noop()
    return time.perf_counter() - t
out = {"invoke": [], "call": [], "py": []}
b_invoke(200); b_call(200); b_py(2000)
try:  # a wasm cap of the plan (no Python on the host side), for comparison
    winv = dynlink.load("crc32c").invoke
    def b_wasm(n):
        t = time.perf_counter()
        for _ in range(n): winv("crc32c", b"123456789")
        return time.perf_counter() - t
    b_wasm(200)
    out["wasm_cap"] = []
except Exception:
    b_wasm = None
for _ in range(BATCHES):
    out["invoke"].append(b_invoke(N_CAP) / N_CAP)
    out["call"].append(b_call(N_CAP) / N_CAP)
    out["py"].append(b_py(N_PY) / N_PY)
    if b_wasm is not None:
        out["wasm_cap"].append(b_wasm(N_CAP) / N_CAP)
print(json.dumps(out))
"""

ERYX_HOSTCAP = """
import json, time
def noop(): pass
async def b_cb(n):
    t = time.perf_counter()
    for _ in range(n): await bench_noop()
    return time.perf_counter() - t
def b_py(n):
    t = time.perf_counter()
    for _ in range(n): noop()
    return time.perf_counter() - t
out = {"callback": [], "py": []}
await b_cb(50); b_py(2000)
for _ in range(BATCHES):
    out["callback"].append(await b_cb(N_CAP) / N_CAP)
    out["py"].append(b_py(N_PY) / N_PY)
print(json.dumps(out))
"""


#: composectl run's steps, timed inside one fresh process (the CLI does the
#: same through pylon.runtime.run, plus its argument parsing and /tmp).
SPLIT_SCRIPT = """
import json, time
t0 = time.perf_counter()
from pylon import _engine, paths
from pylon.blobstore import BlobStore
from pylon.runtime import guest_blob, load_plan
from pylon.trust import TrustPolicy
t1 = time.perf_counter()
plan, _ = load_plan(None)
blob, digest, _, _ = guest_blob(plan, BlobStore(), TrustPolicy.load())
t2 = time.perf_counter()
engine = _engine.Engine(str(paths.compiled_root()))
t3 = time.perf_counter()
guest = engine.prepare_guest(str(blob), digest)
t4 = time.perf_counter()
folder = HELLO_DIR
out = guest.run([folder + "/hello.py"], [], folder, preopens=[(folder, folder, True)])
t5 = time.perf_counter()
out = guest.run([folder + "/hello.py"], [], folder, preopens=[(folder, folder, True)])
t6 = time.perf_counter()
assert out.status == 0, out.stderr
del guest, engine
t7 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "plan_trust": t2 - t1, "engine_new": t3 - t2,
                  "prepare_guest": t4 - t3, "first_run": t5 - t4, "second_run": t6 - t5, "drop": t7 - t6}))
"""


def _guest_code(template: str, n_cap: int, n_py: int = 200_000) -> str:
    return (template.replace("BATCHES", str(HOSTCAP_BATCHES)).replace("N_CAP", str(n_cap))
            .replace("N_PY", str(n_py)))


class PylonSide:
    name = "pylon"

    def __init__(self) -> None:
        import pylon  # noqa: PLC0415
        import pylon.hostcaps  # noqa: PLC0415

        self.pylon = pylon
        self.version = pylon.__version__
        self.sb = pylon.Sandbox()
        self.sb0 = pylon.Sandbox(tmp_mb=0)
        self.capsb = pylon.Sandbox(tmp_mb=0, caps={"bench": {"noop": lambda: None}})
        self.session = pylon.Session(self.sb)
        self.handler = pylon.hostcaps.host_cap_handler("bench", {"noop": lambda: None}, print)
        self.runs = {
            "run": lambda: self._hello(self.sb),
            "run_tmp0": lambda: self._hello(self.sb0),
            "create_run": lambda: self._hello(pylon.Sandbox()),
            "create_run_tmp0": lambda: self._hello(pylon.Sandbox(tmp_mb=0)),
        }
        # The default again with the runs' folders on a tmpfs, when the usual
        # place is not one (each run makes and removes a folder there).
        if mount_of(scratch_parent())[1] != "tmpfs" and mount_of("/dev/shm")[1] == "tmpfs":
            self.runs["run_tmpfs"] = lambda: self._in_tmpdir("/dev/shm", lambda: self._hello(self.sb))

    @staticmethod
    def _in_tmpdir(folder: str, fn) -> None:
        saved, tempfile.tempdir = tempfile.tempdir, folder
        try:
            fn()
        finally:
            tempfile.tempdir = saved

    @staticmethod
    def _hello(sb) -> None:
        r = sb.run(HELLO_CODE)
        if r.stdout != b"hello\n":
            raise RuntimeError(f"unexpected result {r}")

    def session_run(self) -> None:
        r = self.session.run("x = 1")
        if r.exit_code != 0:
            raise RuntimeError(f"unexpected result {r}")

    def hostcap(self) -> dict:
        r = self.capsb.run(_guest_code(PYLON_HOSTCAP, 5000))
        if not r.ok:
            raise RuntimeError(r.stderr.decode())
        out = json.loads(r.stdout)
        # The floor: the same guest loop against a host cap whose handler is
        # a bare ``lambda method, payload: b""`` given to the engine directly
        # (no pylon.hostcaps layer; Cap.call's CBOR reply then fails, so only
        # invoke counts).
        from pylon.engine import HostCapSpec  # noqa: PLC0415

        bare = HostCapSpec(name="bench", handler=lambda method, payload: b"\xf6", max_payload_bytes=1 << 20)
        plan_caps = self.capsb._resolver
        outcome = self.capsb._guest.run(["-c", _guest_code(PYLON_HOSTCAP, 5000)], [], "/",
                                        resolver=lambda name: bare if name == "bench" else plan_caps(name),
                                        memory_bytes=self.capsb._memory_bytes)
        if outcome.status != 0:
            raise RuntimeError(outcome.stderr.decode())
        out["invoke_bare_handler"] = json.loads(outcome.stdout)["invoke"]
        # The host cap's Python side alone (what the engine calls per invoke).
        h, n = self.handler, 20_000
        h("noop", b"")
        t0 = time.perf_counter()
        for _ in range(n):
            h("noop", b"")
        out["host_handler"] = [(time.perf_counter() - t0) / n]
        return out

    def live_sandbox(self):
        sb = self.pylon.Sandbox()
        self._hello(sb)
        return sb

    def live_session(self):
        s = self.pylon.Session(self.sb)
        s.run("x = 1")
        return s

    def live_session_collected(self):
        s = self.pylon.Session(self.sb)
        s.run(COLLECT)
        return s


class EryxSide:
    name = "eryx"

    def __init__(self) -> None:
        import eryx  # noqa: PLC0415

        self.eryx = eryx
        self.version = eryx.__version__
        self.sb = eryx.Sandbox()
        limits = eryx.ResourceLimits(max_callback_invocations=None)
        self.capsb = eryx.Sandbox(callbacks=[{"name": "bench_noop", "fn": lambda: None}],
                                  resource_limits=limits)
        self.session = eryx.Session()
        self.runs = {
            "run": lambda: self._hello(self.sb),
            "create_run": lambda: self._hello(eryx.Sandbox()),
        }

    @staticmethod
    def _hello(sb) -> None:
        r = sb.execute(HELLO_CODE)
        if r.stdout != b"hello\n":
            raise RuntimeError(f"unexpected output {r.stdout!r}")

    def session_run(self) -> None:
        self.session.execute("x = 1")

    def hostcap(self) -> dict:
        return json.loads(self.capsb.execute(_guest_code(ERYX_HOSTCAP, 500)).stdout)

    def live_sandbox(self):
        sb = self.eryx.Sandbox()
        self._hello(sb)
        return sb

    def live_session(self):
        s = self.eryx.Session()
        s.execute("x = 1")
        return s

    def live_session_collected(self):
        s = self.eryx.Session()
        s.execute(COLLECT)
        return s


def worker(side_name: str) -> int:
    # Replies go to the original stdout; anything else printed goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        side = PylonSide() if side_name == "pylon" else EryxSide()
        for fn in side.runs.values():
            for _ in range(WARMUP):
                fn()
        for _ in range(WARMUP):
            side.session_run()
        side.hostcap()
    except Exception as exc:  # noqa: BLE001 - reported to the controller, which skips the side
        proto.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1
    proto.write(json.dumps({"ready": True, "version": side.version, "python": sys.version.split()[0],
                            "variants": list(side.runs)}) + "\n")
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "quit":
            break
        if op == "run":
            reply: object = _timed(side.runs[cmd["variant"]], cmd["n"], cmd.get("gap", 0.0))
        elif op == "session":
            reply = _timed(side.session_run, cmd["n"])
        elif op == "hostcap":
            reply = side.hostcap()
        elif op == "rate":
            reply = _rate(side.runs[cmd["variant"]], cmd["threads"], cmd["seconds"])
        elif op == "rss":
            k, keep = cmd["k"], []
            before = _rss()
            keep += [side.live_sandbox() for _ in range(k)]
            mid = _rss()
            keep += [side.live_session() for _ in range(k)]
            after = _rss()
            keep += [side.live_session_collected() for _ in range(k)]
            collected = _rss()
            reply = {key: {"sandbox": (mid[key] - before[key]) / k / 1024,
                           "session": (after[key] - mid[key]) / k / 1024,
                           "collected": (collected[key] - after[key]) / k / 1024} for key in before}
            reply["base_mib"] = before["rss"] / 1024
        else:
            raise ValueError(op)
        proto.write(json.dumps({"reply": reply}) + "\n")
    return 0


# -- the controller ------------------------------------------------------------

class Worker:
    """One side's worker process; :meth:`ask` sends a command and returns the reply."""

    def __init__(self, python: str, side: str, env: dict | None = None):
        self.side = side
        self.proc = subprocess.Popen([python, str(HERE), "--worker", side], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        hello = self._read()
        if "error" in hello:
            self.close()
            raise RuntimeError(f"{side} worker: {hello['error']}")
        self.info = hello

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.side} worker ended (exit status {self.proc.wait()})")
        return json.loads(line)

    def ask(self, op: str, **kw: object) -> object:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        return self._read()["reply"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.wait(30)


def eryx_python() -> Path | None:
    py = ERYX_VENV / "bin" / "python"
    return py if py.exists() else None


def _stats(samples: list[float]) -> dict:
    return {"median": statistics.median(samples), "best": min(samples), "n": len(samples)}


def _log(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def measure_inprocess(pylon_py: str, eryx_py: Path | None, quick: bool) -> dict:
    """Fresh runs, sessions, host caps, runs/s (both workers alive, interleaved)."""
    rounds = 4 if quick else ROUNDS
    _log("embedding: starting the workers (each warms up)")
    sides = [Worker(pylon_py, "pylon")]
    notes = []
    if eryx_py is not None:
        try:
            sides.append(Worker(str(eryx_py), "eryx"))
        except RuntimeError as exc:
            notes.append(f"eryx skipped: {exc}")
    else:
        notes.append(f"eryx skipped: no venv at {ERYX_VENV} (see bench_embedding.py's docstring to make one)")
    res: dict = {"notes": notes, "info": {w.side: w.info for w in sides}}
    try:
        runs = {w.side: {v: [] for v in w.info["variants"]} for w in sides}
        sess: dict = {w.side: [] for w in sides}
        _log(f"embedding: fresh runs and session calls, {rounds} rounds, sides alternating")
        for r in range(rounds):
            order = sides if r % 2 == 0 else sides[::-1]
            for w in order:
                for v in w.info["variants"]:
                    runs[w.side][v] += w.ask("run", variant=v, n=BATCH)
                for v in PACED[w.side]:
                    runs[w.side].setdefault(v + "@paced", []).extend(w.ask("run", variant=v, n=BATCH, gap=GAP))
                sess[w.side] += w.ask("session", n=SESSION_BATCH)
        res["run"] = {s: {v: _stats(x) for v, x in d.items()} for s, d in runs.items()}
        res["session"] = {s: _stats(x) for s, x in sess.items()}

        _log(f"embedding: host-cap tiny calls, {HOSTCAP_RUNS} guest runs per side")
        caps: dict = {w.side: {} for w in sides}
        for r in range(HOSTCAP_RUNS):
            for w in (sides if r % 2 == 0 else sides[::-1]):
                for k, v in w.ask("hostcap").items():
                    caps[w.side].setdefault(k, []).extend(v)
        res["hostcap"] = {s: {k: _stats(v) for k, v in d.items()} for s, d in caps.items()}

        _log(f"embedding: runs per second, 1 and 2 threads, {RATE_ROUNDS} rounds of {RATE_SECONDS} s")
        rates: dict = {}
        for r in range(RATE_ROUNDS):
            for w in (sides if r % 2 == 0 else sides[::-1]):
                for v in ("run", "run_tmp0") if w.side == "pylon" else ("run",):
                    for t in (1, 2):
                        rates.setdefault(w.side, {}).setdefault(f"{v}/{t}", []).append(
                            w.ask("rate", variant=v, threads=t, seconds=RATE_SECONDS))
        res["rate"] = {s: {k: {"median": statistics.median(v), "best": max(v)} for k, v in d.items()}
                       for s, d in rates.items()}
    finally:
        for w in sides:
            w.close()

    _log(f"embedding: RSS over {RSS_K} live sandboxes / sessions, a fresh worker per side")
    res["rss"] = {}
    for py, side in ((pylon_py, "pylon"), (str(eryx_py) if eryx_py else None, "eryx")):
        if py is None or side not in res["info"]:
            continue
        w = Worker(py, side)
        try:
            res["rss"][side] = w.ask("rss", k=RSS_K)
        finally:
            w.close()
    return res


def measure_cli(pylon_py: str, eryx_py: Path | None, quick: bool) -> dict:
    """Whole processes, interleaved: composectl run hello.py, eryx hello.py, python -c pass."""
    from pylon import paths  # noqa: PLC0415

    env = dict(os.environ)
    env.pop("RUST_BACKTRACE", None)
    as_is = env.get("PYTHONDONTWRITEBYTECODE")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(paths.cache_root() / "bench-pycache")
    env["PATH"] = f"{Path(pylon_py).parent}{os.pathsep}{env.get('PATH', '')}"
    bindir = Path(pylon_py).parent
    cmds = {
        "python_pass": [pylon_py, "-c", "pass"],
        "composectl_run": [str(bindir / "composectl"), "run", str(HELLO_SCRIPT)],
        "cli_imports": [pylon_py, "-c", "import pylon.cli.entry, pylon.runtime"],
        "split": [pylon_py, "-c", SPLIT_SCRIPT.replace("HELLO_DIR", repr(str(HELLO_SCRIPT.parent)))],
    }
    envs = {k: env for k in cmds}
    # In-process runs even if the user has a server running (with this environment).
    envs["composectl_run"] = {**env, "PYLON_SERVER": "0"}
    # Served: a server of the bench's own (docs/server.md), in a private folder.
    server_dir = tempfile.mkdtemp(prefix="pylon-bench-server-")
    served_env = {**env, "PYLON_SERVER_DIR": server_dir}
    composectl = str(bindir / "composectl")
    _log("CLI: starting a server (composectl server start)")
    subprocess.run([composectl, "server", "start", "--idle-timeout", "900"], env=served_env, cwd=REPO,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cmds["composectl_served"] = cmds["composectl_run"]
    envs["composectl_served"] = served_env
    if as_is:
        cmds["composectl_run_no_pyc"] = cmds["composectl_run"]
        envs["composectl_run_no_pyc"] = {**envs["composectl_run"], "PYTHONDONTWRITEBYTECODE": as_is}
        envs["composectl_run_no_pyc"].pop("PYTHONPYCACHEPREFIX")
    if eryx_py is not None:
        cmds["eryx_python_pass"] = [str(eryx_py), "-c", "pass"]
        cmds["eryx_run"] = [str(eryx_py.parent / "eryx"), str(HELLO_SCRIPT)]
        envs["eryx_python_pass"] = envs["eryx_run"] = env
    runs = 6 if quick else CLI_RUNS
    _log(f"CLI: {len(cmds)} commands, {CLI_WARMUP} warm-up rounds + {runs}, interleaved")
    samples: dict = {k: [] for k in cmds}
    inside: dict = {}
    try:
        for i in range(CLI_WARMUP + runs):
            for k, cmd in cmds.items():
                t0 = time.perf_counter()
                done = subprocess.run(cmd, stdout=subprocess.PIPE if k == "split" else subprocess.DEVNULL,
                                      check=True, env=envs[k], cwd=REPO)
                if i >= CLI_WARMUP:
                    samples[k].append(time.perf_counter() - t0)
                    if k == "split":
                        for step, secs in json.loads(done.stdout).items():
                            inside.setdefault(step, []).append(secs)
        status = subprocess.run([composectl, "server", "status"], env=served_env, capture_output=True, text=True)
        served = int(status.stdout.split("runs=")[1].split()[0]) if "runs=" in status.stdout else 0
        if served < CLI_WARMUP + runs:
            raise RuntimeError(f"the server served {served} runs of {CLI_WARMUP + runs}: not measuring what it says")
    finally:
        subprocess.run([composectl, "server", "stop"], env=served_env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(server_dir, ignore_errors=True)
    out = {k: _stats(v) for k, v in samples.items()}
    out["split_steps"] = {k: _stats(v) for k, v in inside.items()}
    return out


def _ms(x: float) -> str:
    return f"{x * 1e3:8.2f}"


def report(res: dict, cli: dict) -> None:
    info = res["info"]
    load = os.getloadavg()
    er = "eryx" in info
    print(f"\nThe embedding API and the CLI, side by side with eryx (load {load[0]:.1f} {load[1]:.1f} "
          f"{load[2]:.1f}; pylon {info['pylon']['version']} on CPython {info['pylon']['python']}"
          + (f"; eryx {info['eryx']['version']} on CPython {info['eryx']['python']})" if er else ")"))
    for note in res["notes"]:
        print(f"   NOTE: {note}")
    parent = scratch_parent()
    point, fstype, options = mount_of(parent)
    print(f"   where each default run makes and removes its private /tmp (pylon.scratch): "
          f"{parent}, on {point} ({fstype}, {options})")
    p, e = res["run"]["pylon"], res["run"].get("eryx", {})
    print(f"   fresh run of print('hello'), warm, ms (median / best of {p['run']['n']}: "
          f"{p['run']['n'] // BATCH} rounds of {BATCH}, sides alternating, after {WARMUP} warm-up runs)")
    rows = [("Sandbox.run, default (a private /tmp per run)", p["run"]),
            ("Sandbox.run, tmp_mb=0 (no /tmp)", p["run_tmp0"]),
            *([("Sandbox.run, default, the host's temporary folder on tmpfs", p["run_tmpfs"])]
              if "run_tmpfs" in p else []),
            ("Sandbox() + run, default", p["create_run"]),
            ("Sandbox(tmp_mb=0) + run", p["create_run_tmp0"])]
    if er:
        rows += [("eryx: Sandbox.execute (one sandbox, a fresh instance each)", e["run"]),
                 ("eryx: Sandbox() + execute", e["create_run"])]
    rows += [(f"paced, {GAP * 1e3:.0f} ms pause before each: Sandbox.run, default", p["run@paced"]),
             ("  Sandbox.run, tmp_mb=0", p["run_tmp0@paced"])]
    if er:
        rows += [("  eryx: Sandbox.execute", e["run@paced"])]
    for name, s in rows:
        print(f"   {name:<62}{_ms(s['median'])} / {_ms(s['best'])}")
    if er:
        print(f"   ratio pylon/eryx (medians): run {p['run']['median'] / e['run']['median']:.2f}x, "
              f"run tmp_mb=0 {p['run_tmp0']['median'] / e['run']['median']:.2f}x, "
              f"create + run {p['create_run']['median'] / e['create_run']['median']:.2f}x, "
              f"create + run tmp_mb=0 {p['create_run_tmp0']['median'] / e['create_run']['median']:.2f}x;  "
              f"paced: default {p['run@paced']['median'] / e['run@paced']['median']:.2f}x, tmp_mb=0 "
              f"{p['run_tmp0@paced']['median'] / e['run@paced']['median']:.2f}x")

    s = res["session"]
    print(f"   Session.run('x = 1'), ms (median / best of {s['pylon']['n']}): pylon "
          f"{_ms(s['pylon']['median'])} / {_ms(s['pylon']['best'])}"
          + (f";  eryx {_ms(s['eryx']['median'])} / {_ms(s['eryx']['best'])};  ratio "
             f"{s['pylon']['median'] / s['eryx']['median']:.2f}x" if er else ""))

    h = res["hostcap"]
    hp = h["pylon"]
    print(f"   host-cap tiny call inside the guest, us per call (median / best of {hp['invoke']['n']} "
          f"batches in {HOSTCAP_RUNS} runs):")
    print(f"     pylon Cap.invoke('noop') (raw bytes)  {hp['invoke']['median'] * 1e6:8.2f} / "
          f"{hp['invoke']['best'] * 1e6:.2f};  Cap.call('noop') (CBOR) {hp['call']['median'] * 1e6:.2f};  "
          f"a Python no-op call in the guest {hp['py']['median'] * 1e6:.3f} "
          f"(invoke = {hp['invoke']['median'] / hp['py']['median']:.0f}x)")
    print(f"     of which the host cap's Python handler (pylon.hostcaps), timed on the host: "
          f"{hp['host_handler']['median'] * 1e6:.2f} us; the same loop with a bare "
          f"lambda handler given to the engine: {hp['invoke_bare_handler']['median'] * 1e6:.2f} us per invoke")
    if "wasm_cap" in hp:
        print(f"     for comparison, a wasm cap of the plan in the same guest loop, "
              f"dynlink.load('crc32c').invoke('crc32c', 9 bytes): {hp['wasm_cap']['median'] * 1e6:.2f} us")
    if er:
        he = h["eryx"]
        print(f"     eryx await bench_noop() (callback)    {he['callback']['median'] * 1e6:8.2f} / "
              f"{he['callback']['best'] * 1e6:.2f};  a Python no-op call {he['py']['median'] * 1e6:.3f};  "
              f"pylon invoke / eryx callback {hp['invoke']['median'] / he['callback']['median']:.3f}x")

    r = res["rate"]
    print(f"   runs per second of print('hello') on one sandbox (median / best of {RATE_ROUNDS} x "
          f"{RATE_SECONDS:.0f} s):")
    for side, v, name in (("pylon", "run", "pylon, default"), ("pylon", "run_tmp0", "pylon, tmp_mb=0"),
                          ("eryx", "run", "eryx")):
        if side in r:
            one, two = r[side][f"{v}/1"], r[side][f"{v}/2"]
            print(f"     {name:<18} 1 thread {one['median']:7.0f} / {one['best']:.0f};  2 threads "
                  f"{two['median']:7.0f} / {two['best']:.0f};  2/1 = {two['median'] / one['median']:.2f}x")

    print(f"   RSS growth per live object, MiB ({RSS_K} of each, fresh worker; VmRSS = RssAnon + RssFile "
          f"+ RssShmem; VmPTE is page tables):")
    for side, x in res["rss"].items():
        for what in ("sandbox", "session", "collected"):
            print(f"     {side:<6}{what:<8} VmRSS {x['rss'][what]:6.2f}  (anon {x['anon'][what]:.2f}, file "
                  f"{x['file'][what]:.2f}, shmem {x['shmem'][what]:.2f}; VmPTE {x['pte'][what]:.2f})")
        print(f"     {side:<6}(the worker held {x['base_mib']:.0f} MiB before)")

    print(f"   whole process, ms (median / best of {cli['python_pass']['n']}, interleaved; bytecode cached):")
    names = {"python_pass": "python -c pass (pylon venv, 3.11)",
             "composectl_run": "composectl run examples/hello.py (warm, in-process)",
             "composectl_run_no_pyc": "  the same, PYTHONDONTWRITEBYTECODE as set here",
             "composectl_served": "composectl run examples/hello.py (served: composectl server)",
             "cli_imports": "python -c 'import pylon.cli.entry, pylon.runtime'",
             "eryx_python_pass": "python -c pass (eryx venv, 3.12)",
             "eryx_run": "eryx examples/hello.py"}
    for k, name in names.items():
        if k in cli:
            print(f"     {name:<56}{_ms(cli[k]['median'])} / {_ms(cli[k]['best'])}")
    sp = {k: v["median"] for k, v in cli["split_steps"].items()}
    print(f"     its steps in one fresh process (pylon's API, no CLI; medians): imports {sp['imports'] * 1e3:.1f}, "
          f"plan + trust {sp['plan_trust'] * 1e3:.1f}, Engine() {sp['engine_new'] * 1e3:.1f}, prepare_guest "
          f"(the compiled guest's load) {sp['prepare_guest'] * 1e3:.1f}, first run of hello.py "
          f"{sp['first_run'] * 1e3:.1f}, second run {sp['second_run'] * 1e3:.1f}, dropping the engine "
          f"{sp['drop'] * 1e3:.1f};  whole process {cli['split']['median'] * 1e3:.1f}")
    over = cli["composectl_run"]["median"] - cli["python_pass"]["median"]
    imports = cli["cli_imports"]["median"] - cli["python_pass"]["median"]
    engine = sp["engine_new"] + sp["prepare_guest"] + sp["first_run"] + sp["drop"]
    print(f"     composectl run - python -c pass = {over * 1e3:.1f} ms: importing the run path "
          f"{imports * 1e3:.1f} ms + engine (Engine(), guest load, first run, drop) {engine * 1e3:.1f} ms "
          f"+ the rest {(over - imports - engine) * 1e3:.1f} ms (plan, trust, /tmp, arguments, threads)")
    if "eryx_run" in cli:
        eo = cli["eryx_run"]["median"] - cli["eryx_python_pass"]["median"]
        print(f"     eryx - its python -c pass = {eo * 1e3:.1f} ms;  composectl / eryx (whole): "
              f"{cli['composectl_run']['median'] / cli['eryx_run']['median']:.2f}x")

    def v(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    c = ERYX_COLLEAGUE
    print(f"   eryx as a colleague measured it elsewhere (not re-measured): create + run {c['fresh_ms']} ms, "
          f"session {c['session_ms']} ms, RSS {c['rss_sandbox_mib']} / {c['rss_session_mib']} MiB, "
          f"eryx -c {c['cli_ms']} ms")
    print("   targets:")
    f = p["run"]["median"] * 1e3
    f0 = p["run_tmp0"]["median"] * 1e3
    print(f"     fresh Sandbox.run <= {TARGETS['fresh_ms']} ms: default {f:.2f} {v(f <= TARGETS['fresh_ms'])}, "
          f"tmp_mb=0 {f0:.2f} {v(f0 <= TARGETS['fresh_ms'])}")
    sm = s["pylon"]["median"] * 1e3
    print(f"     Session.run <= {TARGETS['session_ms']} ms: {sm:.3f} {v(sm <= TARGETS['session_ms'])}")
    if "eryx" in res["rss"]:
        pr, xr = res["rss"]["pylon"]["rss"], res["rss"]["eryx"]["rss"]
        print(f"     RSS <= eryx: sandbox {pr['sandbox']:.2f} vs {xr['sandbox']:.2f} MiB "
              f"{v(pr['sandbox'] <= xr['sandbox'])}; session {pr['session']:.2f} vs {xr['session']:.2f} MiB "
              f"{v(pr['session'] <= xr['session'])}")
    served = cli["composectl_served"]["median"] - cli["python_pass"]["median"]
    print(f"     warm composectl run <= python -c pass + {TARGETS['cli_over_ms']:.0f} ms: "
          f"served +{served * 1e3:.1f} ms {v(served * 1e3 <= TARGETS['cli_over_ms'])}; in-process +{over * 1e3:.1f} ms "
          f"{v(over * 1e3 <= TARGETS['cli_over_ms'])}")
    hc = hp["invoke"]["median"] * 1e6
    print(f"     host-cap tiny call <= {TARGETS['hostcap_us']} us: {hc:.2f} us {v(hc <= TARGETS['hostcap_us'])}")


def run_and_report(quick: bool = False) -> dict:
    """What run_all.py calls: measures, prints, returns the raw figures."""
    pylon_py = sys.executable
    eryx_py = eryx_python()
    started = time.perf_counter()
    res = measure_inprocess(pylon_py, eryx_py, quick)
    cli = measure_cli(pylon_py, eryx_py if "eryx" in res["info"] else None, quick)
    report(res, cli)
    print(f"\n   ({time.perf_counter() - started:.0f} s for this section)")
    res["cli"] = cli
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("pylon", "eryx"), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    opts = parser.parse_args()
    if opts.worker:
        return worker(opts.worker)
    os.environ.pop("RUST_BACKTRACE", None)  # wasmtime captures a backtrace per trap when set
    res = run_and_report(opts.quick)
    if opts.json:
        opts.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
