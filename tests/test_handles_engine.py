"""The engine's half of the handle contract (docs/cap-interface.md, "Handles"
and "Reserved methods"), against a real cap built from C.

``tests/caps/handles_probe`` keeps fake handles (a counter) and answers the
host's ``$pylon/init`` and ``$pylon/release-all``; the guest is the real stock
guest in this process (:class:`pylon.Sandbox`). What is checked is what the
host does: it gives each instance a fresh key and the plan's ``max-handles``,
refuses the reserved names from a guest, and releases (and counts) whatever a
run left open when the cap is dropped: by the guest, at the end of the run,
after a timeout; never for a cap that trapped.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pylon
from conftest import REPO, Pylon
from pylon.errors import PlanError
from pylon.plan import DEFAULT_LIMITS, CapLimits, Plan

PROBE = REPO / "tests" / "caps" / "handles_probe"
NAME = "probe"


@pytest.fixture(scope="module")
def probe_blob(pylon: Pylon, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The probe built, stored and trusted as ``probe``: (digest, path)."""
    built = pylon.composectl("cap", "build", str(PROBE), check=True)
    digest, path = built.stdout.split()
    pylon.composectl("trust", "allow", NAME, digest, check=True)
    return digest, path


@pytest.fixture
def make_plan(home: Pylon, probe_blob: tuple[str, str], tmp_path: Path) -> Callable[..., Path]:
    """A plan with the default caps and the probe, its limits as given."""
    def make(**limits: int) -> Path:
        digest, path = probe_blob
        plan = tmp_path / f"plan-{len(list(tmp_path.glob('plan-*')))}.json"
        plan.write_text(home.default_plan.read_text())
        home.composectl("plan", "add", str(plan), NAME, path, check=True)
        doc = json.loads(plan.read_text())
        assert doc["caps"][NAME]["digest"] == digest
        doc["caps"][NAME]["limits"] = {key.replace("_", "-"): value for key, value in limits.items()}
        plan.write_text(json.dumps(doc))
        return plan
    return make


class Reports(list[str]):
    """What the host heard (the sandbox's ``report``)."""

    def about(self, words: str) -> list[str]:
        return [m for m in self if words in m]


def sandbox(plan: Path, reports: Reports, **kwargs: Any) -> pylon.Sandbox:
    return pylon.Sandbox(plan=plan, report=reports.append, timeout=kwargs.pop("timeout", 30), **kwargs)


def guest(code: str) -> str:
    """Guest code with the probe loaded as ``p`` (``p.call(method)`` decodes CBOR)."""
    return "from pylon_guest import dynlink\np = dynlink.load('probe')\n" + textwrap.dedent(code)


# -- release at the end of a run ----------------------------------------------------


def test_handles_a_run_leaves_open_are_released_and_counted(make_plan: Callable[..., Path]) -> None:
    reports = Reports()
    r = sandbox(make_plan(), reports).run(guest("""
        ids = [p.call("open") for _ in range(3)]
        print(ids, p.call("live"), p.call("inits"))
    """))
    assert r.ok, r.stderr
    assert r.stdout == b"[1, 2, 3] 3 1\n"  # init ran once, before the guest's first call
    assert r.handles_released == {NAME: 3}
    assert reports.about("released") == [f"cap '{NAME}': released 3 handles the run left open"]


def test_a_run_that_closes_nothing_reports_nothing(make_plan: Callable[..., Path]) -> None:
    reports = Reports()
    r = sandbox(make_plan(), reports).run(guest("print(p.call('live'))"))
    assert r.stdout == b"0\n", r.stderr
    assert r.handles_released == {}
    assert reports.about("released") == []


