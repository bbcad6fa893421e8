"""Provider limits that only a hand-made component can reach (issue 9, finding 4).

Two caps written in WAT (tests/caps/twomem, tests/caps/blocker) and built here
with the ``wasm-tools`` CLI, never committed as binaries:

* ``twomem``: a core module with two linear memories. ``memory-mb`` must bound
  the instance's *total* memory: the engine's limiter sums every memory of the
  Store, and a grow past it fails (``memory.grow`` returns -1, the cap answers
  ``limit-exceeded`` and lives on) instead of trapping.
* ``blocker``: a WASI-granted cap that subscribes to a 60 s monotonic-clock
  timer and blocks on it (``pollable.block`` or ``wasi:io/poll.poll``). A
  blocking host call never reaches an epoch check, so ``timeout-ms`` could
  not hold; the engine shadows both calls with a trap that says why.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pylon.build import toolchain
from pylon.build.wit import wasi_wit_dir
from pylon.engine import ProviderSpec, get_engine
from pylon.errors import CapError, EngineError

REPO = Path(__file__).resolve().parents[1]
CAPS = REPO / "tests" / "caps"
DYNLINK_WIT = REPO / "wit" / "dynlink"
KiB = 1 << 10
MiB = 1 << 20
PAGE = 64 * KiB


# -- building a WAT cap ------------------------------------------------------------


def build_wat_cap(wat: str, wit: Path, world: str, out: Path) -> tuple[Path, str]:
    """``wasm-tools component embed`` + ``component new``: (component path, sha256 digest)."""
    out.mkdir(parents=True, exist_ok=True)
    tools = toolchain.wasm_tools()
    core = out / "core.wat"
    core.write_text(wat)
    embedded = out / "embedded.wasm"
    component = out / f"{world}.wasm"
    toolchain.run([tools, "component", "embed", str(wit), "--world", world, str(core), "-o", str(embedded)],
                  what=f"wasm-tools component embed ({world})")
    toolchain.run([tools, "component", "new", str(embedded), "-o", str(component)],
                  what=f"wasm-tools component new ({world})")
    toolchain.run([tools, "validate", str(component)], what=f"wasm-tools validate ({world})")
    return component, "sha256:" + hashlib.sha256(component.read_bytes()).hexdigest()


def load(built: tuple[Path, str], name: str, **limits: Any) -> Any:
    path, digest = built
    spec = dict(memory_bytes=4 * MiB, timeout_ms=5000, max_payload_bytes=MiB, wasi=False) | limits
    return get_engine().load_provider(ProviderSpec(name=name, path=str(path), digest=digest, **spec))


def cap_error(provider: Any, method: str, payload: bytes = b"") -> CapError:
    with pytest.raises(CapError) as info:
        provider.invoke(method, payload)
    return info.value


# -- twomem: memory-mb is the sum of every memory ------------------------------------


@pytest.fixture(scope="module")
def twomem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    wat = (CAPS / "twomem" / "twomem.wat").read_text()
    return build_wat_cap(wat, DYNLINK_WIT, "cap", tmp_path_factory.mktemp("twomem"))


def pages(reply: bytes) -> list[int]:
    return [int.from_bytes(reply[i:i + 4], "little") for i in range(0, len(reply), 4)]


def grow(provider: Any, which: int, n: int) -> int:
    """Grows memory ``which`` (1 or 2) by ``n`` pages; its size in pages afterwards."""
    return pages(provider.invoke(f"grow{which}", bytes([n])))[0]


def refused(provider: Any, which: int, n: int) -> None:
    """A grow the limiter refuses: memory.grow returned -1, the cap says so itself."""
    err = cap_error(provider, f"grow{which}", bytes([n]))
    assert err.kind == "limit-exceeded", (err.kind, str(err))
    assert str(err) == "grow failed"  # the cap's own answer, not a trap the engine classified


def test_twomem_is_really_two_memories(twomem: tuple[Path, str]) -> None:
    text = toolchain.run([toolchain.wasm_tools(), "print", str(twomem[0])], what="wasm-tools print").stdout
    assert len(re.findall(r"\(memory (?:\$\S+ )?\(;\d+;\) \d+\)", text)) == 2, text


def test_each_memory_alone_reaches_three_mib(twomem: tuple[Path, str]) -> None:
    first = load(twomem, "twomem")
    assert pages(first.invoke("sizes", b"")) == [1, 0]
    assert grow(first, 1, 47) == 48  # memory 0: 3 MiB
    second = load(twomem, "twomem")
    assert grow(second, 2, 48) == 48  # memory 1: 3 MiB (+ 64 KiB of memory 0)
    assert pages(second.invoke("sizes", b"")) == [1, 48]


def test_second_memory_fails_to_grow_once_the_sum_passes_the_limit(twomem: tuple[Path, str]) -> None:
    """memory-mb bounds the instance's total, and a grow past it returns -1.

    On the old engine (a per-memory limit, trap on excess) this test fails: each
    memory could have its own 4 MiB, so growing memory 1 by 2 MiB beside a 3 MiB
    memory 0 succeeded (6+ MiB in a "4 MiB" cap), and a grow past a memory's own
    limit trapped and killed the instance instead of returning -1."""
    p = load(twomem, "twomem", memory_bytes=4 * MiB)
    assert grow(p, 1, 47) == 48  # memory 0: 3 MiB of the 4
    refused(p, 2, 32)  # memory 1 + 2 MiB = 5 MiB in all: refused
    # Refused, not trapped: the provider answers the next call, and nothing was charged.
    assert pages(p.invoke("sizes", b"")) == [48, 0]
    assert grow(p, 2, 16) == 16  # exactly 4 MiB in all: allowed
    refused(p, 2, 1)
    refused(p, 1, 1)  # the first memory is held by the same total
    assert pages(p.invoke("sizes", b"")) == [48, 16]
    assert grow(p, 2, 0) == 16  # memory.grow 0 is always fine


def test_second_memory_alone_is_held_to_the_limit(twomem: tuple[Path, str]) -> None:
    p = load(twomem, "twomem", memory_bytes=4 * MiB)
    refused(p, 2, 64)  # 4 MiB + memory 0's page
    assert grow(p, 2, 63) == 63
    refused(p, 2, 1)
    assert pages(p.invoke("sizes", b"")) == [1, 63]


def test_a_cap_whose_memories_do_not_fit_does_not_start(twomem: tuple[Path, str]) -> None:
    with pytest.raises(EngineError):
        load(twomem, "twomem", memory_bytes=PAGE - 1)


# -- blocker: a WASI-granted cap cannot block in the host ------------------------------


def _wasi_version() -> str:
    text = (wasi_wit_dir() / "io.wit").read_text()
    return re.search(r"^package wasi:io@([0-9.]+);", text, re.M).group(1)


@pytest.fixture(scope="module", params=["host", "0.2.0"])
def blocker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The blocker built against the WASI WIT the engine implements ("host": the
    wasmtime-wasi crate's own files, e.g. 0.2.12), or against the oldest 0.2
    (tests/caps/blocker/wit's subset of the interfaces, versioned 0.2.0): the
    shadowed calls must trap whichever 0.2.x a cap imports."""
    src = CAPS / "blocker"
    out = tmp_path_factory.mktemp(f"blocker-{request.param}")
    wit = out / "wit"
    (wit / "deps").mkdir(parents=True)
    shutil.copytree(DYNLINK_WIT, wit / "deps" / "dynlink")
    if request.param == "host":
        version = _wasi_version()
        for dep in wasi_wit_dir().glob("*.wit"):
            shutil.copy2(dep, wit / "deps" / dep.name)
    else:
        version = request.param
        for dep in (src / "wit").glob("wasi-*.wit"):
            (wit / "deps" / dep.name).write_text(dep.read_text().replace("@WASI@", "@" + version))
    (wit / "blocker.wit").write_text((src / "wit" / "blocker.wit").read_text().replace("@WASI@", "@" + version))
    wat = (src / "blocker.wat").read_text().replace("@WASI@", "@" + version)
    return build_wat_cap(wat, wit, "blocker", out)


