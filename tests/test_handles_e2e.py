"""Handles over dynlink end to end, as a user meets them: the kv example cap of
docs/caps.md ("A cap with an interface") built from its folder with
``composectl cap build``, put in a plan, trusted, and used from a guest through
its generated proxy; then the guarantees of docs/cap-interface.md ("Handles")
on the real engine: a token from another run is refused naming the resource
type, the plan's ``max-handles`` fills with ``CapLimitExceeded`` and loses
nothing, and a run's open handles are released and counted when it ends.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

import pylon as pylon_api
from conftest import REPO, Pylon

KV = REPO / "examples" / "kv-cap"


@pytest.fixture(scope="module")
def kv_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the kv example's folder: a third party's checkout."""
    folder = tmp_path_factory.mktemp("kv") / "kv-cap"
    shutil.copytree(KV, folder)
    return folder


@pytest.fixture(scope="module")
def kv_plan(pylon: Pylon, kv_folder: Path) -> Path:
    """The kv cap, built from its folder, in a plan allowing 3 handles."""
    work, folder = kv_folder.parent, kv_folder
    digest, path = pylon.composectl("cap", "build", str(folder), check=True).stdout.split()
    plan = work / "kv-plan.json"
    pylon.composectl("plan", "new", str(plan), check=True)
    pylon.composectl("plan", "add", str(plan), "kv", path, "--max-handles", "3", check=True)
    pylon.composectl("trust", "allow", "kv", digest, check=True)
    return plan


def run(pylon: Pylon, plan: Path, tmp_path: Path, code: str, *args: str) -> tuple[str, str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    done = pylon.run_script(script, *args, plan=plan)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_the_documented_example_runs(pylon: Pylon, kv_plan: Path) -> None:
    done = pylon.run_script(KV / "use_kv.py", plan=kv_plan)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['answer', 'greeting'] b'hello' None\n"
    # The handle the script left open is the host's to release, and it says so
    # on its own stderr.
    assert "cap 'kv': released 1 handle the run left open" in done.stderr


def test_a_token_from_another_run_is_refused_naming_the_type(pylon: Pylon, kv_plan: Path,
                                                             tmp_path: Path) -> None:
    first, _ = run(pylon, kv_plan, tmp_path, """
        from pylon_guest import dynlink
        kv = dynlink.load("kv").api
        s = kv.Store()
        s.set("k", b"v")
        print(s._h.hex())              # the proxy keeps the 16-byte token here
    """)
    encoded = bytes.fromhex(first.strip())
    assert encoded[0] == 0x50 and len(encoded) == 17    # CBOR: a byte string of 16
    token = encoded[1:]
    out, _ = run(pylon, kv_plan, tmp_path, """
        import sys, cbor2
        from pylon_guest import dynlink
        cap = dynlink.load("kv")
        mine = cap.api.Store()             # the same slot this run: only the tag differs
        stolen = bytes.fromhex(sys.argv[1])
        for token in (stolen, bytes(16), stolen[:8] + bytes(8)):
            try:
                cap.invoke("[method]store.get", cbor2.dumps([token, "k"]))
                print("accepted")
            except dynlink.BadPayload as e:
                print(type(e).__name__, e)
    """, token.hex())
    lines = out.splitlines()
    assert len(lines) == 3, out
    for line in lines:
        assert line.startswith("BadPayload ") and "not a live store handle" in line, line


def test_max_handles_fills_with_limit_exceeded_and_loses_nothing(pylon: Pylon, kv_plan: Path,
                                                                tmp_path: Path) -> None:
    out, err = run(pylon, kv_plan, tmp_path, """
        from pylon_guest import dynlink
        kv = dynlink.load("kv").api
        stores = [kv.Store() for _ in range(3)]          # the plan allows 3
        for i, s in enumerate(stores):
            s.set("i", bytes([i]))
        try:
            kv.Store()
        except dynlink.CapLimitExceeded as e:
            print("full:", e)
        stores[0].close()                                 # frees a slot
        again = kv.Store()
        print([s.get("i") for s in stores[1:]], again.keys())
    """)
    full, rest = out.splitlines()
    assert "max-handles" in full and "3" in full
    assert rest == "[b'\\x01', b'\\x02'] []"
    assert "cap 'kv': released 3 handles" in err


def test_a_sandbox_counts_what_each_run_left_open(pylon: Pylon, kv_plan: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("PYLON_BLOB_DIR", "PYLON_CONFIG_DIR", "PYLON_SOURCE_ROOT"):
        monkeypatch.setenv(key, pylon.env[key])
    heard: list[str] = []
    sb = pylon_api.Sandbox(plan=kv_plan, report=heard.append, timeout=30)
    opened = sb.run("from pylon_guest import dynlink\nkv = dynlink.load('kv').api\n"
                    "a, b = kv.Store(), kv.Store()\nwith kv.Store() as c: c.set('x', b'y')\n")
    assert opened.exit_code == 0, opened.stderr
    assert opened.handles_released == {"kv": 2}
    closed = sb.run("from pylon_guest import dynlink\nwith dynlink.load('kv').api.Store() as s: pass\n")
    assert closed.exit_code == 0 and closed.handles_released == {}
    assert json.dumps(heard).count("released 2 handles") == 1


def test_pylon_guest_sqlite_can_switch_to_the_dynlink_cap(pylon: Pylon, tmp_path: Path) -> None:
    """A stock pylon (sqlite embedded) told to use the plan's sqlite cap instead:
    swapping SQLite without rebuilding pylon.wasm."""
    from pylon.build import caps

    built = caps.build_cap(REPO / "caps" / "sqlite")
    plan = tmp_path / "plan.json"
    plan.write_text(pylon.default_plan.read_text())
    pylon.composectl("plan", "add", str(plan), "sqlite", str(built.path), check=True)
    pylon.composectl("trust", "allow", "sqlite", built.digest, check=True)
    out, _ = run(pylon, plan, tmp_path, """
        from pylon_guest import sqlite
        print(sqlite.backend().name)
        first = sqlite.connect(":memory:")
        print(sqlite.use_backend("dynlink").name)
        db = sqlite.connect(":memory:")
        db.execute("create table t (x)")
        db.executemany("insert into t values (?)", [(1,), (2,)])
        print(db.execute("select sum(x) from t").fetchone(), first.execute("select 7").fetchone())
        try:
            sqlite.use_backend("other")
        except ValueError as e:
            print("ValueError", e)
    """)
    assert out.splitlines() == ["embedded", "dynlink", "(3,) (7,)",
                                "ValueError backend must be 'embedded', 'dynlink' or None, not 'other'"]


def test_composectl_bench_measures_a_third_party_generated_face(pylon: Pylon, kv_folder: Path,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "kv.json"
    done = pylon.composectl("bench", str(kv_folder), "--quick", "--json", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    handles = next(q for q in result["questions"] if q["key"] == "handles")
    assert handles["answer"]["dynlink"] == "Yes" and handles["seed"]["dynlink"] == "No*"
    dyn = result["modes"]["dynlink"]
    assert dyn["tiny"]["median_us"] > 0 and len(dyn["bulk"]) == 3
    assert all(b["median_mbs"] > 0 for b in dyn["bulk"].values())