def test_a_run_that_times_out_still_releases_its_handles(make_plan: Callable[..., Path]) -> None:
    """The release is detached from the run's stop flag: the stopped run's
    caps are released anyway, under their own deadline."""
    reports = Reports()
    r = sandbox(make_plan(), reports, timeout=1.0).run(guest("""
        for _ in range(3):
            p.call("open")
        print("holding", flush=True)
        while True:
            pass
    """))
    assert r.timed_out and r.stdout == b"holding\n", r.stderr
    assert r.handles_released == {NAME: 3}
    assert reports.about("released 3 handles")


def test_dropping_the_instance_releases_its_handles_then(make_plan: Callable[..., Path]) -> None:
    reports = Reports()
    r = sandbox(make_plan(), reports).run(guest("""
        import gc
        for _ in range(3):
            p.call("open")
        # Drop every reference to the instance: the host drops the provider.
        dynlink._loaded.pop("probe")
        del p
        gc.collect()
        again = dynlink.load("probe")  # a fresh instance, its own init
        print(again.call("live"), again.call("inits"))
        again.call("open")
    """))
    assert r.stdout == b"0 1\n", r.stderr
    assert r.handles_released == {NAME: 4}  # 3 at the drop, 1 at the end
    assert [m.split(": ", 1)[1] for m in reports.about("released")] == [
        "released 3 handles the run left open", "released 1 handle the run left open"]


def test_a_cap_that_trapped_is_not_called_again(make_plan: Callable[..., Path]) -> None:
    reports = Reports()
    r = sandbox(make_plan(), reports).run(guest("""
        p.call("open")
        p.call("open")
        try:
            p.call("trap")
        except dynlink.CapTrapped:
            print("trapped")
    """))
    assert r.stdout == b"trapped\n", r.stderr
    assert r.handles_released == {}
    assert reports.about("release") == []


def test_a_failing_release_is_the_hosts_to_hear(make_plan: Callable[..., Path]) -> None:
    reports = Reports()
    r = sandbox(make_plan(), reports).run(guest("""
        p.call("open")
        p.call("break-release")
        print("done")
    """))
    assert r.ok and r.stdout == b"done\n" and b"release" not in r.stderr, r.stderr
    assert r.handles_released == {}
    failed = reports.about("$pylon/release-all failed")
    assert len(failed) == 1 and failed[0].startswith(f"cap '{NAME}': ") and "trapped" in failed[0]


def test_a_session_counts_handles_when_it_ends(make_plan: Callable[..., Path]) -> None:
    reports = Reports()
    with sandbox(make_plan(), reports).session() as s:
        first = s.run(guest("p.call('open'); p.call('open')"))
        assert first.ok and first.handles_released == {}, first.stderr  # still held
        stopped = s.run("while True: pass", timeout=0.5)
        assert stopped.timed_out
        assert stopped.handles_released == {NAME: 2}
    assert len(reports.about("released 2 handles")) == 1


# -- the reserved names ---------------------------------------------------------------


def test_a_guest_cannot_call_the_hosts_methods(make_plan: Callable[..., Path]) -> None:
    reports = Reports()
    r = sandbox(make_plan(), reports).run(guest("""
        p.call("open")
        for method in ("$pylon/init", "$pylon/release-all", "$pylon/other"):
            try:
                p.invoke(method, b"\\xf6")
            except dynlink.BadMethod as e:
                print(method, "reserved for the host" in str(e))
        print(p.call("live"), p.call("inits"))
    """))
    assert r.stdout.decode().splitlines() == [
        "$pylon/init True", "$pylon/release-all True", "$pylon/other True",
        "1 1",  # the cap never saw them: its handle survived, init ran once
    ], r.stderr
    assert r.handles_released == {NAME: 1}


def test_host_caps_refuse_the_hosts_methods_too(make_plan: Callable[..., Path]) -> None:
    called: list[str] = []
    caps = {"hc": {"$pylon/release-all": lambda: called.append("release") or 0, "ping": lambda: "pong"}}
    r = sandbox(make_plan(), Reports(), caps=caps).run(textwrap.dedent("""
        from pylon_guest import dynlink
        hc = dynlink.load("hc")
        print(hc.call("ping"))
        try:
            hc.invoke("$pylon/release-all", b"\\xf6")
        except dynlink.BadMethod as e:
            print("reserved for the host" in str(e))
    """))
    assert r.stdout == b"pong\nTrue\n", r.stderr
    assert called == []


