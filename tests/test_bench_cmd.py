"""``composectl bench CAP``: real caps, the real stock guest, real wasmtime.

The figures themselves are never asserted (a shared machine makes any bound
flaky): only that each mode ran, reported positive numbers, and that the
output has the shape the docs promise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pylon.bench.report import QUESTIONS
from pylon.build.manifest import load_manifest
from pylon.errors import BuildError

REPO = Path(__file__).resolve().parents[1]
#: Wide enough that no question wraps in the rich table.
WIDE = {"COLUMNS": "400"}


def _bench(pylon: Any, *args: str) -> Any:
    env = {**pylon.env, **WIDE}
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "pylon.cli", "bench", *args], env=env, cwd=REPO, text=True,
                          capture_output=True, timeout=900)


@pytest.fixture(scope="module")
def crc32c_quick(pylon: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    result = _bench(pylon, "crc32c", "--quick", "--json", str(out / "b.json"), "--plot", str(out / "b.png"))
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads((out / "b.json").read_text()), out


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def test_quick_crc32c_json_shape(crc32c_quick: tuple[Any, dict[str, Any], Path]) -> None:
    _, doc, _ = crc32c_quick
    assert doc["cap"] == "crc32c" and doc["quick"] is True and doc["bulk"] is True
    assert set(doc["modes"]) == {"dynlink", "embedded", "static"}
    sizes = {str(s) for s in doc["settings"]["sizes"]}
    for name, mode in doc["modes"].items():
        assert mode["available"], f"{name}: {mode['why']}"
        assert _positive(mode["artifact_bytes"]), name
        tiny = mode["tiny"]
        assert _positive(tiny["median_us"]) and _positive(tiny["best_us"]), name
        assert tiny["best_us"] <= tiny["median_us"], name
        assert all(_positive(x) for x in tiny["samples_us"]) and len(tiny["samples_us"]) == doc["settings"]["repeats"]
        assert set(mode["bulk"]) == sizes, name
        for size, fig in mode["bulk"].items():
            assert _positive(fig["median_mbs"]) and fig["best_mbs"] >= fig["median_mbs"], (name, size)
    resolve = doc["modes"]["dynlink"]["first_resolve"]
    for case in ("cold", "warm"):
        assert _positive(resolve[case]["median_ms"]) and _positive(resolve[case]["best_ms"])
        assert len(resolve[case]["samples_ms"]) == doc["settings"]["resolves"]
    # Only dynlink is swappable and resolved at run time.
    assert doc["modes"]["embedded"]["first_resolve"] is None
    assert [q["key"] for q in doc["questions"]] == [k for k, _, _ in QUESTIONS]
    assert doc["method"] and doc["machine"]["wasmtime"]


def test_quick_crc32c_prints_the_five_questions(crc32c_quick: tuple[Any, dict[str, Any], Path]) -> None:
    result, doc, _ = crc32c_quick
    for _, question, seed in QUESTIONS:
        assert question in result.stdout
        for answer in seed.values():
            assert f"{answer}: " in result.stdout
    assert "µs per call" in result.stdout and "first resolve" in result.stdout
    assert "bulk throughput" in result.stdout and "median (best)" in result.stdout
    assert "method:" in result.stdout
    # Progress goes to stderr, never into the tables on stdout.
    assert "dynlink: tiny call" in result.stderr and "dynlink: tiny call" not in result.stdout


def test_quick_crc32c_plot(crc32c_quick: tuple[Any, dict[str, Any], Path]) -> None:
    _, _, out = crc32c_quick
    png = (out / "b.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_third_party_cap_copy(pylon: Any, tmp_path: Path) -> None:
    """A cap folder outside the checkout (as one built from docs/caps.md) benches
    by path: its dynlink and static faces build from the copy; its embedded
    face, whose WIT stays in the source tree, is reported, not measured."""
    cap = tmp_path / "crc32c"
    shutil.copytree(REPO / "caps" / "crc32c", cap)
    result = _bench(pylon, str(cap), "--quick", "--json", str(tmp_path / "b.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["modes"]["dynlink"]["available"] and doc["modes"]["static"]["available"]
    assert _positive(doc["modes"]["dynlink"]["tiny"]["median_us"])
    assert not doc["modes"]["embedded"]["available"]
    assert doc["modes"]["embedded"]["why"].startswith("n/a (")
    assert "n/a (" in result.stdout


def test_unknown_cap_is_a_clear_error(pylon: Any) -> None:
    result = _bench(pylon, "no-such-cap", "--quick")
    assert result.returncode == 2
    assert "unknown cap 'no-such-cap'" in result.stderr and "crc32c" in result.stderr
    assert "Traceback" not in result.stderr


def test_folder_without_manifest_is_a_clear_error(pylon: Any, tmp_path: Path) -> None:
    result = _bench(pylon, str(tmp_path), "--quick")
    assert result.returncode == 2
    assert "is not a cap folder: it has no cap.toml" in result.stderr


def test_cap_without_bench_table(pylon: Any) -> None:
    result = _bench(pylon, str(REPO / "tests" / "sdk_caps" / "cborenc"), "--quick")
    assert result.returncode == 2
    assert "has no [bench] table" in result.stderr and "docs/caps.md" in result.stderr
    assert "Traceback" not in result.stderr


def _manifest(tmp_path: Path, bench: str) -> Path:
    cap = tmp_path / "c"
    cap.mkdir()
    (cap / "cap.toml").write_text('[cap]\nname = "c"\nversion = "1"\ndescription = "d"\n' + bench)
    return cap


def test_bench_table_is_checked(tmp_path: Path) -> None:
    both = _manifest(tmp_path, '[bench.dynlink]\nmethod = "m"\ncall = "cap.invoke(1)"\n')
    with pytest.raises(BuildError, match=r"\[bench.dynlink\]: give exactly one of method"):
        load_manifest(both)
    shutil.rmtree(both)
    typo = _manifest(tmp_path, '[bench.embedded]\ncall = "f(data)"\nsetpu = "x = 1"\n')
    with pytest.raises(BuildError, match="setpu"):
        load_manifest(typo)
    shutil.rmtree(typo)
    kind = _manifest(tmp_path, '[bench.dynlink]\nmethod = "m"\npayload = "json"\n')
    with pytest.raises(BuildError, match=r"bench.*payload"):
        load_manifest(kind)
    shutil.rmtree(kind)
    extra = _manifest(tmp_path, '[bench.dynlink]\nmethod = "m"\nextra = [3]\n')
    with pytest.raises(BuildError, match="cbor-array"):
        load_manifest(extra)
    shutil.rmtree(extra)
    ok = _manifest(tmp_path, '[bench]\nbulk = true\n[bench.dynlink]\nmethod = "m"\npayload = "cbor-array"\n'
                             'extra = [3]\n[bench.static]\nimport = "import c"\ncall = "c.f(data)"\n')
    spec = load_manifest(ok).bench
    assert spec is not None and spec.bulk and spec.tiny_bytes == 1
    assert spec.faces["dynlink"].extra == (3,) and spec.faces["static"].call == "c.f(data)"
