"""pylon.dask end to end: real Dask schedulers and worker processes running real guests.

Two kinds of cluster:

* ``cluster``: a ``LocalCluster`` of two worker processes (each under a
  nanny, so a killed worker comes back), sharing the ``pylon`` fixture's
  home (blob store, trust policy, stock guest).
* ``machines``: a ``dask scheduler`` and two ``dask worker`` subprocesses,
  each worker with its own empty blob store and its own trust file, as two
  machines would have: what they run comes to them by digest from an HTTP
  source.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import crc32c
import pytest

pytest.importorskip("distributed")

from distributed import Client, LocalCluster  # noqa: E402

from pylon.blobstore import digest_bytes  # noqa: E402
from pylon.dask import RunSpec, _portable, _run_on_worker, map_scripts, run_many, submit, worker_stats  # noqa: E402
from pylon.errors import DigestMismatch, PlanError, PylonError, SignatureError, TrustError  # noqa: E402
from pylon.plan import GuestRef, Plan  # noqa: E402
from pylon.sandbox import Result  # noqa: E402
from pylon.trust import TrustPolicy  # noqa: E402

#: A guest run that uses the crc32c cap of the plan (linked at run time) and prints its index.
CRC_SCRIPT = """
import sys, time, hashlib
import _crc32c_dynlink_cap as crc
i = int(sys.argv[1])
time.sleep(float(sys.argv[2]))
data = sys.stdin.buffer.read()
print(i, f"{crc.crc32c(data):08x}", hashlib.sha256(data).hexdigest()[:16])
"""

PYLON_VARS = ("PYLON_BLOB_DIR", "PYLON_CONFIG_DIR", "PYLON_SOURCE_ROOT")


def _expected(i: int, data: bytes) -> bytes:
    import hashlib

    return f"{i} {crc32c.crc32c(data):08x} {hashlib.sha256(data).hexdigest()[:16]}\n".encode()


@pytest.fixture(scope="module")
def cluster(pylon) -> Iterator[Client]:
    """Two worker processes (one thread each) with the pylon fixture's home."""
    env = {k: pylon.env[k] for k in PYLON_VARS}
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0",
                      env=env) as lc, Client(lc) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


@pytest.fixture(scope="module")
def home_plan(pylon) -> Plan:
    """The pylon fixture's default plan with its stock guest pinned."""
    stock = json.loads((pylon.home / "config" / "stock.json").read_text())
    plan = Plan.load(pylon.default_plan)
    return plan.with_guest(GuestRef(digest=stock["guest"], sources=tuple(stock["guest_sources"]),
                                    size=stock.get("guest_size")))


def _runs(client: Client) -> int:
    return sum(s.runs for s in worker_stats(client).values())


# -- results -------------------------------------------------------------------


def test_results_come_back_in_order_with_argv_and_stdin(cluster, home_plan):
    n = 12
    # Later specs sleep less, so they finish first: the order is the specs', not completion's.
    specs = [RunSpec(CRC_SCRIPT, argv=[str(i), f"{(n - i) * 0.02:.2f}"], stdin=f"payload {i}" * (i + 1))
             for i in range(n)]
    results = run_many(cluster, home_plan, specs, timeout=30)
    assert len(results) == n
    for i, r in enumerate(results):
        assert isinstance(r, Result)
        assert r.exit_code == 0, r.stderr.decode()
        assert r.stdout == _expected(i, (f"payload {i}" * (i + 1)).encode())
    # Both workers took part, and each loaded the guest once for this plan.
    stats = worker_stats(cluster)
    assert len(stats) == 2 and all(s.runs >= 1 for s in stats.values()), stats
    assert all(s.sandboxes_made == 1 for s in stats.values()), stats


def test_map_scripts_and_a_plan_file(cluster, pylon):
    results = map_scripts(cluster, pylon.default_plan, "import sys; print(sys.argv[1:], sys.stdin.read())",
                          [["a"], ["b", "c"], []], stdins=["x", b"y", ""])
    assert [r.stdout for r in results] == [b"['a'] x\n", b"['b', 'c'] y\n", b"[] \n"]