# -- $pylon/init: key and max-handles ----------------------------------------------------


def test_max_handles_from_the_plan_reaches_the_cap(make_plan: Callable[..., Path]) -> None:
    code = guest("""
        print(p.call("max"))
        try:
            while True:
                p.call("open")
        except dynlink.CapLimitExceeded:
            print("full at", p.call("live"))
    """)
    r = sandbox(make_plan(max_handles=5), Reports()).run(code)
    assert r.stdout == b"5\nfull at 5\n", r.stderr
    assert r.handles_released == {NAME: 5}
    default = sandbox(make_plan(), Reports()).run(guest("print(p.call('max'))"))
    assert default.stdout == f"{DEFAULT_LIMITS.max_handles}\n".encode(), default.stderr


def test_each_instance_gets_a_fresh_random_key(make_plan: Callable[..., Path]) -> None:
    sb = sandbox(make_plan(), Reports())
    code = guest("""
        first = p.call("key")
        dynlink._loaded.pop("probe")
        second = dynlink.load("probe").call("key")
        print(first.hex(), second.hex())
    """)
    keys = sb.run(code).stdout.split() + sb.run(code).stdout.split()
    assert len(keys) == 4 and all(len(bytes.fromhex(k.decode())) == 32 for k in keys), keys
    assert len(set(keys)) == 4  # per instance, per run


@pytest.mark.parametrize("hook, why", [(666, "bad-payload"), (667, "trapped")])
def test_a_cap_whose_init_fails_does_not_load(home: Pylon, make_plan: Callable[..., Path], hook: int,
                                              why: str) -> None:
    reports = Reports()
    r = sandbox(make_plan(max_handles=hook), reports).run(textwrap.dedent("""
        from pylon_guest import dynlink
        try:
            dynlink.load("probe")
        except dynlink.CapTrapped as e:
            print(e)
    """))
    assert r.ok, r.stderr
    shown = r.stdout.decode()
    assert "could not be loaded: it failed to start" in shown
    # The detail is the host's: the guest sees neither the cause nor a path.
    assert "$pylon/init" not in shown and home.env["PYLON_BLOB_DIR"] not in shown
    heard = reports.about("could not be loaded")
    assert len(heard) == 1 and f"$pylon/init failed ({why})" in heard[0]


# -- the plan ----------------------------------------------------------------------------


def test_plan_bounds_max_handles() -> None:
    assert DEFAULT_LIMITS.max_handles == 4096
    assert CapLimits().effective().max_handles == 4096
    digest = "sha256:" + "ab" * 32
    plan = Plan().with_cap(NAME, digest=digest, limits=CapLimits(max_handles=1_000_000))
    assert plan.to_json()["caps"][NAME]["limits"] == {"max-handles": 1_000_000}
    for bad, words in [(0, "at least 1"), (1_000_001, "at most 1000000")]:
        with pytest.raises(PlanError, match=rf"max-handles: must be {words}"):
            Plan().with_cap(NAME, digest=digest, limits=CapLimits(max_handles=bad))


def test_provider_spec_carries_max_handles() -> None:
    from pylon.engine import ProviderSpec

    common: dict[str, Any] = dict(name=NAME, path="/x", digest="sha256:" + "ab" * 32, memory_bytes=1,
                                  timeout_ms=1, max_payload_bytes=1)
    assert ProviderSpec(**common).max_handles == 4096
    assert ProviderSpec(**common, max_handles=7).max_handles == 7
    for bad in (0, 1_000_001):
        with pytest.raises(ValueError, match="max_handles must be 1 to 1000000"):
            ProviderSpec(**common, max_handles=bad)
