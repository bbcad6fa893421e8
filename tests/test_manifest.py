"""Cap manifests (caps/*/cap.toml) against schemas/cap.schema.json, and the one
cap-name rule.

Golden files in tests/manifests/: ``<case>.toml`` is copied into a fresh cap
folder (beside a ``t.wit`` and an ``embedded.c``) as its ``cap.toml``; loading
it must fail with exactly the text in ``<case>.err`` (the folder part dropped,
so the text is machine-independent). Regenerate after an intended message
change with ``PYLON_BLESS=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from pylon import names, paths
from pylon.build import guest, manifest
from pylon.build.manifest import load_manifest
from pylon.errors import BuildError
from pylon.schema_check import Schema, _fast_validator, schema_file

REPO = Path(__file__).resolve().parents[1]
CASES = Path(__file__).parent / "manifests"
BLESS = os.environ.get("PYLON_BLESS") == "1"
BAD = sorted(CASES.glob("*.toml"))


def _cap_folder(tmp_path: Path, text: bytes) -> Path:
    folder = tmp_path / "caps" / "t"
    folder.mkdir(parents=True)
    (folder / "cap.toml").write_bytes(text)
    (folder / "t.wit").write_text("package pylon:t@0.1.0;\n")
    (folder / "embedded.c").write_text("int t;\n")
    return folder


def _error_text(tmp_path: Path, case: Path) -> str:
    folder = _cap_folder(tmp_path, case.read_bytes())
    with pytest.raises(BuildError) as info:
        load_manifest(folder)
    return str(info.value).replace(str(folder) + os.sep, "").replace(str(folder), "<cap>") + "\n"


@pytest.mark.parametrize("case", BAD, ids=lambda p: p.stem)
def test_bad_manifest_golden(case: Path, tmp_path: Path) -> None:
    expected = case.with_suffix(".err")
    actual = _error_text(tmp_path, case)
    if BLESS:
        expected.write_text(actual)
    assert expected.exists(), f"no golden {expected.name}; run with PYLON_BLESS=1"
    assert actual == expected.read_text()


def test_every_case_has_a_golden_and_no_orphans() -> None:
    assert {p.stem for p in CASES.glob("*.err")} == {p.stem for p in BAD}


def test_compiled_validator_rejects_every_bad_golden_the_schema_catches() -> None:
    # The fast path must never accept what the strict one refuses.
    schema = Schema("cap", dialect="toml")
    for case in BAD:
        try:
            doc = tomllib.loads(case.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError):
            continue
        problem = schema.first_problem(doc)
        if problem is not None:
            assert not _fast_validator("cap", None)(doc), case.name


@pytest.mark.parametrize("folder", sorted(p.parent for p in (REPO / "caps").glob("*/cap.toml")) +
                         [REPO / "tests" / "caps" / "misbehave"], ids=lambda p: p.name)
def test_every_real_manifest_is_valid(folder: Path) -> None:
    loaded = load_manifest(folder)
    assert loaded.name == folder.name


def test_every_embedded_face_is_in_a_manifest() -> None:
    # caps/sqlite had none: an embeddable cap without one would be invisible.
    for face in (REPO / "caps").glob("*/embedded.c"):
        assert "embedded" in tomllib.loads((face.parent / "cap.toml").read_text()), face.parent


def test_embedded_faces_come_from_the_manifests() -> None:
    found = manifest.embeddable()
    assert set(found) >= {"crc32c", "sqlite", "zstd"}
    for name, cap in found.items():
        face = cap.embedded
        assert face is not None
        assert face.world.startswith(f"pylon:{name}/") and face.interface.startswith(f"pylon:{name}/")
        assert f"package pylon:{name}@" in face.wit.read_text()
        assert guest.check_guest_module(cap).is_file()
    assert set(guest.embeddable()) == set(found)
    assert set(guest.stock_embedded()) <= set(found)
    assert guest.EMBEDDABLE == guest.embeddable()  # the old names still answer


def test_a_vendor_pin_is_written_once() -> None:
    # The zstd pin once lived in embedded.py too; no build module may spell a pin out.
    pins = set()
    for toml in (REPO / "caps").glob("*/cap.toml"):
        for vendor in tomllib.loads(toml.read_text()).get("vendor", {}).values():
            pins.add(vendor["sha256"])
    for module in (REPO / "python" / "pylon" / "build").glob("*.py"):
        text = module.read_text()
        assert not [p for p in pins if p in text], module


def test_guest_sqlite_version_matches_the_pinned_sqlite() -> None:
    pinned = load_manifest(REPO / "caps" / "sqlite").vendors["sqlite"].version
    text = (REPO / "guest" / "python" / "pylon_guest" / "sqlite.py").read_text()
    assert f'sqlite_version = "{pinned}"' in text


def test_a_cap_whose_name_is_not_its_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "caps" / "other"
    folder.mkdir(parents=True)
    (folder / "t.wit").write_text("package pylon:t@0.1.0;\n")
    (folder / "cap.toml").write_text('[cap]\nname = "t"\nversion = "1"\ndescription = "d"\n[embedded]\n'
                                     'wit = "t.wit"\nworld = "pylon:t/embedded@0.1.0"\n'
                                     'interface = "pylon:t/t@0.1.0"\nguest_module = "t"\nsources = ["e.c"]\n')
    with pytest.raises(BuildError, match=r"at \[cap\]\.name: 't' must be its folder's name 'other'"):
        manifest.embeddable(tmp_path / "caps")


def test_a_guest_module_that_does_not_bind_the_import_is_refused(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "py" / "pylon_guest").mkdir(parents=True)
    (tmp_path / "py" / "pylon_guest" / "zstd.py").write_text("# no binding here\n")
    monkeypatch.setattr(guest, "GUEST_PYTHON_DIRS", (tmp_path / "py",))
    cap = manifest.embeddable()["zstd"]
    with pytest.raises(BuildError, match=r"does not import wit_world\.imports\.zstd"):
        guest.check_guest_module(cap)
    (tmp_path / "py" / "pylon_guest" / "zstd.py").unlink()
    with pytest.raises(BuildError, match=r"no module 'pylon_guest\.zstd'"):
        guest.check_guest_module(cap)


# -- the one cap-name rule ------------------------------------------------------------


def test_the_cap_name_rule_lives_in_the_common_schema() -> None:
    common = json.loads(schema_file("common").read_text())
    assert names.CAP_NAME_PATTERN == common["$defs"]["capName"]["pattern"]
    from pylon.plan import CAP_NAME_PATTERN, schema

    assert CAP_NAME_PATTERN is names.CAP_NAME_PATTERN
    # The plan's schema keeps a copy for editors that read it alone: it must agree.
    assert schema()["$defs"]["capName"]["pattern"] == names.CAP_NAME_PATTERN
    for name in ("cap", "trust"):
        text = schema_file(name).read_text()
        assert "urn:pylon:schema:common:1#/$defs/capName" in text


def test_no_other_copy_of_the_cap_name_rule() -> None:
    rule = names.CAP_NAME_PATTERN
    core = rule.strip("^$")
    # By place in the checkout: the installed package (a wheel in CI) has its own copies.
    allowed = {REPO / "python" / "pylon" / "schemas" / f"{name}.schema.json" for name in ("common", "plan")}
    roots = [REPO / "python", REPO / "scripts", REPO / "caps", REPO / "guest", REPO / "engine" / "src"]
    for root in roots:
        for file in root.rglob("*"):
            if not file.is_file() or file.suffix not in (".py", ".sh", ".c", ".h", ".rs", ".json", ".toml") \
                    or file in allowed:
                continue
            text = file.read_text(errors="replace")
            assert core not in text, f"{file} spells out the cap-name rule; use pylon.names"


@pytest.mark.parametrize("name, ok", [
    ("crc32c", True), ("a", True), ("0x", True), ("my_cap-2", True), ("a" * 64, True),
    ("", False), ("A", False), ("-a", False), ("_a", False), ("a" * 65, False), ("crc32c\n", False),
    ("a.b", False), ("a/b", False), ("é", False), (7, False),
])
def test_is_cap_name(name: object, ok: bool) -> None:
    assert names.is_cap_name(name) is ok


def test_static_builder_uses_the_rule() -> None:
    from pylon.build.micropython import load_static_cap
    from pylon.errors import CapError

    with pytest.raises(CapError, match="bad cap name '../crc32c'"):
        load_static_cap("../crc32c")


# -- the compose script reads the manifests too ----------------------------------------


def _fake_composectl(tmp_path: Path) -> dict[str, str]:
    """A PATH whose composectl prints its arguments: the script's choice, with no build."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "composectl"
    stub.write_text('#!/bin/sh\necho "$@"\n')
    stub.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_compose_script_flags_are_the_embeddable_caps(tmp_path: Path) -> None:
    script = REPO / "scripts" / "compose-python-component.sh"
    env = _fake_composectl(tmp_path)
    out = subprocess.run(["bash", str(script), "out.wasm"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["build", "-o", "out.wasm"]
    for cap in manifest.embeddable():
        flag = "WITH_" + cap.upper().replace("-", "_")
        out = subprocess.run(["bash", str(script)], env={**env, flag: "0"}, capture_output=True, text=True,
                             check=True)
        assert out.stdout.split() == ["build", "--without", cap, "-o", "pylon.wasm"]
    bad = subprocess.run(["bash", str(script)], env={**env, "WITH_NOSUCH": "0"}, capture_output=True, text=True)
    assert bad.returncode == 2
    listed = re.search(r"\(known: (.*)\)", bad.stderr)
    assert listed and sorted(listed.group(1).split()) == sorted(
        "WITH_" + c.upper().replace("-", "_") for c in manifest.embeddable())


def test_paths_of_vendored_sources_stay_inside(tmp_path: Path) -> None:
    folder = _cap_folder(tmp_path, b'[cap]\nname = "t"\nversion = "1"\ndescription = "d"\n'
                                   b'[vendor.z]\nurl = "file:///nowhere/z.tar.gz"\n'
                                   b'sha256 = "' + b"0" * 64 + b'"\n')
    loaded = load_manifest(folder)
    vendor_root = tmp_path / "vendor"
    vendor_root.mkdir()
    with pytest.raises(BuildError, match="leaves the vendored folder"):
        manifest.resolve(loaded, "@z/../../etc/passwd", {"z": vendor_root}, "where")
    with pytest.raises(BuildError, match=r"names vendor 'y', but there is no \[vendor\.y\]"):
        manifest.resolve(loaded, "@y/a.c", {"z": vendor_root}, "where")
    assert paths.SOURCE_ROOT.is_dir()


_WIT_OUTSIDE = b"""[cap]
name = "t"
version = "0.1.0"
description = "test"
[embedded]
wit = "../../../../../../../../../../../etc/passwd"
world = "pylon:t/embedded@0.1.0"
interface = "pylon:t/t@0.1.0"
guest_module = "t"
sources = ["embedded.c"]
"""


def test_an_in_tree_cap_cannot_point_its_embedded_wit_outside_the_tree(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _cap_folder(tmp_path, _WIT_OUTSIDE)
    monkeypatch.setattr(paths, "SOURCE_ROOT", tmp_path)  # the cap folder is in "the tree"
    with pytest.raises(BuildError, match=r"at \[embedded\]\.wit: .* is outside the source tree"):
        load_manifest(folder)


def test_a_cap_copied_out_of_the_tree_has_no_embedded_face(tmp_path: Path) -> None:
    """A copy of caps/crc32c elsewhere keeps an [embedded] table pointing back into
    wit/caps/; guests embed caps from the source tree only, so the copy builds its
    dynlink face and simply has no embedded one."""
    folder = _cap_folder(tmp_path, _WIT_OUTSIDE)
    assert load_manifest(folder).embedded is None