def test_a_guest_failure_is_a_result_and_is_not_retried(cluster, home_plan):
    before = _runs(cluster)
    specs = [RunSpec("import sys; print('bye'); sys.exit(3)"),
             RunSpec("raise ValueError('boom')"),
             RunSpec("print('spin', flush=True)\nwhile True: pass", timeout=0.5),
             RunSpec("print('fine')")]
    results = run_many(cluster, home_plan, specs, retries=3, timeout=30)
    assert [r.exit_code for r in results] == [3, 1, 124, 0]
    assert results[0].stdout == b"bye\n"
    assert b"ValueError: boom" in results[1].stderr
    assert results[2].timed_out and results[2].stdout == b"spin\n"
    assert results[3].stdout == b"fine\n"
    # Four specs, four runs: retries=3 applies to host-side errors only.
    assert _runs(cluster) - before == 4


def test_a_worker_refuses_a_guest_it_does_not_trust(cluster, home_plan):
    untrusted = "sha256:" + "ab" * 32
    plan = home_plan.with_guest(GuestRef(digest=untrusted, sources=("http://127.0.0.1:9/never-fetched",)))
    started = time.monotonic()
    with pytest.raises(TrustError, match=untrusted) as info:
        run_many(cluster, plan, [RunSpec("print(1)") for _ in range(4)], retries=1)
    assert time.monotonic() - started < 30
    assert "composectl trust allow --guest" in str(info.value)
    assert any("raised on Dask worker tcp://" in note for note in info.value.__notes__)


def test_a_worker_gates_caps_on_its_own_trust_policy(cluster, home_plan, pylon):
    # The client names zstd's bytes as "crc32c": the worker's policy allows
    # that digest only as zstd, so the guest is denied the cap (a result).
    zstd = home_plan.caps["zstd"]
    plan = home_plan.with_cap("crc32c", digest=zstd.digest, sources=zstd.sources, size=zstd.size)
    [r] = run_many(cluster, plan, [RunSpec("import _crc32c_dynlink_cap")], timeout=30)
    assert r.exit_code == 1
    assert b"CapDenied" in r.stderr and zstd.digest.encode() in r.stderr
    assert pylon.home.as_posix().encode() not in r.stderr


def test_a_worker_validates_the_plan_text_itself(cluster):
    # Bypass the client's own check: a hand-made task with a malformed plan.
    from pylon.dask import SandboxOptions

    bad = '{"pylon-plan": 1, "caps": {"crc32c": {"digest": "sha256:nothex"}}}'
    future = cluster.submit(_run_on_worker, bad, SandboxOptions(), RunSpec("print(1)"), pure=False)
    with pytest.raises(PlanError, match=r"plan sent by the client.*caps\.crc32c"):
        future.result(timeout=30)


def test_submit_returns_futures_in_order(cluster, home_plan):
    futures = submit(cluster, home_plan, [RunSpec("import sys; print(sys.argv[1])", [str(i)]) for i in range(3)])
    assert [f.result(timeout=30).stdout for f in futures] == [b"0\n", b"1\n", b"2\n"]
    # Equal specs are separate runs (unique keys), not one deduplicated task.
    twins = submit(cluster, home_plan, [RunSpec("print(1)"), RunSpec("print(1)")])
    assert twins[0].key != twins[1].key


def test_bad_specs_are_refused_on_the_client(cluster, home_plan):
    with pytest.raises(PylonError, match="argv must be a sequence of strings"):
        RunSpec("print(1)", argv="abc")
    with pytest.raises(PylonError, match=r"specs\[1\] is a str"):
        submit(cluster, home_plan, [RunSpec("print(1)"), "print(2)"])  # type: ignore[list-item]
    with pytest.raises(PylonError, match="timeout must be a positive"):
        RunSpec("print(1)", timeout=0)


