"""Shared fixtures for end-to-end tests: a private Pylon home per session.

End-to-end tests run the real ``composectl`` in a subprocess against real
components. Build outputs and compiled modules stay in the normal cache
(keyed by source hash, so sharing them is safe and keeps reruns fast); the
blob store, trust policy and default plan live in a temporary folder so a
test never touches the user's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Shared fixtures that live in their own modules (``server``: a loopback HTTP server).
pytest_plugins = ("loopback_http", "oci_registry")


class Pylon:
    """Runs composectl with a private home."""

    def __init__(self, env: dict[str, str], home: Path):
        self.env = env
        self.home = home

    def composectl(self, *args: str, cwd: Path | None = None, check: bool = False,
                   timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "pylon.cli", *map(str, args)],
            env=self.env, cwd=cwd or REPO, text=True, capture_output=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"composectl {' '.join(map(str, args))} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def run_code(self, code: str, *args: str, plan: Path | None = None) -> subprocess.CompletedProcess[str]:
        plan_args = ["--plan", str(plan)] if plan else []
        return self.composectl("run", *plan_args, "-c", code, *args)

    def run_script(self, script: Path, *args: str, plan: Path | None = None) -> subprocess.CompletedProcess[str]:
        plan_args = ["--plan", str(plan)] if plan else []
        return self.composectl("run", *plan_args, str(script), *args)

    @property
    def default_plan(self) -> Path:
        return self.home / "config" / "plan.json"


@pytest.fixture(scope="session")
def pylon(tmp_path_factory: pytest.TempPathFactory) -> Pylon:
    """A Pylon home with the stock guest and caps set up (``composectl setup``)."""
    home = tmp_path_factory.mktemp("pylon-home")
    env = dict(os.environ)
    env.update(PYLON_BLOB_DIR=str(home / "blobs"), PYLON_CONFIG_DIR=str(home / "config"),
               PYLON_SOURCE_ROOT=str(REPO))
    env.pop("RUST_BACKTRACE", None)
    p = Pylon(env, home)
    p.composectl("setup", check=True, timeout=3600)
    return p


@pytest.fixture
def home(pylon: Pylon, monkeypatch: pytest.MonkeyPatch) -> Pylon:
    """This process uses the test's Pylon home (set up by the ``pylon`` fixture):
    for ``pylon.Sandbox`` and the engine, which read it from the environment."""
    for key in ("PYLON_BLOB_DIR", "PYLON_CONFIG_DIR", "PYLON_SOURCE_ROOT"):
        monkeypatch.setenv(key, pylon.env[key])
    return pylon


def lean_dynlink_plan(pylon: Pylon, folder: Path, cap: str) -> Path:
    """A plan in ``folder`` running the lean guest (no embedded cap) with
    ``cap``'s dynlink face, built from caps/<cap>; both trusted by digest."""
    from pylon.build import caps, guest

    lean = guest.build_guest(embed=())
    built = caps.build_cap(REPO / "caps" / cap)
    plan = folder / "plan.json"
    pylon.composectl("plan", "new", str(plan), "--guest", str(lean.path), check=True)
    pylon.composectl("plan", "add", str(plan), cap, str(built.path), check=True)
    pylon.composectl("trust", "allow", cap, built.digest, check=True)
    pylon.composectl("trust", "allow", "--guest", lean.digest, check=True)
    return plan


@pytest.fixture(scope="session")
def sqlite_dynlink_plan(pylon: Pylon, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lean guest with the sqlite cap's generated dynlink face: there
    ``pylon_guest.sqlite`` goes through the generated proxy."""
    return lean_dynlink_plan(pylon, tmp_path_factory.mktemp("sqlite-dynlink"), "sqlite")


@pytest.fixture(params=["embedded", "dynlink"])
def sqlite_plan(request: pytest.FixtureRequest) -> Path | None:
    """Each SQLite backend in turn: None (the stock guest, sqlite embedded)
    or the plan of :func:`sqlite_dynlink_plan`."""
    if request.param == "embedded":
        return None
    plan: Path = request.getfixturevalue("sqlite_dynlink_plan")
    return plan