def bounded_invoke(provider: Any, method: str, bound: float = 10.0) -> tuple[Any, float]:
    """Invokes in a thread; (reply or exception, seconds). Fails the test if the
    call has not returned after ``bound`` seconds (the thread is left behind)."""
    outcome: dict[str, Any] = {}

    def call() -> None:
        start = time.monotonic()
        try:
            outcome["result"] = provider.invoke(method, b"")
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["result"] = exc
        outcome["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=call, name=f"blocker-{method}", daemon=True)
    thread.start()
    thread.join(bound)
    if thread.is_alive():
        pytest.fail(f"invoke({method!r}) is still blocked in the host after {bound} s: "
                    "timeout-ms does not cover blocking WASI calls")
    return outcome["result"], outcome["seconds"]


def test_blocker_imports_the_blocking_calls(blocker: tuple[Path, str]) -> None:
    text = toolchain.run([toolchain.wasm_tools(), "component", "wit", str(blocker[0])],
                         what="wasm-tools component wit").stdout
    assert re.search(r"import wasi:io/poll@0\.2\.\d+;", text), text
    assert re.search(r"import wasi:clocks/monotonic-clock@0\.2\.\d+;", text), text


def test_blocker_needs_the_wasi_grant(blocker: tuple[Path, str]) -> None:
    with pytest.raises(EngineError, match="imports"):
        load(blocker, "blocker", wasi=False)


def test_non_blocking_wasi_calls_work(blocker: tuple[Path, str]) -> None:
    p = load(blocker, "blocker", wasi=True, timeout_ms=500)
    assert int.from_bytes(p.invoke("now", b""), "little") > 0
    assert p.invoke("ready", b"") == b"\x00"  # a 60 s timer is not ready yet
    assert cap_error(p, "nap").kind == "bad-method"


@pytest.mark.parametrize("method", ["sleep", "poll"])
def test_blocking_in_the_host_traps_instead_of_outliving_the_deadline(blocker: tuple[Path, str],
                                                                      method: str) -> None:
    """On the old engine this call slept the full 60 s (timeout-ms never fired):
    here it fails with a bound of 10 s."""
    p = load(blocker, "blocker", wasi=True, timeout_ms=500)
    result, seconds = bounded_invoke(p, method)
    assert isinstance(result, CapError), f"expected a CapError, got {result!r}"
    assert result.kind == "trapped", (result.kind, str(result))
    assert "caps may not block" in str(result), str(result)
    assert seconds < 3, seconds
    # The instance is dead from now on; a fresh one works.
    assert cap_error(p, "now").kind == "trapped"
    assert len(load(blocker, "blocker", wasi=True, timeout_ms=500).invoke("now", b"")) == 8