def test_an_error_travels_with_its_class_fields_and_note():
    import pickle

    exc = _portable(DigestMismatch("sha256:" + "0" * 64, "sha256:" + "1" * 64, "somewhere"))
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is DigestMismatch and "digest mismatch for somewhere" in str(back)
    assert back.expected == "sha256:" + "0" * 64 and back.where == "somewhere"
    assert back.__notes__ and "not in a worker" in back.__notes__[0]
    signed = pickle.loads(pickle.dumps(SignatureError("bad", cap="c", digest="d", keyids=("k",))))
    assert (type(signed), signed.cap, signed.keyids, str(signed)) == (SignatureError, "c", ("k",), "bad")


# -- a worker dies mid-run -----------------------------------------------------


def test_a_killed_worker_loses_and_duplicates_nothing(cluster, home_plan):
    n = 6
    script = "import sys, time; time.sleep(1.5); print('run', sys.argv[1])"
    futures = submit(cluster, home_plan, [RunSpec(script, [str(i)]) for i in range(n)], timeout=30)
    # Wait until both workers are running a task, then kill one mid-run.
    deadline = time.monotonic() + 30
    while True:
        busy = {addr: keys for addr, keys in cluster.processing().items() if keys}
        if len(busy) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(busy) == 2, busy
    time.sleep(0.5)  # well inside the 1.5 s runs
    victim = sorted(busy)[0]
    pid = cluster.run(os.getpid, workers=[victim])[victim]
    on_victim = cluster.processing(workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    results = cluster.gather(futures)
    assert [r.stdout for r in results] == [f"run {i}\n".encode() for i in range(n)]
    assert all(r.exit_code == 0 for r in results)
    # The scheduler's log shows the victim's runs were started again elsewhere
    # (at-least-once execution), yet each spec has one result.
    keys = [f.key for f in futures]
    starts = cluster.run_on_scheduler(_processing_counts, keys=keys)
    assert max(starts.values()) >= 2, starts
    assert {k for k, c in starts.items() if c >= 2} <= set(on_victim), (starts, on_victim)
    # The nanny brings the worker back (a new process); the cluster keeps working.
    cluster.wait_for_workers(2, timeout=60)
    assert pid not in cluster.run(os.getpid).values()


def _processing_counts(dask_scheduler, keys: list[str]) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """How many times the scheduler sent each key to a worker."""
    return {key: sum(1 for event in dask_scheduler.story(key) if event[0] == key and event[2] == "processing")
            for key in keys}


# -- separate machines: own stores, own trust -----------------------------------


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def machines(pylon, tmp_path) -> Iterator[tuple[Client, list[Path]]]:
    """A scheduler and two workers, each worker with an empty blob store and its own trust file."""
    env = dict(pylon.env)
    sched_file = tmp_path / "scheduler.json"
    procs = [_start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(sched_file)], env, tmp_path / "scheduler.log")]
    homes = []
    try:
        for i in range(2):
            home = tmp_path / f"machine{i}"
            (home / "config").mkdir(parents=True, mode=0o700)
            shutil.copy(pylon.home / "config" / "trust.json", home / "config" / "trust.json")
            homes.append(home)
            worker_env = {**env, "PYLON_BLOB_DIR": str(home / "blobs"), "PYLON_CONFIG_DIR": str(home / "config")}
            procs.append(_start(["distributed.cli.dask_worker", "--scheduler-file", str(sched_file),
                                 "--nthreads", "1", "--no-dashboard", "--name", f"machine{i}"],
                                worker_env, tmp_path / f"worker{i}.log"))
        with Client(scheduler_file=str(sched_file), timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            yield client, homes
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def test_each_worker_fetches_the_plans_blobs_by_digest(machines, home_plan, server, pylon):
    client, homes = machines
    # The guest and crc32c come from an HTTP source only: no worker has them yet.
    assert home_plan.guest is not None and home_plan.guest.digest is not None
    blobs = pylon.home / "blobs" / "sha256"
    guest_bytes = (blobs / home_plan.guest.digest.split(":")[1]).read_bytes()
    crc = home_plan.caps["crc32c"]
    crc_bytes = (blobs / crc.digest.split(":")[1]).read_bytes()
    assert digest_bytes(guest_bytes) == home_plan.guest.digest
    server.serve("/guest.wasm", guest_bytes)
    server.serve("/crc32c.wasm", crc_bytes)
    plan = (home_plan.with_guest(GuestRef(digest=home_plan.guest.digest, sources=(server.url("/guest.wasm"),),
                                          size=len(guest_bytes)))
            .with_cap("crc32c", digest=crc.digest, sources=(server.url("/crc32c.wasm"),), size=len(crc_bytes)))
    for home in homes:
        assert not (home / "blobs").exists()
    n = 8
    specs = [RunSpec(CRC_SCRIPT, [str(i), "0.1"], stdin=f"m{i}") for i in range(n)]
    results = run_many(client, plan, specs, timeout=30)
    assert [r.stdout for r in results] == [_expected(i, f"m{i}".encode()) for i in range(n)]
    stats = worker_stats(client)
    assert sorted(s.blob_dir for s in stats.values()) == sorted(str(h / "blobs") for h in homes)
    for s in stats.values():
        assert s.runs >= 1, stats
        # Each worker fetched exactly what its runs used, into its own store; zstd (unused) never.
        names = {p.name for p in (Path(s.blob_dir) / "sha256").iterdir()}
        assert names == {plan.guest.digest.split(":")[1], crc.digest.split(":")[1]}  # type: ignore[union-attr]
    assert sorted(server.requests) == ["/crc32c.wasm"] * 2 + ["/guest.wasm"] * 2


def test_a_revocation_on_a_worker_applies_to_its_next_run(machines, home_plan):
    client, homes = machines
    spec = RunSpec(CRC_SCRIPT, ["0", "0"], stdin="x")
    assert [r.exit_code for r in run_many(client, home_plan, [spec] * 4, timeout=30)] == [0] * 4
    # Each worker holds a sandbox for this plan now; revoking crc32c in its
    # trust file must still deny the cap from the next run on.
    for home in homes:
        policy = TrustPolicy.load(home / "config" / "trust.json")
        assert policy.revoke("crc32c")
        policy.save()
    results = run_many(client, home_plan, [spec] * 4, timeout=30)
    assert [r.exit_code for r in results] == [1] * 4
    assert all(b"CapDenied" in r.stderr for r in results)


def test_workers_fetch_from_an_oci_registry(machines, home_plan, pylon, oci_registry):
    client, homes = machines
    assert home_plan.guest is not None and home_plan.guest.digest is not None
    blobs = pylon.home / "blobs" / "sha256"
    crc = home_plan.caps["crc32c"]
    sources = {}
    for name, digest in (("guest", home_plan.guest.digest), ("crc32c", crc.digest)):
        ref = oci_registry.ref(f"dask-test/{name}:1")
        pylon.composectl("push", blobs / digest.split(":")[1], ref, check=True)
        sources[name] = ref
    plan = (home_plan.with_guest(GuestRef(digest=home_plan.guest.digest, sources=(sources["guest"],),
                                          size=home_plan.guest.size))
            .with_cap("crc32c", digest=crc.digest, sources=(sources["crc32c"],), size=crc.size))
    specs = [RunSpec(CRC_SCRIPT, [str(i), "0.1"], stdin=f"oci{i}") for i in range(6)]
    results = run_many(client, plan, specs, timeout=30)
    assert [r.stdout for r in results] == [_expected(i, f"oci{i}".encode()) for i in range(6)]
    for s in worker_stats(client).values():
        if s.runs:
            names = {p.name for p in (Path(s.blob_dir) / "sha256").iterdir()}
            assert names == {home_plan.guest.digest.split(":")[1], crc.digest.split(":")[1]}
